"""Signal transforms: what the engines do to an agent's signal before its rule's kernel.

As in optax (``clip_by_global_norm``, ``scale_by_...``), each transform is one small idea
applied to the gradient before the update; here the gradient is the agent's signal ``ẑ``
(g,) and the norm is taken over the goods whose price moves (all but the numeraire, whose
coordinate the engines pin after the step)::

    clip c:       ẑ <- ẑ * min(1, c / ||ẑ||)       the step's norm is at most step_size * c
    normalize:    ẑ <- ẑ / ||ẑ||                   (ẑ = 0 stays 0): a step of norm step_size

(for a plain gradient step, ``entropic``/``additive``; a rule with memory bounds each
round's contribution to its buffers, e.g. the velocity's increment). The whole vector,
the numeraire's entry included, is scaled by the one factor.

A rule carries its transform as a code and a bound (:func:`code_of`), which the fused round
passes to :func:`transform_signal` row by row; ``NONE`` (the default) costs one branch.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Transform codes the kernels receive.
NONE, CLIP, NORMALIZE = 0, 1, 2

#: name -> (code, what it does), for the documentation and validation.
TRANSFORMS: dict[str, tuple[int, str]] = {
    "clip": (CLIP, "scale the signal down to norm <= clip (per agent, per round)"),
    "normalize": (NORMALIZE, "scale the signal to norm 1 (a step of norm step_size)"),
}


def code_of(clip: float | None, normalize: bool) -> tuple[int, float]:
    """``(code, bound)`` of a rule's options: clip c -> (CLIP, c), normalize -> (NORMALIZE, 1)."""
    if normalize:
        return NORMALIZE, 1.0
    if clip is not None:
        return CLIP, float(clip)
    return NONE, 0.0


@numba.njit(cache=True, error_model="numpy")
def transform_signal(signal, numeraire, code, bound):
    """Apply transform ``code`` with ``bound`` to one agent's ``signal`` (g,) in place.

    The norm is over the goods other than ``numeraire``; a zero (or non-finite) norm
    leaves the signal as it is.
    """
    if code == NONE:
        return
    s = 0.0
    for j in range(signal.shape[0]):
        if j != numeraire:
            s += signal[j] * signal[j]
    norm = math.sqrt(s)
    if not (norm > 0.0 and norm < math.inf):
        return
    if code == CLIP:
        if norm <= bound:
            return
    factor = bound / norm
    for j in range(signal.shape[0]):
        signal[j] *= factor


def transform_rows(signal: np.ndarray, numeraire: int, code: int, bound: float) -> np.ndarray:
    """The vectorized twin of :func:`transform_signal`: every row of ``signal`` (n, g); a new
    array (``signal`` itself when ``code`` is ``NONE``)."""
    if code == NONE:
        return signal
    free = np.arange(signal.shape[1]) != numeraire
    norm = np.sqrt(np.einsum("ij,ij->i", signal[:, free], signal[:, free]))
    usable = (norm > 0) & np.isfinite(norm)
    factor = np.ones_like(norm)
    if code == CLIP:
        shrink = usable & (norm > bound)
        factor[shrink] = bound / norm[shrink]
    else:
        factor[usable] = bound / norm[usable]
    return signal * factor[:, None]

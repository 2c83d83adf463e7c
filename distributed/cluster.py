"""Starting or joining Ray: a local runtime with explicit CPUs, or an existing cluster by address.

* No address (and no ``RAY_ADDRESS``): a private local Ray is started with
  ``num_cpus = workers`` and a modest object store; nothing to start by hand.
* ``--address HOST:PORT`` or ``RAY_ADDRESS``: join that cluster. Ray 2.60 enables token
  authentication by default: export the cluster's token (``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH``) with ``RAY_AUTH_MODE=token``; only a loopback test cluster
  should run with ``RAY_AUTH_MODE=disabled``. ``address="auto"`` is never used: it could
  attach to any Ray found on the machine.

The address is probed with a plain TCP connection first, so an unreachable cluster is a
one-line :class:`ClusterError` within seconds, not a long hang.
"""

from __future__ import annotations

import logging
import os
import socket

OBJECT_STORE_BYTES = 512 * 2**20


class ClusterError(RuntimeError):
    """Ray could not be started or reached (one-line message)."""


def _probe(address: str, timeout: float = 5.0) -> None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"--address: expected HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


def connect(workers: int, address: str | None = None, object_store_bytes: int | None = None) -> str:
    """Make sure Ray is initialized for ``workers`` actors; returns a description.

    ``object_store_bytes`` sizes a local runtime's object store (default
    :data:`OBJECT_STORE_BYTES`); a joined cluster keeps its own.
    """
    import ray

    if ray.is_initialized():
        return "ray (already initialized)"
    address = address or os.environ.get("RAY_ADDRESS") or None
    options = dict(
        logging_level=logging.WARNING, log_to_driver=True, configure_logging=True
    )  # fmt: skip
    if address:
        if address == "auto":
            raise ClusterError("--address auto is refused: give the cluster's HOST:PORT")
        _probe(address)
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # Ray raises several types (ConnectionError, auth errors...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from None
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < workers:
            ray.shutdown()
            raise ClusterError(
                f"the Ray cluster at {address} has {cpus:g} CPUs; --workers {workers} needs "
                f"{workers}"
            )
        return f"ray cluster at {address} ({cpus:g} CPUs)"
    try:
        ray.init(
            num_cpus=workers,
            object_store_memory=object_store_bytes or OBJECT_STORE_BYTES,
            include_dashboard=False,
            **options,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot start a local Ray runtime: {first}") from None
    return f"local ray ({workers} CPUs)"


def is_worker_loss(exc: BaseException) -> bool:
    """True when ``exc`` says a Ray actor's process died (not an error raised in its code)."""
    try:
        import ray.exceptions
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError)


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()

"""Which dynamics runs a price-update rule, across the worlds of :mod:`tatonnet.environment`.

* a kernel rule on a graph: the fused decentralized round
  (:class:`~tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`);
* a kernel rule under ``central``: the single auctioneer
  (:class:`~tatonnet.environment.tatonnement.dynamics.CentralTatonnement`);
* a rule whose ``engine`` names more than one kernel call per round: the factory in
  :data:`DYNAMICS` (extragradient and Newton in
  :mod:`tatonnet.environment.tatonnement.composite`, proportional response in
  :mod:`tatonnet.environment.fisher`).

On a graph a composite dynamics also carries its round (``row_round``, a
:class:`~tatonnet.environment.tatonnement.rows.RowRound`), which the sharded engine hands
to its shards: the same object, the same bits, at any worker count.

The registry sits above the worlds it dispatches to, so none of them imports it.
"""

from __future__ import annotations

from tatonnet.agents.rules import PriceRule
from tatonnet.environment import fisher
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import composite
from tatonnet.environment.tatonnement.dynamics import CentralTatonnement, NetworkTatonnement

#: Dynamics for rules whose ``engine`` is not None: ``name -> factory(economy, network,
#: rule, signal)``. A new composite engine adds its factory here.
DYNAMICS: dict = {
    "extragradient": composite.make_extragradient,
    "newton": composite.make_newton,
    "proportional-response": fisher.make_proportional_response,
}


def make_dynamics(economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
    """The dynamics that runs ``rule``: the fused kernel on a graph, the central auctioneer
    for ``central``, or the engine a composite rule names (see :data:`DYNAMICS`)."""
    if rule.engine is not None:
        try:
            factory = DYNAMICS[rule.engine]
        except KeyError:
            raise ValueError(
                f"rule {rule.name!r}: no dynamics registered as {rule.engine!r}"
            ) from None
        return factory(economy, network, rule, signal)
    if network.is_central:
        return CentralTatonnement(economy, rule)
    return NetworkTatonnement(economy, network, rule, signal)

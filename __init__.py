"""tatonnet: agent-based, decentralized Walrasian price discovery on networks.

Every economic actor is an agent on a network with its own prices; prices are discovered
from neighbours' messages; a central auctioneer is the baseline. The package's rooms:

* :mod:`tatonnet.agents` — who acts: utility families, the Mesa agent view, price rules;
* :mod:`tatonnet.environment` — the world: economy, network, scenarios, and one room per
  market world (``tatonnement``, ``trade``, Fisher markets);
* :mod:`tatonnet.distributed` — how a run spreads over Ray workers and machines;
* :mod:`tatonnet.studies` — experiments (the convergence study);
* :mod:`tatonnet.results` — run folders: writing, reading, exporting, summaries;
* :mod:`tatonnet.cli` and :mod:`tatonnet.dashboard` — the command line and the browser.

>>> import tatonnet
>>> model = tatonnet.MarketModel("cobb-douglas", n_agents=200, graph="central")
>>> while model.running and model.round < 2000:
...     model.step()
>>> model.verdict.status
'converged'
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("tatonnet")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = ["MarketModel", "load_scenario", "__version__"]


def __getattr__(name):
    """The public names, imported on first use (``import tatonnet`` stays fast)."""
    if name == "MarketModel":
        from tatonnet.environment.model import MarketModel

        return MarketModel
    if name == "load_scenario":
        from tatonnet.environment.scenario import load_scenario

        return load_scenario
    raise AttributeError(f"module 'tatonnet' has no attribute {name!r}")

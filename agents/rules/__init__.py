"""Price-update rules: a registry of small objects, one module each, plus the options
every rule takes (geometry, :mod:`.schedules`, :mod:`.transforms`).

>>> from tatonnet.agents.rules import make_rule
>>> make_rule("entropic", step_size=0.1).params()
array([0.1])
>>> rule = make_rule("momentum", space="price", schedule="cosine", horizon=100, clip=1.0)
>>> rule.space, float(rule.round_params(50)[0])
('price', 0.01)
"""

from tatonnet.agents.rules import (  # noqa: F401  (registers)
    adam,
    additive,
    asynchronous,
    entropic,
    extragradient,
    momentum,
    multiplicative,
    nesterov,
    newton,
    optimistic,
    proportional_response,
    schedules,  # the options every rule takes
    transforms,
)
from tatonnet.agents.rules.base import (
    OPTIONS,
    PRICE_FLOOR,
    RULES,
    SPACES,
    PriceRule,
    RuleError,
    make_rule,
    register,
    rule_kernel,
)

__all__ = [
    "OPTIONS", "PRICE_FLOOR", "RULES", "SPACES", "PriceRule", "RuleError", "make_rule",
    "register", "rule_kernel", "schedules", "transforms",
]  # fmt: skip

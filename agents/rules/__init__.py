"""Price-update rules: a registry of small objects, one module each.

>>> from tatonnet.agents.rules import make_rule
>>> make_rule("entropic", step_size=0.1).params()
array([0.1])
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
)
from tatonnet.agents.rules.base import (
    PRICE_FLOOR,
    RULES,
    PriceRule,
    RuleError,
    make_rule,
    register,
    rule_kernel,
)

__all__ = ["PRICE_FLOOR", "RULES", "PriceRule", "RuleError", "make_rule", "register", "rule_kernel"]

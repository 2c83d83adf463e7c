"""What a meeting came to, and the trade error: shared by the trade engines and metrics."""

#: trade statuses returned by :func:`tatonnet.environment.trade.bilateral.trade_pairs`
EXECUTED, NO_GAP, REJECTED = 0, 1, 2


class TradeError(ValueError):
    """Invalid trade parameters (one-line message)."""

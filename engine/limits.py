"""The limits of an order request, declared once: the order model enforces them
and the store sizes its columns by them, so no value the model accepts can fail
a column (a value that did would be lost with its audit record: a 503 where a
422 belongs).

Text lengths are counted in characters, as both a pydantic `max_length` and a
SQL `VARCHAR(n)` count them. Numbers are bounded so that every derived value
(notional, distance in basis points) stays finite and comparable by the rules
engine.
"""

from __future__ import annotations

__all__ = [
    "CODE_LENGTH",
    "COMMENT_LENGTH",
    "DIGEST_LENGTH",
    "IDENTIFIER_LENGTH",
    "LABEL_LENGTH",
    "MAX_DEPTH",
    "MAX_PRICE",
    "MAX_PROTOCOLS",
    "MAX_QUANTITY",
    "MAX_SIGNAL",
    "REASON_LENGTH",
    "SYMBOL_LENGTH",
]

# client_order_id and account: orders.client_order_id, orders.account,
# client_orders.client_order_id, positions.account
IDENTIFIER_LENGTH = 64
# symbol: orders.symbol, positions.symbol (a listed symbol and its class suffix)
SYMBOL_LENGTH = 16
# side, order_type, time_in_force: closed vocabularies; the columns hold the
# longest word of each ("market", "sell", "day")
CODE_LENGTH = 8
# free text kept only inside the request and the record (no column of its own)
REASON_LENGTH = 200  # decision_reason
# the reason given for a control change or a cancel (records only)
COMMENT_LENGTH = 500
LABEL_LENGTH = 32  # context.regime, one entry of context.protocols_fired
DIGEST_LENGTH = 100  # context.data_hash, context.protocol_hash
MAX_PROTOCOLS = 64  # entries of context.protocols_fired

MAX_QUANTITY = 1_000_000_000.0
MAX_PRICE = 10_000_000.0
MAX_SIGNAL = 1_000_000.0

# JSON nesting of a request body: an order is three levels deep
# (order > context > quote); anything far deeper is refused before a parser
# recurses into it.
MAX_DEPTH = 32

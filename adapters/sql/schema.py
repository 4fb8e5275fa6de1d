"""The store's tables (SQLAlchemy Core). Alembic migrations create them.

The columns that hold a client's order fields are sized by `engine.limits`, the
limits the order model enforces: a value the model accepts always fits.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from engine.limits import CODE_LENGTH, IDENTIFIER_LENGTH, SYMBOL_LENGTH

# engine.lifecycle.OPEN, as SQL: the statuses of an order working at a broker (the
# account book's read and its partial index must say exactly this, so that the
# planners match the one to the other)
WORKING = (
    "status IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel',"
    " 'pending_replace', 'replaced')"
)

__all__ = [
    "WORKING",
    "api_tokens",
    "audit_log",
    "broker_journal",
    "chain_head",
    "client_orders",
    "daily_notional",
    "fills",
    "fix_messages",
    "fix_sessions",
    "metadata",
    "order_events",
    "order_sequences",
    "orders",
    "positions",
    "settings",
]

metadata = MetaData()
_Id = BigInteger().with_variant(Integer, "sqlite")
_When = DateTime(timezone=True)

# One row (id=1): the last hash of the chain. Every write locks it first, so
# appends from several replicas are serialised into one unbroken chain.
chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(80), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("order_id", String(32), nullable=True, index=True),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(80), nullable=False),
    Column("hash", String(80), nullable=False, unique=True),
    Column("created_at", _When, nullable=False),
    # the records of one kind in chain order (the verifications, migration 0007)
    Index("ix_audit_log_kind", "kind", "seq"),
)

order_sequences = Table(
    "order_sequences",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(32), primary_key=True),
    Column("operation", String(16), nullable=False),  # evaluate | submit
    Column("client_order_id", String(IDENTIFIER_LENGTH), nullable=True, index=True),
    Column("account", String(IDENTIFIER_LENGTH), nullable=True),
    Column("symbol", String(SYMBOL_LENGTH), nullable=True),
    Column("side", String(CODE_LENGTH), nullable=True),
    Column("quantity", Float, nullable=True),
    Column("order_type", String(CODE_LENGTH), nullable=True),
    Column("limit_price", Float, nullable=True),
    Column("stop_price", Float, nullable=True),
    Column("time_in_force", String(CODE_LENGTH), nullable=True),
    Column("reduce_only", Boolean, nullable=False, default=False),
    Column("status", String(20), nullable=False),
    Column("broker", String(32), nullable=True),
    Column("broker_order_id", String(64), nullable=True),
    Column("filled_quantity", Float, nullable=False, default=0.0),
    Column("average_price", Float, nullable=True),
    Column("request", Text, nullable=False),
    Column("record", Text, nullable=False),
    Column("created_at", _When, nullable=False),
    Column("updated_at", _When, nullable=False),
    Index("ix_orders_account_created", "account", "created_at"),
    # the flow reads of every evaluation, answered from the index alone: the submits
    # of one account in a time window, and an identical recent order
    Index("ix_orders_window", "account", "operation", "created_at", "status", "client_order_id"),
    Index("ix_orders_duplicate", "account", "symbol", "side", "quantity", "created_at"),
    Index("ix_orders_status", "status"),
    # the account's working orders, read with every decision (adapters/sql/_statements.py
    # _BOOK): a partial index holds only orders working at a broker, so the read costs
    # the same at a hundred orders or ten million (ix_orders_window, which the planner
    # would take, holds every submit the account ever made)
    Index(
        "ix_orders_working",
        "account",
        "operation",
        sqlite_where=text(WORKING),
        postgresql_where=text(WORKING),
    ),
)

# A client order id is claimed by its first valid submit; the digest of the
# request body tells a retry (same body) from a conflict (another body).
client_orders = Table(
    "client_orders",
    metadata,
    Column("client_order_id", String(IDENTIFIER_LENGTH), primary_key=True),
    Column("order_id", String(32), nullable=False),
    Column("request_digest", String(80), nullable=False),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", String(32), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", _When, nullable=False),
)

fills = Table(
    "fills",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", String(32), nullable=False, index=True),
    Column("quantity", Float, nullable=False),
    Column("price", Float, nullable=False),
    Column("at", _When, nullable=False),
    Column("execution_id", String(64), nullable=True),
)

positions = Table(
    "positions",
    metadata,
    Column("account", String(IDENTIFIER_LENGTH), primary_key=True),
    Column("symbol", String(SYMBOL_LENGTH), primary_key=True),
    Column("quantity", Float, nullable=False),
    # the mark the account's gross exposure values the holding at: its last
    # execution price in the symbol, or the price a broker's position sync gave
    # (NULL: neither, e.g. synced from a broker that gives no price)
    Column("price", Float, nullable=True),
)

# The notional each account executed per trading day (`day`: YYYY-MM-DD in the
# session's timezone), added to with each fill: the daily credit check reads one row.
daily_notional = Table(
    "daily_notional",
    metadata,
    Column("account", String(IDENTIFIER_LENGTH), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("notional", Float, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", _When, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(16), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", _When, nullable=False),
    Column("revoked_at", _When, nullable=True),
    Column("accounts", Text, nullable=True),  # JSON list; NULL: every allowed account
    Column("expires_at", _When, nullable=True),  # NULL: never
)

# Durable memory of an in-process broker (the simulator): its working orders and
# fills, one JSON entry per key, so that a restart loses nothing.
broker_journal = Table(
    "broker_journal",
    metadata,
    Column("broker", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", _When, nullable=False),
)

# A FIX session's sequence numbers (oms_fix), one row per session (the broker's
# name). `epoch` counts sequence resets: the messages of older epochs are kept
# for the log but never resent.
fix_sessions = Table(
    "fix_sessions",
    metadata,
    Column("session", String(32), primary_key=True),
    Column("next_out", BigInteger, nullable=False),
    Column("next_in", BigInteger, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("updated_at", _When, nullable=False),
)

# Every FIX message in and out, byte for byte (SOH kept): the FIX message log,
# not the audit chain. Resends are answered from it; `brokers fix-log` prints it.
fix_messages = Table(
    "fix_messages",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("session", String(32), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("direction", String(3), nullable=False),  # in | out
    Column("seq", BigInteger, nullable=False),
    Column("msg_type", String(8), nullable=False),
    Column("cl_ord_id", String(64), nullable=True),
    Column("message", Text, nullable=False),
    Column("at", _When, nullable=False),
    Index("ix_fix_messages_seq", "session", "epoch", "direction", "seq"),
    Index("ix_fix_messages_cl_ord_id", "session", "cl_ord_id"),
)

"""The store's hot SQL, written once for both databases.

A template names its parameters `{name}`; each dialect renders them in its
driver's style (`:name` for sqlite3, `%(name)s` for psycopg) and fills in the
few fragments that differ (`{NULL_SAFE_EQ}`). What differs more than a
fragment (how the chain head is locked and moved) belongs to the dialects.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import InvalidArgument

from ._rows import ORDER_COLUMNS
from .schema import WORKING

__all__ = ["INSERT_COLUMNS", "Statements"]

_NOT_FLOW = "('rejected', 'blocked')"  # attempts that never reached a market
# A submit that counts as flow for this account, up to now; the same client order
# id is a retry (answered idempotently) or the order being replaced, not new flow.
_FLOW = (
    "o.account = {account} AND o.operation = 'submit' AND o.status NOT IN " + _NOT_FLOW + " "
    "AND coalesce(o.client_order_id, '') <> {exclude} AND o.created_at <= {now}"
)
_CONTROLS = """
  (SELECT value FROM settings WHERE key = 'mode'),
  (SELECT value FROM settings WHERE key = 'trading_states'),
  (SELECT value FROM settings WHERE key = 'omega')"""
# Everything one decision reads, in one statement answered from indexes
# (ix_orders_window covers the count, ix_orders_duplicate finds a duplicate).
_SNAPSHOT = f"""
SELECT{_CONTROLS},
  (SELECT quantity FROM positions WHERE account = {{account}} AND symbol = {{symbol}}),
  (SELECT count(*) FROM orders o WHERE {_FLOW} AND o.created_at > {{rate_since}}),
  (SELECT o.order_id FROM orders o WHERE {_FLOW} AND o.created_at > {{duplicate_since}}
     AND o.symbol = {{symbol}} AND o.side = {{side}} AND o.quantity = {{quantity}}
     AND o.order_type = {{order_type}}
     AND o.limit_price {{NULL_SAFE_EQ}} {{limit_price}}
     AND o.stop_price {{NULL_SAFE_EQ}} {{stop_price}}
     AND coalesce(o.client_order_id, '') <> {{client_order_id}}
   LIMIT 1),
  (SELECT order_id FROM client_orders WHERE client_order_id = {{client_order_id}}),
  (SELECT request_digest FROM client_orders WHERE client_order_id = {{client_order_id}})
"""

# Working at a broker (engine.lifecycle.OPEN): the orders the credit and
# self-match checks count; written as the partial index ix_orders_working says it
_OPEN = WORKING.removeprefix("status IN ")
# The account's book, in one statement (tagged rows): its working orders (what is
# left of each; a market order's request, to value it at the touch it was judged
# at), its positions with their marks, and what it executed on the day. Working
# orders are found by the partial index ix_orders_working, which holds only
# them, the rest by primary key.
_BOOK = f"""
SELECT 'w', order_id, symbol, side, order_type, quantity - filled_quantity, limit_price,
  stop_price, CASE WHEN order_type = 'market' THEN request END
FROM orders WHERE status IN {_OPEN} AND account = {{account}} AND operation = 'submit'
  AND coalesce(client_order_id, '') <> {{exclude}}
UNION ALL
SELECT 'p', NULL, symbol, NULL, NULL, quantity, price, NULL, NULL
FROM positions WHERE account = {{account}}
UNION ALL
SELECT 'd', NULL, NULL, NULL, NULL, notional, NULL, NULL, NULL
FROM daily_notional WHERE account = {{account}} AND day = {{day}}
"""

# Buffered inserts: written with one executemany per table when the transaction
# next reads or updates that table, and before it commits.
INSERT_COLUMNS: dict[str, tuple[str, ...]] = {
    "audit_log": ("seq", "kind", "order_id", "record", "prev_hash", "hash", "created_at"),
    "orders": (
        "order_id", "operation", "client_order_id", "account", "symbol", "side", "quantity",
        "order_type", "limit_price", "stop_price", "time_in_force", "reduce_only", "status",
        "broker", "broker_order_id", "filled_quantity", "average_price", "request", "record",
        "created_at", "updated_at",
    ),
    "order_events": ("order_id", "status", "detail", "at"),
    "fills": ("order_id", "quantity", "price", "at", "execution_id"),
    "client_orders": ("client_order_id", "order_id", "request_digest"),
}  # fmt: skip

# What an order update may change besides status, record and time.
_UPDATABLE = frozenset(
    {"broker_order_id", "filled_quantity", "average_price", "quantity", "limit_price"}
    | {"stop_price", "request"}
)


class Statements:
    """The shared statements, rendered for one dialect."""

    def __init__(self, render: Callable[[str], str]) -> None:
        self._render = render
        self.snapshot = render(_SNAPSHOT)
        self.controls = render("SELECT" + _CONTROLS)
        self.claimed = render(
            "SELECT order_id, request_digest FROM client_orders"
            " WHERE client_order_id = {client_order_id}"
        )
        self.setting = render("SELECT value FROM settings WHERE key = {key}")
        self.update_setting = render(
            "UPDATE settings SET value = {value}, updated_at = {at} WHERE key = {key}"
        )
        self.new_setting = render(
            "INSERT INTO settings (key, value, updated_at) VALUES ({key}, {value}, {at})"
        )
        self.sequence = render("SELECT value FROM order_sequences WHERE year = {year}")
        self.set_sequence = render("UPDATE order_sequences SET value = {value} WHERE year = {year}")
        self.new_sequence = render(
            "INSERT INTO order_sequences (year, value) VALUES ({year}, {value})"
        )
        self.move_head = render("UPDATE chain_head SET seq = {seq}, hash = {hash} WHERE id = 1")
        self.order = render(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE order_id = {{order_id}}"
        )
        self.fills = render(
            "SELECT quantity, price, at, execution_id FROM fills"
            " WHERE order_id = {order_id} ORDER BY id"
        )
        self.book = render(_BOOK)
        self.move_position = render(
            "UPDATE positions SET quantity = quantity + {quantity},"
            " price = coalesce({price}, price)"
            " WHERE account = {account} AND symbol = {symbol}"
        )
        self.add_notional = render(
            "INSERT INTO daily_notional (account, day, notional)"
            " VALUES ({account}, {day}, {notional})"
            " ON CONFLICT (account, day) DO UPDATE"
            " SET notional = daily_notional.notional + excluded.notional"
        )
        self.positions = render("SELECT symbol, quantity FROM positions WHERE account = {account}")
        # a broker's figure: its price when it gave one, else the mark stays
        self.set_position = render(
            "UPDATE positions SET quantity = {quantity}, price = coalesce({price}, price)"
            " WHERE account = {account} AND symbol = {symbol}"
        )
        self.set_mark = render(
            "UPDATE positions SET price = {price} WHERE account = {account} AND symbol = {symbol}"
        )
        self.new_position = render(
            "INSERT INTO positions (account, symbol, quantity, price)"
            " VALUES ({account}, {symbol}, {quantity}, {price})"
        )
        self.new_token = render(
            "INSERT INTO api_tokens"
            " (token_id, token_hash, role, label, accounts, created_at, expires_at)"
            " VALUES ({token_id}, {token_hash}, {role}, {label}, {accounts}, {at}, {expires_at})"
        )
        self.revoke_token = render(
            "UPDATE api_tokens SET revoked_at = {at}"
            " WHERE token_id = {token_id} AND revoked_at IS NULL"
        )
        self.journal_load = render("SELECT key, value FROM broker_journal WHERE broker = {broker}")
        self.journal_save = render(
            "INSERT INTO broker_journal (broker, key, value, updated_at)"
            " VALUES ({broker}, {key}, {value}, {at})"
            " ON CONFLICT (broker, key) DO UPDATE"
            " SET value = excluded.value, updated_at = excluded.updated_at"
        )
        self.inserts = {
            table: render(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join('{' + c + '}' for c in columns)})"
            )
            for table, columns in INSERT_COLUMNS.items()
        }
        self._order_updates: dict[tuple[str, ...], str] = {}

    def update_order(self, columns: tuple[str, ...]) -> str:
        """UPDATE orders of these columns (status, record and updated_at always),
        keyed by `key_order_id`; built once per set of columns."""
        statement = self._order_updates.get(columns)
        if statement is None:
            unknown = set(columns) - _UPDATABLE - {"status", "record", "updated_at"}
            if unknown:
                raise InvalidArgument(f"an order update cannot set {sorted(unknown)}")
            assignments = ", ".join(f"{c} = {{{c}}}" for c in columns)
            statement = self._render(
                f"UPDATE orders SET {assignments} WHERE order_id = {{key_order_id}}"
            )
            self._order_updates[columns] = statement
        return statement

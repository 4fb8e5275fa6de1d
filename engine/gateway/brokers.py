"""Credential checks of the configured brokers (SPEC section 3: entering paper
needs valid credentials), and what the gateway knows of each broker.

A check asks the broker to validate its credentials and to show the account
they reach; its outcome is kept in the store (setting `brokers.checked.<name>`:
time, ok, account id, reason) and appended to the chain (kind `broker_check`)
in one transaction. Paper may be entered only while the paper broker's last
check succeeded within `CHECK_MAX_AGE_S` (24 h): reading the mode's
requirements never calls a broker. A check records no credential: the broker's
answer is kept only as the account's id and status.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from ..broker import BrokerAdapter
from ..clock import format_utc, parse_utc
from ..errors import fault
from ..limits import COMMENT_LENGTH
from ..ports import Writer
from ._records import event
from .desk import Desk
from .outcome import Actor

__all__ = ["CHECK_MAX_AGE_S", "BrokerChecks", "account_summary", "check_key"]

# a paper broker's credentials validated longer ago than this do not open paper
CHECK_MAX_AGE_S = 24 * 3600
_PREFIX = "brokers.checked."
_KEY_MAX = 32  # the settings table's key width
# what of the broker's account answer is shown and kept (never anything else)
_ACCOUNT_FIELDS = ("id", "account_number", "account", "number", "status", "currency")


def check_key(name: str) -> str:
    """The setting holding a broker's last check: its name, or a digest of a long one."""
    key = _PREFIX + name
    if len(key) <= _KEY_MAX:
        return key
    return _PREFIX + hashlib.sha256(name.encode()).hexdigest()[: _KEY_MAX - len(_PREFIX)]


def account_summary(answer: object) -> dict[str, str]:
    """The account's id, number and status from a broker's `account()` answer."""
    if not isinstance(answer, dict):
        return {}
    return {
        k: str(answer[k])[:64]
        for k in _ACCOUNT_FIELDS
        if isinstance(answer.get(k), str | int) and not isinstance(answer.get(k), bool)
    }


def _clip(text: str) -> str:
    return text if len(text) <= COMMENT_LENGTH else text[: COMMENT_LENGTH - 3] + "..."


class BrokerChecks:
    def __init__(self, desk: Desk, max_age_s: float = CHECK_MAX_AGE_S) -> None:
        self._desk = desk
        self.max_age_s = max_age_s

    def check(self, mode: str, actor: Actor, account: str = "") -> dict[str, Any]:
        """Validate the credentials of `mode`'s broker and read the account they reach
        (`account`: the configured account, where the adapter has one); the
        `broker_check` record, `ok` true or false. Raises `LookupError` when the
        mode has no broker."""
        broker = self._desk.broker_for(mode)
        if broker is None:
            raise LookupError(f"no broker configured for {mode}")
        ok, reason, summary = self._ask(broker, account)
        now = self._desk.clock()
        record = event(
            "broker_check", now, actor.id, broker=broker.name, role=mode, ok=ok,
            account=summary.get("id") or summary.get("account_number") or summary.get("account"),
            account_status=summary.get("status"), reason=_clip(reason),
        )  # fmt: skip
        kept = {"at": format_utc(now), "ok": ok, "role": mode, "broker": broker.name,
                "account": summary, "reason": _clip(reason)}  # fmt: skip

        def work(w: Writer) -> dict[str, Any]:
            w.set_setting(check_key(broker.name), kept, now)
            return w.append(record, "broker", now)

        linked: dict[str, Any] = self._desk.store.transact(work)
        return {**linked, "account_view": summary}

    @staticmethod
    def _ask(broker: BrokerAdapter, account: str) -> tuple[bool, str, dict[str, str]]:
        try:
            valid = broker.check_credentials()
        except Exception as exc:
            return False, f"{broker.name} credential check failed: {fault(exc)}", {}
        if valid is not True:
            return False, f"{broker.name} credentials are not valid", {}
        try:
            summary = account_summary(broker.account(account))
        except Exception as exc:
            return False, f"{broker.name} account could not be read: {fault(exc)}", {}
        return True, "", summary

    def last(self, broker: BrokerAdapter) -> dict[str, Any] | None:
        """The broker's last check as kept (None: never checked, or unreadable)."""
        value = self._desk.store.setting(check_key(broker.name))
        if not isinstance(value, dict) or value.get("broker") != broker.name:
            return None
        return value

    def missing(self, mode: str, now: datetime) -> list[str]:
        """What keeps `mode` (paper) from being entered as far as credentials go."""
        broker = self._desk.broker_for(mode)
        if broker is None:
            return [f"no broker configured for {mode} mode"]
        last = self.last(broker)
        hint = "run `apex-oms brokers check`"
        if last is None:
            return [f"{broker.name} credentials have not been checked ({hint})"]
        if last.get("ok") is not True:
            why = last.get("reason") or "not valid"
            return [f"{broker.name} credential check failed at {last.get('at')}: {why} ({hint})"]
        try:
            at = parse_utc(str(last.get("at")))
        except ValueError:
            return [f"{broker.name} credential check is unreadable ({hint})"]
        if (now - at).total_seconds() > self.max_age_s:
            return [
                f"{broker.name} credentials were checked at {format_utc(at)}, more than "
                f"{int(self.max_age_s // 3600)} h ago ({hint})"
            ]
        return []

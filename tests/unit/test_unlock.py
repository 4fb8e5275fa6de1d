"""The live unlock (issue 9, item 7; SPEC section 3) on the real store (SQLite and
PostgreSQL): five steps in order, each an `unlock_step` record; only a signed
configuration, an armed risk engine and a live broker whose credentials were
validated recently unlock live; a lapse blocks orders and voids the walk; the
walk survives a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from api.policy_source import PACKAGED
from engine import Evaluator, load_policies
from engine.broker import BrokerError
from engine.gateway import Actor, Gateway, ModeRefused
from engine.gateway.compliance import ComplianceSource
from engine.gateway.unlock import (
    CONFIRMATION,
    REFRESH_AFTER_S,
    SHIPPED_CHECKS,
    WALK,
    UnlockInvalid,
    UnlockRefused,
)
from engine.signing.standing import DevelopmentRoot
from tests.conftest import FixedClock, OrderBuilder
from tests.live_broker import FakeLiveBroker
from tests.signing_support import Officers, officers

OFFICER = Actor("c-1", "compliance")
ADMIN = Actor("a-1", "admin")
TRADER = Actor("t-1", "trader")


@dataclass
class Desk:
    gateway: Gateway
    store: SqlStore
    team: Officers
    live: FakeLiveBroker | None

    def walk(self, through: int = 5) -> list[dict[str, Any]]:
        return [
            self.gateway.unlock.perform(step, OFFICER, CONFIRMATION if step == 5 else None)
            for step in range(1, through + 1)
        ]

    def refused(self, step: int, confirm: str | None = None) -> UnlockRefused:
        with pytest.raises(UnlockRefused) as caught:
            self.gateway.unlock.perform(step, OFFICER, confirm)
        return caught.value

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.store.audit_records() if r.get("kind") == kind]

    def evaluate(self, order: dict[str, Any]) -> dict[str, Any]:
        return self.gateway.evaluate(order, TRADER).record


Maker = Callable[..., Desk]


@pytest.fixture
def make_desk(store_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[Maker]:
    stores: list[SqlStore] = []
    teams: dict[str, Officers] = {}

    def make(live: Any = "fake", *, team: Officers | None = None, keys: Path | None = None) -> Desk:
        if team is None:
            team = teams.get("default") or officers(tmp_path / "team")
            teams["default"] = team
        store = SqlStore(store_url)
        store.migrate()
        stores.append(store)
        sim = SimulatedBroker(clock, journal=store.journal("simulated"))
        brokers: dict[str, Any] = {"simulation": sim}
        broker = FakeLiveBroker() if live == "fake" else live
        if broker == "simulated":
            broker = sim
        if broker is not None:
            brokers["live"] = broker
        loaded = load_policies(team.policies)
        source = ComplianceSource(
            team.policies, keys or team.keys, DevelopmentRoot.open(tmp_path / "home")
        )
        gateway = Gateway(store, Evaluator(loaded, clock), brokers, clock, compliance=source,
                          loaded=loaded)  # fmt: skip
        gateway.recover()
        gateway.verify_on_start()
        return Desk(gateway, store, team, broker if isinstance(broker, FakeLiveBroker) else None)

    yield make
    for store in stores:
        store.close()


def codes(record: dict[str, Any]) -> list[str]:
    return [r["code"] for r in record["reasons"]]


# --- the walk -----------------------------------------------------------------------


def test_walk_when_every_step_is_taken_in_order_then_live_and_orders_pass_the_live_checks(
    make_desk: Maker, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    standing = desk.gateway.standing
    done = desk.walk()

    assert [(r["step"], r["name"], r["outcome"]) for r in done] == [
        (1, "access", "done"), (2, "acknowledge", "done"), (3, "risk", "done"),
        (4, "credentials", "done"), (5, "enable", "done"),
    ]  # fmt: skip
    assert {(r["kind"], r["actor"], r["config_sha256"], r["version"]) for r in done} == {
        ("unlock_step", "c-1", standing.config_sha256, 1)
    }
    assert done[0]["signers"] == ["alice", "bob"] and done[3]["broker"] == "fake-live"
    assert desk.gateway.mode() == "live"
    (changed,) = desk.records("mode_changed")
    assert (changed["previous"], changed["mode"], changed["unlock_step"]) == (
        "research", "live", done[4]["hash"])  # fmt: skip
    # steps 2 and 5 verify the configuration again, each a verification record
    assert [v["trigger"] for v in desk.records("verification")] == ["start", "unlock", "unlock"]
    assert desk.gateway.unlock.live_status(desk.gateway.standing) == (
        True, "the live unlock holds: every live requirement is met")  # fmt: skip
    record = desk.evaluate(make_order())
    assert record["order_status"] == "evaluated", codes(record)
    assert desk.live is not None and desk.live.checks == 1


def test_walk_when_a_step_is_taken_before_the_one_it_needs_then_refused_and_recorded(
    make_desk: Maker,
) -> None:
    desk = make_desk()
    desk.walk(through=1)
    refusal = desk.refused(3)

    assert refusal.reason == "step 2 (acknowledge) must be done first"
    assert (refusal.record["kind"], refusal.record["outcome"], refusal.record["step"]) == (
        "unlock_step", "refused", 3)  # fmt: skip
    status = desk.gateway.unlock.status()
    assert [s["status"] for s in status["steps"]] == ["done"] + ["pending"] * 4
    assert status["next_step"] == 2


@pytest.mark.parametrize(
    ("step", "confirm", "field"),
    [(5, None, "confirm"), (5, "enable live trading", "confirm"), (6, None, "step"),
     ("launch", None, "step")],
    ids=["no-confirmation", "wrong-confirmation", "step-6", "unknown-name"],
)  # fmt: skip
def test_step_when_asked_wrongly_then_invalid_naming_the_field_and_nothing_recorded(
    make_desk: Maker, step: Any, confirm: str | None, field: str
) -> None:
    desk = make_desk()
    with pytest.raises(UnlockInvalid) as caught:
        desk.gateway.unlock.perform(step, OFFICER, confirm)
    assert caught.value.field == field
    assert desk.records("unlock_step") == []


@pytest.mark.parametrize("actor", [ADMIN, TRADER, Actor("au-1", "auditor")], ids=lambda a: a.role)
def test_step_when_the_actor_is_not_a_compliance_officer_then_refused(
    make_desk: Maker, actor: Actor
) -> None:
    desk = make_desk()
    with pytest.raises(UnlockInvalid) as caught:
        desk.gateway.unlock.perform(1, actor)
    assert caught.value.field == "(role)"


def test_step_by_name_when_given_then_the_same_as_by_number(make_desk: Maker) -> None:
    desk = make_desk()
    record = desk.gateway.unlock.perform("access", OFFICER)
    assert (record["step"], record["name"]) == (1, "access")


# --- each requirement ---------------------------------------------------------------


def test_acknowledge_when_the_configuration_has_development_trust_then_refused(
    make_desk: Maker, tmp_path: Path
) -> None:
    empty = tmp_path / "no-keys"
    empty.mkdir()
    desk = make_desk(keys=empty)
    assert desk.gateway.standing.trust == "development"
    desk.walk(through=1)
    refusal = desk.refused(2)
    assert refusal.reason == (
        "the configuration is trusted as 'development', not signed by the threshold of "
        "trusted officers"
    )


def test_acknowledge_when_a_signer_was_revoked_on_disk_then_refused_by_the_fresh_verification(
    make_desk: Maker,
) -> None:
    desk = make_desk()
    desk.walk(through=1)
    desk.team.trust(2, revoked=("bob",))
    refusal = desk.refused(2)
    assert refusal.reason.startswith("verified again now: the configuration is not in force")
    assert desk.records("verification")[-1]["trigger"] == "unlock"


def test_risk_when_a_shipped_check_is_missing_from_the_signed_set_then_refused_naming_it(
    make_desk: Maker, tmp_path: Path
) -> None:
    team = officers(tmp_path / "trimmed")
    rules = team.policies / "model_signals.yaml"
    text = rules.read_text("utf-8")
    start = text.index("  - id: drift_check")
    end = text.find("\n  - id:", start + 1)
    rules.write_text(text[:start] + (text[end + 1 :] if end != -1 else ""), "utf-8")
    team.pin()
    team.sign("alice", "bob", fresh=True)
    desk = make_desk(team=team)
    assert desk.gateway.standing.in_force
    desk.walk(through=2)
    refusal = desk.refused(3)
    assert refusal.reason == "shipped checks missing: drift_check"


def test_shipped_checks_when_compared_with_the_packaged_policies_then_the_same_rule_ids() -> None:
    ids = {rule.id for rule in load_policies(PACKAGED).policies.rules}
    assert ids == SHIPPED_CHECKS


@pytest.mark.parametrize(
    ("live", "reason"),
    [
        (None, "no broker is configured for live"),
        ("simulated", "simulated: the simulated broker never counts for live"),
        (FakeLiveBroker(credentials=False), "fake-live credentials are not valid"),
        (FakeLiveBroker(credentials=BrokerError("401 unauthorized")),
         "fake-live credential check failed: BrokerError: 401 unauthorized"),
    ],
    ids=["no-live-broker", "simulated", "invalid", "check-fails"],
)  # fmt: skip
def test_credentials_when_no_valid_live_broker_then_refused_with_the_reason(
    make_desk: Maker, live: Any, reason: str
) -> None:
    desk = make_desk(live=live)
    desk.walk(through=3)
    refusal = desk.refused(4)
    assert refusal.reason == reason
    with pytest.raises(ModeRefused):
        desk.gateway.set_mode("live", OFFICER)
    assert desk.gateway.mode() == "research"


def test_enable_when_the_credentials_are_older_than_the_limit_then_refused_naming_them(
    make_desk: Maker, clock: FixedClock
) -> None:
    desk = make_desk()
    desk.walk(through=4)
    clock.advance(16 * 60)
    refusal = desk.refused(5, CONFIRMATION)
    assert "credentials: fake-live credentials were validated at 2026-11-30T15:00:00Z" in (
        refusal.reason
    )
    assert desk.gateway.mode() == "research"


# --- lapses while live --------------------------------------------------------------


def test_live_when_the_credentials_age_past_the_limit_then_orders_blocked_live_locked(
    make_desk: Maker, clock: FixedClock, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    desk.walk()
    clock.advance(16 * 60)
    record = desk.evaluate(make_order())
    assert record["order_status"] == "blocked"
    assert "LIVE_LOCKED" in codes(record)
    (reason,) = [r for r in record["reasons"] if r["code"] == "LIVE_LOCKED"]
    assert "credentials: fake-live credentials were validated at" in reason["detail"]


def test_sweep_when_the_credential_check_gets_old_then_it_is_checked_again_and_live_holds(
    make_desk: Maker, clock: FixedClock, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    desk.walk()
    clock.advance(REFRESH_AFTER_S - 1)
    desk.gateway.recheck_compliance()
    assert desk.live is not None and desk.live.checks == 1  # not yet
    clock.advance(1)
    desk.gateway.recheck_compliance()
    clock.advance(14 * 60)  # 19 minutes after step 4, 14 after the refresh
    assert desk.live.checks == 2
    refresh = desk.records("unlock_step")[-1]
    assert (refresh["step"], refresh["outcome"], refresh["actor"], refresh["trigger"]) == (
        4, "done", "system", "sweep")  # fmt: skip
    assert desk.evaluate(make_order())["order_status"] == "evaluated"


def test_sweep_when_the_credential_check_fails_then_steps_4_and_5_void_until_walked_again(
    make_desk: Maker, clock: FixedClock, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    desk.walk()
    assert desk.live is not None
    desk.live.credentials = BrokerError("session expired")
    clock.advance(REFRESH_AFTER_S)
    desk.gateway.recheck_compliance()
    desk.live.credentials = True  # restored: live stays locked until walked again

    void = desk.records("unlock_step")[-1]
    assert (void["step"], void["outcome"]) == (4, "void")
    assert void["reason"] == (
        "credentials: fake-live credential check failed: BrokerError: session expired"
    )
    assert "LIVE_LOCKED" in codes(desk.evaluate(make_order()))
    status = desk.gateway.unlock.status()
    assert [s["status"] for s in status["steps"]] == ["done"] * 3 + ["pending"] * 2
    assert status["walk"]["void"]["reason"] == void["reason"]
    desk.gateway.unlock.perform(4, OFFICER)
    desk.gateway.unlock.perform(5, OFFICER, CONFIRMATION)
    assert desk.evaluate(make_order())["order_status"] == "evaluated"


def test_live_when_the_configuration_expires_then_blocked_and_the_sweep_voids_the_walk(
    make_desk: Maker, clock: FixedClock, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    desk.walk()
    expires = desk.gateway.standing.expires
    assert expires is not None
    clock.now = expires
    clock.advance(1)
    assert desk.live is not None
    desk.live.credentials = True
    unlocked, note = desk.gateway.unlock.live_status(desk.gateway.standing)
    assert (unlocked, note) == (False, "signed_config: the configuration expired at "
                                       "2027-01-31T00:00:00Z")  # fmt: skip
    desk.gateway.recheck_compliance()
    void = desk.records("unlock_step")[-1]
    assert (void["step"], void["outcome"]) == (1, "void")
    status = desk.gateway.unlock.status()
    assert status["next_step"] == 1 and status["unlocked"] is False


def test_reload_when_another_configuration_comes_in_force_then_the_walk_is_void(
    make_desk: Maker, make_order: OrderBuilder
) -> None:
    desk = make_desk()
    desk.walk()
    desk.team.set_version(2)
    desk.team.pin()
    desk.team.sign("alice", "bob", fresh=True)
    standing = desk.gateway.reload(load_policies(desk.team.policies), OFFICER)
    assert standing.in_force and standing.version == 2

    void = desk.records("unlock_step")[-1]
    assert (void["outcome"], void["step"], void["walk_version"], void["version"]) == (
        "void", 1, 1, 2)  # fmt: skip
    assert "LIVE_LOCKED" in codes(desk.evaluate(make_order()))
    assert desk.refused(2).reason == "step 1 (access) must be done first"
    desk.walk()
    assert desk.evaluate(make_order())["order_status"] == "evaluated"


def test_leave_live_when_asked_then_allowed_audited_and_entering_again_needs_step_5(
    make_desk: Maker,
) -> None:
    desk = make_desk()
    desk.walk()
    desk.gateway.set_mode("simulation", OFFICER, "end of day")
    with pytest.raises(ModeRefused) as caught:
        desk.gateway.set_mode("live", OFFICER)
    assert caught.value.missing[0].startswith(
        "the live unlock is not complete: step 5 (enable) pending"
    )
    changes = [(r["previous"], r["mode"]) for r in desk.records("mode_changed")]
    assert changes == [("research", "live"), ("live", "simulation")]
    desk.gateway.unlock.perform(5, OFFICER, CONFIRMATION)
    assert desk.gateway.mode() == "live"


def test_set_mode_live_when_the_walk_is_not_complete_then_refused_naming_the_next_step(
    make_desk: Maker,
) -> None:
    desk = make_desk()
    with pytest.raises(ModeRefused) as caught:
        desk.gateway.set_mode("live", OFFICER)
    assert caught.value.missing == [
        "the live unlock is not complete: step 1 (access) pending (walk it: "
        "POST /v1/unlock/{step}, or apex-oms unlock step N)"
    ]


# --- the store ----------------------------------------------------------------------


def test_walk_when_the_gateway_restarts_then_it_is_still_complete_and_live_holds(
    make_desk: Maker, make_order: OrderBuilder
) -> None:
    first = make_desk()
    first.walk()
    second = make_desk()  # the same store and configuration, a new process
    assert second.gateway.mode() == "live"
    assert second.gateway.unlock.status()["unlocked"] is True
    assert second.evaluate(make_order())["order_status"] == "evaluated"


def test_live_status_when_asked_per_order_then_the_store_is_read_once(
    make_desk: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = make_desk()
    desk.walk()
    reads: list[str] = []
    real = desk.store.setting

    def counting(key: str) -> Any:
        reads.append(key)
        return real(key)

    monkeypatch.setattr(desk.store, "setting", counting)
    for _ in range(50):
        assert desk.gateway.unlock.live_status(desk.gateway.standing)[0]
    assert reads.count(WALK) <= 1

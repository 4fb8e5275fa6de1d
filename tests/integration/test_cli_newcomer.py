"""What a new user meets first (issue 8, item 8): `--version`, help on every
action and option, `tokens create --json`, validated `orders list` options,
`evaluate` of several files in the service's mode, the packaged default
policies, a quiet closed pipe, and `orders example`, a body valid now."""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

import api.cli_service
from api.app import create_app
from api.cli import BROKEN_PIPE, _parser, main
from api.example_order import example_order
from api.policy_source import PACKAGED
from api.runtime import Runtime
from api.settings import Settings
from engine import EngineState, Evaluator, load_policies
from engine.gateway import Actor
from engine.lifecycle import OrderStatus
from tests.integration.cli_support import Run, run_main, use_home

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
ORDERS = ROOT / "examples" / "orders"
AT = "2026-11-30T15:00:00Z"  # Monday 10:00 in New York: the session is open
INSIDE = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)
OUTSIDE = [
    datetime(2026, 11, 30, 22, 0, 0, tzinfo=UTC),  # Monday 17:00 in New York: closed
    datetime(2026, 12, 5, 15, 0, 0, tzinfo=UTC),  # a Saturday
    datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC),  # Thanksgiving
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(tmp_path, monkeypatch, POLICIES)


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        return run_main(capsys, argv)

    return run


@pytest.fixture
def service(home: Path, clock: Callable[[], datetime]) -> Iterator[Runtime]:
    """The store the CLI uses, opened in-process with the test clock."""
    runtime = Runtime.start(Settings.from_env(), clock=clock)
    yield runtime
    runtime.close()


# --- 1. --version ---------------------------------------------------------------------


def test_version_then_prints_the_package_version_alone(cli: Callable[..., Run]) -> None:
    run = cli("--version")

    assert (run.code, run.out, run.err) == (0, f"apex-oms {version('apex-oms')}\n", "")


# --- 2. help on every action and option --------------------------------------------------


def walk(parser: argparse.ArgumentParser, path: str = "apex-oms") -> Iterator[tuple[str, Any]]:
    """Every (where, argparse action) of the tree, subcommand choices included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{path} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_help_tree_when_walked_then_every_action_and_option_has_help() -> None:
    found = list(walk(_parser()))

    missing = [where for where, action in found if not (action.help or "").strip()]
    assert missing == []
    names = {where for where, _ in found}
    for command in ("mode show", "omega clear", "orders example", "audit export", "tokens revoke"):
        assert f"apex-oms {command}" in names


@pytest.mark.parametrize(
    ("group", "actions"),
    [
        ("mode", ["show", "set"]),
        ("state", ["show", "set"]),
        ("omega", ["invoke", "clear"]),
        ("orders", ["list", "example"]),
        ("audit", ["verify", "export"]),
        ("tokens", ["create", "list", "revoke"]),
        ("policy", ["validate", "test"]),
    ],
)
def test_group_help_then_lists_each_action_with_its_line(
    cli: Callable[..., Run], group: str, actions: list[str]
) -> None:
    run = cli(group, "--help")

    assert run.code == 0
    for action in actions:
        line = next(line for line in run.out.splitlines() if line.split()[:1] == [action])
        assert len(line.split()) > 2, line  # the action, then its one-line help


# --- 3. tokens create --json ----------------------------------------------------------------


def test_tokens_create_json_then_an_object_with_exactly_the_documented_keys(
    cli: Callable[..., Run],
) -> None:
    run = cli("tokens", "create", "--role", "auditor", "--label", "q4", "--json")

    made = json.loads(run.out)
    assert run.code == 0
    assert list(made) == ["token", "token_id", "role", "label", "accounts", "expires_at"]
    assert (made["role"], made["label"], made["accounts"], made["expires_at"]) == (
        "auditor",
        "q4",
        None,
        None,
    )
    assert made["token"].startswith(f"apx_{made['token_id']}_")


def test_tokens_create_without_json_then_the_token_alone(cli: Callable[..., Run]) -> None:
    run = cli("tokens", "create", "--role", "trader")

    assert run.code == 0
    assert run.out.count("\n") == 1 and run.out.startswith("apx_")


# --- 4. orders list --limit and --status ----------------------------------------------------


@pytest.mark.parametrize("limit", ["-1", "0", "1001", "ten", "2.5"])
def test_orders_list_when_limit_is_out_of_range_then_exit_2_naming_it(
    cli: Callable[..., Run], limit: str
) -> None:
    run = cli("orders", "list", "--limit", limit)

    assert (run.code, run.out) == (2, "")
    assert f"argument --limit: {limit!r} is not a whole number from 1 to 1000" in run.err


def test_orders_list_when_status_is_unknown_then_exit_2_listing_every_status(
    cli: Callable[..., Run],
) -> None:
    run = cli("orders", "list", "--status", "bogus")

    assert (run.code, run.out) == (2, "")
    assert "argument --status: 'bogus' is not an order status (one of: " in run.err
    assert all(status.value in run.err for status in OrderStatus)


def test_orders_list_when_limit_and_status_are_valid_then_they_filter(
    cli: Callable[..., Run], service: Runtime, make_order: Callable[..., dict[str, Any]]
) -> None:
    seed = Actor.of("seed", "trader")
    for quantity in (100, 200, 300):
        service.gateway.evaluate(make_order(quantity=quantity), seed)
    service.gateway.evaluate(make_order(quantity=-1), seed)  # rejected

    two = json.loads(cli("orders", "list", "--limit", "2", "--json").out)
    rejected = json.loads(cli("orders", "list", "--status", "rejected", "--json").out)

    assert len(two) == 2
    assert [r["order_status"] for r in rejected] == ["rejected"]


# --- 5. evaluate several files, and standard input -----------------------------------------


@pytest.mark.parametrize(
    ("files", "code"),
    [
        (["approved.json", "omega_directive.json"], 0),
        (["approved.json", "risk_denied.json"], 1),
        (["risk_denied.json", "invalid.json", "approved.json"], 2),
        (["approved.json", "no_such_file.json"], 2),
    ],
    ids=["all_approved", "one_blocked", "one_invalid", "one_missing"],
)
def test_evaluate_several_files_then_each_is_judged_and_the_worst_sets_the_exit(
    cli: Callable[..., Run], files: list[str], code: int
) -> None:
    run = cli("evaluate", *[str(ORDERS / f) for f in files], "--at", AT, "--json")

    judged = json.loads(run.out)
    assert run.code == code
    assert [Path(entry["file"]).name for entry in judged] == files
    statuses = [entry["record"]["order_status"] if "record" in entry else None for entry in judged]
    want = {"approved.json": "evaluated", "omega_directive.json": "evaluated"}
    want |= {"risk_denied.json": "blocked", "invalid.json": "rejected", "no_such_file.json": None}
    assert statuses == [want[f] for f in files]


def test_evaluate_several_files_as_tables_then_each_is_headed_by_its_file(
    cli: Callable[..., Run],
) -> None:
    run = cli(
        "evaluate", str(ORDERS / "approved.json"), str(ORDERS / "risk_denied.json"), "--at", AT
    )

    assert run.code == 1
    assert f"== {ORDERS / 'approved.json'} ==" in run.out
    assert f"== {ORDERS / 'risk_denied.json'} ==" in run.out
    assert run.out.rstrip().endswith("BLOCKED: risk_denied")


def test_evaluate_dash_then_reads_the_order_from_standard_input(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((ORDERS / "approved.json").read_text("utf-8")))

    run = cli("evaluate", "-", "--at", AT, "--json")

    assert run.code == 0
    assert json.loads(run.out)["order_status"] == "evaluated"


# --- 6. evaluate in the service's mode ------------------------------------------------------


def test_evaluate_when_the_service_has_no_database_then_research_mode(
    cli: Callable[..., Run], home: Path
) -> None:
    run = cli("evaluate", str(ORDERS / "approved.json"), "--at", AT, "--json")

    assert (run.code, json.loads(run.out)["mode"]) == (0, "research")
    assert not home.exists()  # a dry run creates no database


def test_evaluate_when_the_service_is_in_simulation_then_judged_in_simulation(
    cli: Callable[..., Run],
) -> None:
    assert cli("mode", "set", "simulation", "--reason", "test").code == 0

    run = cli("evaluate", str(ORDERS / "approved.json"), "--at", AT, "--json")
    table = cli("evaluate", str(ORDERS / "approved.json"), "--at", AT)

    record = json.loads(run.out)
    assert (run.code, record["mode"], record["fail_closed_triggers"]) == (0, "simulation", [])
    assert "mode: simulation (the service's, sqlite:///" in table.out


def test_evaluate_when_the_service_has_the_omega_directive_then_blocked_as_it_would_be(
    cli: Callable[..., Run],
) -> None:
    assert cli("omega", "invoke", "--reason", "test").code == 0

    run = cli("evaluate", str(ORDERS / "approved.json"), "--at", AT, "--json")

    assert run.code == 1
    assert json.loads(run.out)["fail_closed_triggers"] == ["omega_directive"]


def test_evaluate_when_the_state_file_names_a_mode_then_that_mode(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    assert cli("mode", "set", "simulation", "--reason", "test").code == 0
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"mode": "research"}), "utf-8")

    run = cli(
        "evaluate", str(ORDERS / "approved.json"), "--at", AT, "--json", "--state", str(state)
    )

    assert (run.code, json.loads(run.out)["mode"]) == (0, "research")


# --- 7. the packaged default policies -------------------------------------------------------


@pytest.fixture
def elsewhere(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Outside the repository, with APEX_POLICIES unset."""
    monkeypatch.delenv("APEX_POLICIES")
    away = tmp_path / "elsewhere"
    away.mkdir()
    monkeypatch.chdir(away)
    return away


NOTE = f"apex-oms: policies: packaged defaults ({PACKAGED})\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "validate"],
        ["evaluate", str(ORDERS / "approved.json"), "--at", AT],
        ["mode", "show"],
        ["tokens", "create", "--role", "admin"],
    ],
    ids=["policy_validate", "evaluate", "mode_show", "tokens_create"],
)
def test_outside_the_repository_then_packaged_policies_are_used_and_said_on_stderr(
    cli: Callable[..., Run], elsewhere: Path, argv: list[str]
) -> None:
    run = cli(*argv)

    assert run.code == 0, run.err
    assert run.err == NOTE
    assert "packaged" not in run.out


def test_inside_a_directory_with_policies_then_those_and_no_note(
    cli: Callable[..., Run], elsewhere: Path
) -> None:
    (elsewhere / "policies").symlink_to(POLICIES)

    run = cli("policy", "validate")

    assert (run.code, run.err) == (0, "")


def test_when_apex_policies_names_a_missing_directory_then_exit_2_with_a_hint(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("APEX_POLICIES", str(missing))

    for argv in (
        ["mode", "show"],
        ["policy", "validate"],
        ["evaluate", str(ORDERS / "approved.json")],
    ):
        run = cli(*argv)

        assert (run.code, run.out) == (2, "")
        assert run.err == (
            f"apex-oms: APEX_POLICIES={missing}: policy directory does not exist; point it at "
            "a policy directory, or unset it to use ./policies or the packaged defaults "
            f"({PACKAGED})\n"
        )


def test_settings_outside_the_repository_then_serve_uses_the_packaged_policies(
    elsewhere: Path,
) -> None:
    assert Settings.from_env({"APEX_HOME": str(elsewhere)}).policies == PACKAGED
    assert Settings.from_env({"APEX_POLICIES": "mine"}).policies == Path("mine")


def test_packaged_policies_are_the_repository_policies_not_a_copy() -> None:
    assert PACKAGED.is_symlink()
    assert PACKAGED.resolve() == POLICIES.resolve()


def test_package_data_patterns_cover_every_policy_file() -> None:
    """What the wheel copies into api/default_policies: every file of policies/."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    files = [p.relative_to(POLICIES).as_posix() for p in POLICIES.rglob("*") if p.is_file()]

    def shipped(file: str) -> bool:
        folder, _, name = f"default_policies/{file}".rpartition("/")
        package = "api." + folder.replace("/", ".")
        patterns = setuptools["package-data"].get(package, [])
        return package in setuptools["packages"] and any(fnmatch.fnmatch(name, p) for p in patterns)

    assert files
    assert [f for f in files if not shipped(f)] == []


# --- 8. a closed pipe -----------------------------------------------------------------------


def test_when_the_reader_closes_the_pipe_then_exit_quietly(tmp_path: Path) -> None:
    """`apex-oms evaluate ... --json | head -1`: far more than a pipe buffer of output."""
    env = {"APEX_HOME": str(tmp_path / "home"), "APEX_POLICIES": str(POLICIES), "PATH": "/usr/bin"}
    argv = [sys.executable, "-m", "api.cli", "evaluate", *[str(ORDERS / "approved.json")] * 80]
    process = subprocess.Popen(
        [*argv, "--at", AT, "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read().decode()
    code = process.wait(timeout=120)

    assert first == b"[\n"
    assert (code, err) == (BROKEN_PIPE, "")


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_main_when_stdout_is_a_closed_pipe_then_returns_without_a_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())

    assert main(["orders", "example"]) == BROKEN_PIPE


# --- 9. orders example ----------------------------------------------------------------------


def example_from_cli(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, now: datetime, *argv: str
) -> dict[str, Any]:
    monkeypatch.setattr(api.cli_service, "system_clock", lambda: now)
    run = cli("orders", "example", *argv)
    assert (run.code, run.err) == (0, "")
    body: dict[str, Any] = json.loads(run.out)  # standard output holds the body alone
    return body


VARIANTS = [
    [],
    ["--side", "sell"],
    ["--type", "market"],
    ["--type", "stop", "--side", "sell"],
    ["--symbol", "MSFT", "--quantity", "250"],
]


@pytest.mark.parametrize("argv", VARIANTS, ids=lambda argv: "_".join(argv) or "default")
def test_orders_example_inside_trading_hours_then_approved_by_the_default_policies(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    body = example_from_cli(cli, monkeypatch, INSIDE, *argv)

    decision = Evaluator(load_policies(POLICIES), clock=lambda: INSIDE).evaluate(
        body, EngineState(), None
    )

    assert decision.approved, decision.reasons
    assert all(result == "pass" for result in decision.results.values())


@pytest.mark.parametrize("now", OUTSIDE, ids=["evening", "saturday", "holiday"])
def test_orders_example_outside_trading_hours_then_only_the_session_check_fails(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, now: datetime
) -> None:
    body = example_from_cli(cli, monkeypatch, now)

    decision = Evaluator(load_policies(POLICIES), clock=lambda: now).evaluate(
        body, EngineState(), None
    )

    failing = {check: r for check, r in decision.results.items() if r != "pass"}
    assert failing == {"session_hours_check": "fail"}
    assert list(decision.triggers) == ["risk_denied"]


def test_orders_example_over_http_inside_hours_then_approved(
    cli: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    service: Runtime,
    clock: Callable[[], datetime],
) -> None:
    """curl -H "Authorization: Bearer $T" -d "$(apex-oms orders example)" .../evaluate"""
    body = example_from_cli(cli, monkeypatch, clock())
    token = service.tokens.create("trader", "curl", clock())

    with TestClient(create_app(service)) as client:
        answer = client.post(
            "/v1/orders/evaluate",
            content=json.dumps(body, indent=2),
            # what `curl -d` sends: its default content type, not JSON's
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    assert answer.status_code == 200, answer.text
    assert (answer.json()["order_status"], answer.json()["fail_closed_triggers"]) == (
        "evaluated",
        [],
    )


def test_orders_example_twice_then_two_client_order_ids(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = example_from_cli(cli, monkeypatch, INSIDE)
    second = example_from_cli(cli, monkeypatch, INSIDE)

    assert first["client_order_id"] != second["client_order_id"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--symbol", "not a symbol"], "no valid example: symbol: "),
        (["--quantity", "-5"], "argument --quantity: '-5' is not a number of shares above 0"),
        (["--side", "short"], "argument --side: invalid choice: 'short'"),
    ],
    ids=["symbol", "quantity", "side"],
)
def test_orders_example_when_an_option_is_invalid_then_exit_2_naming_it(
    cli: Callable[..., Run], argv: list[str], message: str
) -> None:
    run = cli("orders", "example", *argv)

    assert (run.code, run.out) == (2, "")
    assert message in run.err


def test_example_order_digests_are_those_the_engine_recomputes() -> None:
    from engine.canonical import sha256_digest

    context = example_order(INSIDE)["context"]

    assert context["data_hash"] == sha256_digest(context["quote"])
    assert context["protocol_hash"] == sha256_digest(sorted(context["protocols_fired"]))
    assert context["quote"]["timestamp"] == "2026-11-30T15:00:00Z"


def test_evaluate_one_unreadable_file_then_exit_2_and_the_error_on_stderr_alone(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", "utf-8")

    run = cli("evaluate", str(broken), "--json")

    assert (run.code, run.out) == (2, "")
    assert f"{broken}: not valid JSON" in run.err

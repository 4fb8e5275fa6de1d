"""Policy test cases: a file or a folder, `-k`, the line of every failure and
invalid case, and the shared defaults merged under each file and case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from api.cli import main
from engine import PolicyError
from engine.policy.cases import load_cases

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
PASSED, FAILED, USAGE = 0, 1, 2

SHARED = """\
# shared by every file
at: "2026-11-30T15:00:00Z"
order:
  client_order_id: strat7-000042
  symbol: AAPL
  side: buy
  quantity: 100
  order_type: limit
  limit_price: 150.25
  context:
    quote: {bid: 150.20, ask: 150.30, last: 150.25, timestamp: "2026-11-30T14:59:59Z"}
    volatility: 0.23
    regime: trending
    entropy: 0.41
    drift: 0.12
    data_hash: auto
    protocols_fired: [T01, T07]
    protocol_hash: auto
"""

CASES = """\
cases:
  - name: the shared order passes
    expect: {status: evaluated}

  - name: volatility above the maximum is denied
    order: {context: {volatility: 0.81}}
    expect: {status: blocked, failed: [volatility_check], triggers: [risk_denied]}

  - name: a wrong expectation fails here
    order: {quantity: 20000}
    expect: {status: evaluated}
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A copy of the shipped policy set whose tests/ holds only what a test writes."""
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory, ignore=shutil.ignore_patterns("tests"))
    (directory / "tests").mkdir()
    (directory / "tests" / "defaults.yaml").write_text(SHARED, "utf-8")
    return directory


def write(policies: Path, name: str, text: str) -> Path:
    path = policies / "tests" / name
    path.write_text(text, "utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the first line of `path` containing `text`."""
    lines = path.read_text("utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if text in line)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    code = main(["policy", "test", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# --- a file or a folder ---------------------------------------------------------


def test_policy_test_when_given_one_case_file_then_runs_only_its_cases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    file = POLICIES / "tests" / "market_risk.yaml"

    code, results = run_json(capsys, str(file))

    assert code == PASSED
    assert {r["file"] for r in results} == {str(file)}
    assert len(results) == file.read_text("utf-8").count("\n  - name: ")


def test_policy_test_when_given_the_policy_folder_then_runs_every_case_file_but_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, results = run_json(capsys, str(POLICIES))

    case_files = {p for p in (POLICIES / "tests").glob("*.yaml") if p.name != "defaults.yaml"}
    assert code == PASSED
    assert {Path(str(r["file"])) for r in results} == case_files
    assert len(results) == sum(p.read_text("utf-8").count("\n  - name: ") for p in case_files)


def test_policy_test_when_given_the_tests_folder_itself_then_runs_its_cases_against_the_set_above(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(policies, "mine.yaml", CASES)

    code, results = run_json(capsys, str(policies / "tests"))

    assert code == FAILED
    assert [(r["file"], r["passed"]) for r in results] == [
        (str(file), True),
        (str(file), True),
        (str(file), False),
    ]


def test_policy_test_when_given_a_file_then_the_policy_set_is_the_folder_above_its_own(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(policies, "mine.yaml", CASES)

    code, results = run_json(capsys, str(file))

    assert code == FAILED
    assert [r["passed"] for r in results] == [True, True, False]


def test_policy_test_when_given_the_defaults_file_then_exit_2_saying_it_holds_no_cases(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["policy", "test", str(policies / "tests" / "defaults.yaml")])

    err = capsys.readouterr().err
    assert code == USAGE
    assert "not_a_case_file" in err
    assert "defaults.yaml" in err


def test_policy_test_when_the_file_does_not_exist_then_exit_2_naming_it(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = policies / "tests" / "nothing.yaml"

    code = main(["policy", "test", str(missing), "--policies", str(policies)])

    err = capsys.readouterr().err
    assert code == USAGE
    assert f"{missing}: not_found" in err


# --- -k NAME -------------------------------------------------------------------------


def test_policy_test_k_when_names_contain_the_word_then_only_those_run_and_the_count_is_said(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(policies, "mine.yaml", CASES)

    code = main(["policy", "test", str(policies), "-k", "VOLATILITY"])

    out = capsys.readouterr().out
    assert code == PASSED
    assert "-k 'VOLATILITY': 1 of 3 cases selected" in out
    assert "volatility above the maximum is denied" in out
    assert "the shared order passes" not in out
    assert out.rstrip().endswith("1 passed, 0 failed")


def test_policy_test_k_with_json_when_selecting_then_stdout_is_only_the_selected_results(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(policies, "mine.yaml", CASES)

    code = main(["policy", "test", str(policies), "-k", "fails here", "--json"])

    captured = capsys.readouterr()
    assert code == FAILED
    assert [r["name"] for r in json.loads(captured.out)] == ["a wrong expectation fails here"]
    assert "1 of 3 cases selected" in captured.err


def test_policy_test_k_when_no_name_matches_then_exit_2_with_a_message(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(policies, "mine.yaml", CASES)

    code = main(["policy", "test", str(policies), "-k", "no such case"])

    captured = capsys.readouterr()
    assert code == USAGE
    assert "0 of 3 cases selected" in captured.err
    assert "no case name contains 'no such case'" in captured.err
    assert "PASS" not in captured.out


# --- lines ------------------------------------------------------------------------------


def test_policy_test_when_a_case_fails_then_it_is_shown_at_its_own_line(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(policies, "mine.yaml", CASES)

    code = main(["policy", "test", str(policies)])

    out = capsys.readouterr().out
    line = line_of(file, "a wrong expectation fails here")
    assert code == FAILED
    assert f"FAIL  {file}:{line}  a wrong expectation fails here" in out
    assert "status: want evaluated, got blocked" in out
    assert "QUANTITY_EXCEEDS_MAX_PER_ORDER" in out  # the reasons, to read the failure
    assert f"PASS  {file}:{line_of(file, 'the shared order passes')}  the shared" in out


@pytest.mark.parametrize(
    ("case", "marker", "code"),
    [
        ("    expect: {status: evalated}\n", "evalated", "wrong_type"),
        ("    expect: {status: evaluated}\n    expext: {}\n", "expext", "unknown_key"),
        (
            "    state: {trading_state: frozen}\n    expect: {status: evaluated}\n",
            "frozen",
            "wrong_type",
        ),
        ("    at: yesterday\n    expect: {status: evaluated}\n", "yesterday", "bad_time"),
        ("    order: {quantity: 5}\n", "quantity: 5", "missing_key"),
    ],
    ids=["bad-status", "unknown-key", "bad-state", "bad-time", "no-expect"],
)
def test_policy_test_when_a_case_is_invalid_then_exit_2_at_the_line_of_the_key_at_fault(
    policies: Path, capsys: pytest.CaptureFixture[str], case: str, marker: str, code: str
) -> None:
    text = CASES + "\n  - name: the broken case\n" + case
    file = write(policies, "mine.yaml", text)

    exit_code = main(["policy", "test", str(policies)])

    err = capsys.readouterr().err
    # a missing key has no line of its own: the case's line stands for it
    line = line_of(file, "the broken case") if code == "missing_key" else line_of(file, marker)
    assert exit_code == USAGE
    assert f"{file}:{line} [the broken case]: {code}" in err
    assert f"{file}:1 " not in err


# --- the shared defaults -----------------------------------------------------------


def test_load_cases_when_defaults_are_layered_then_case_over_file_over_shared(
    policies: Path,
) -> None:
    write(
        policies,
        "mine.yaml",
        """\
defaults:
  at: "2026-11-30T16:00:00Z"
  order: {symbol: MSFT, limit_price: null, order_type: market}
  state: {mode: simulation}
cases:
  - name: from the layers
    expect: {status: evaluated}
  - name: the case overrides
    at: "2026-11-30T17:00:00Z"
    order: {symbol: IBM, context: {volatility: 0.5}}
    state: {mode: research}
    expect: {status: evaluated}
""",
    )

    layered, override = load_cases(policies / "tests")

    assert layered.at == "2026-11-30T16:00:00Z"
    assert layered.order["symbol"] == "MSFT"
    assert layered.order["order_type"] == "market"
    assert "limit_price" not in layered.order  # null removes a shared key
    assert layered.order["quantity"] == 100  # untouched shared keys stay
    assert layered.order["context"]["volatility"] == 0.23
    assert layered.state == {"mode": "simulation"}
    assert override.at == "2026-11-30T17:00:00Z"
    assert override.order["symbol"] == "IBM"
    assert override.order["context"]["volatility"] == 0.5
    assert override.order["context"]["regime"] == "trending"  # merged key by key
    assert override.state == {"mode": "research"}


def test_load_cases_when_there_is_no_shared_defaults_file_then_each_case_stands_alone(
    policies: Path,
) -> None:
    (policies / "tests" / "defaults.yaml").unlink()
    write(
        policies,
        "mine.yaml",
        "cases:\n  - name: bare\n    order: {symbol: X}\n    expect: {status: rejected}\n",
    )

    (case,) = load_cases(policies / "tests")

    assert case.order == {"symbol": "X"}
    assert case.at is None


def test_shipped_tests_when_loaded_then_a_case_that_changes_nothing_is_the_shared_order() -> None:
    shared = yaml.safe_load((POLICIES / "tests" / "defaults.yaml").read_text("utf-8"))

    cases = load_cases(POLICIES / "tests" / "market_risk.yaml")

    first = cases[0]
    assert first.name == "the default order passes every check"
    assert (first.order, first.at, first.state) == (shared["order"], shared["at"], {})


@pytest.mark.parametrize(
    ("shared", "marker", "code"),
    [
        ('at: "2026-11-30T15:00:00Z"\norder:\n  symbol: AAPL\n  - side\n', "- side", "yaml_syntax"),
        ('at: "2026-11-30T15:00:00Z"\norder: [AAPL]\n', "order:", "wrong_type"),
        ('defaults:\n  at: "2026-11-30T15:00:00Z"\n', "defaults:", "unknown_key"),
        ("at: 2026-11-30 15:00\n", "at:", "bad_time"),
        ("order: {}\nstate:\n  omega_active: maybe\n", "omega_active", "wrong_type"),
        (
            "order: {symbol: AAPL}\norder: {symbol: MSFT}\n",
            "order: {symbol: MSFT}",
            "duplicate_key",
        ),
    ],
    ids=[
        "syntax",
        "order-not-a-mapping",
        "wrapped-in-defaults",
        "time-without-zone",
        "bad-state",
        "duplicate-key",
    ],
)
def test_policy_test_when_the_shared_defaults_are_malformed_then_exit_2_at_their_file_and_line(
    policies: Path, capsys: pytest.CaptureFixture[str], shared: str, marker: str, code: str
) -> None:
    defaults = write(policies, "defaults.yaml", shared)
    write(policies, "mine.yaml", CASES)

    exit_code = main(["policy", "test", str(policies)])

    err = capsys.readouterr().err
    assert exit_code == USAGE
    assert f"{defaults}:{line_of(defaults, marker)}" in err
    assert code in err
    assert err.count(f"{defaults}:") >= 1
    assert "mine.yaml" not in err  # one report, not one per case


def test_load_cases_when_shared_state_is_bad_then_one_issue_not_one_per_case(
    policies: Path,
) -> None:
    write(policies, "defaults.yaml", SHARED + "state: {mode: sideways}\n")
    write(policies, "mine.yaml", CASES)

    with pytest.raises(PolicyError) as caught:
        load_cases(policies / "tests")

    (issue,) = caught.value.issues
    assert (issue.code, issue.line) == ("wrong_type", SHARED.count("\n") + 1)
    assert issue.file == str(policies / "tests" / "defaults.yaml")
    assert "state.mode" in issue.message

"""engine.loader: every invalid policy set is refused with a stable code, the file and
the line of the offending key, and every problem is reported at once; digests name
exactly the bytes that were loaded.

A case's YAML marks the line it expects to be reported with a trailing `#<`.
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.cli import main
from engine import LoadedPolicies, PolicyError, load_policies, validate_policies
from engine.errors import PolicyIssue
from engine.policy.required import REQUIRED_CHECK_IDS, REQUIRED_CHECKS

MARK = "#<"
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies"


def load(directory: Path) -> LoadedPolicies:
    """A synthetic policy set: the language alone, without the required checks."""
    return load_policies(directory, require=())


def validate(directory: Path) -> list[PolicyIssue]:
    return validate_policies(directory, require=())


HEAD = """\
rules:
  - id: spread_check
    description: The quoted spread is too wide.
    trigger: risk_denied
    code: SPREAD_TOO_WIDE
    reason: The bid/ask spread is wider than allowed.
    deny_when:
"""

VALID = HEAD + "      field: spread_bps\n      gt: {param: risk.max_spread_bps}\n"


def deny(condition: str) -> str:
    """A rule file whose only rule denies when `condition` (YAML, any indent) holds."""
    return HEAD + textwrap.indent(textwrap.dedent(condition).strip("\n"), " " * 6) + "\n"


def rule_file(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if MARK in line]
    assert len(lines) == 1, "a case marks exactly one line"
    return lines[0]


def located(issues: list[PolicyIssue]) -> list[tuple[str, str, int | None]]:
    return [(issue.code, Path(issue.file).name, issue.line) for issue in issues]


@dataclass(frozen=True)
class Invalid:
    id: str
    code: str
    files: dict[str, str]


INVALID_SETS = [
    Invalid(
        "yaml_syntax",
        "yaml_syntax",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check
                    trigger: risk_denied: twice  #<
            """)
        },
    ),
    Invalid(
        "duplicate_key",
        "duplicate_key",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check
                    description: The quoted spread is too wide.
                    trigger: risk_denied
                    code: SPREAD_TOO_WIDE
                    reason: The bid/ask spread is wider than allowed.
                    trigger: compliance_failure  #<
                    deny_when: {field: spread_bps, gt: 25}
            """)
        },
    ),
    Invalid(
        "unknown_key-in-rule",
        "unknown_key",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check
                    description: The quoted spread is too wide.
                    trigger: risk_denied
                    severity: high  #<
                    code: SPREAD_TOO_WIDE
                    reason: The bid/ask spread is wider than allowed.
                    deny_when: {field: spread_bps, gt: 25}
            """)
        },
    ),
    Invalid(
        # reported at the mapping that holds both keys
        "unknown_key-beside-not",
        "unknown_key",
        {
            "rules.yaml": HEAD.replace("deny_when:", "deny_when:  #<")
            + "      not: {field: spread_bps, gt: 25}\n      field: spread_bps\n"
        },
    ),
    Invalid(
        "missing_key-in-rule",
        "missing_key",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check  #<
                    description: The quoted spread is too wide.
                    trigger: risk_denied
                    reason: The bid/ask spread is wider than allowed.
                    deny_when: {field: spread_bps, gt: 25}
            """)
        },
    ),
    Invalid(
        "missing_key-field",
        "missing_key",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check
                    description: The quoted spread is too wide.
                    trigger: risk_denied
                    code: SPREAD_TOO_WIDE
                    reason: The bid/ask spread is wider than allowed.
                    deny_when:  #<
                      gt: 25
            """)
        },
    ),
    Invalid(
        "unknown_field",
        "unknown_field",
        {"rules.yaml": deny("field: spread  #<\ngt: 25")},
    ),
    Invalid(
        "unknown_param",
        "unknown_param",
        {"rules.yaml": deny("field: spread_bps\ngt: {param: risk.max_spred_bps}  #<")},
    ),
    Invalid(
        "wrong_type-gt-on-string-field",
        "wrong_type",
        {"rules.yaml": deny("field: regime\ngt: 3  #<")},
    ),
    Invalid(
        "wrong_type-string-for-number-field",
        "wrong_type",
        {"rules.yaml": deny('field: spread_bps\ngt: "25"  #<')},
    ),
    Invalid(
        "wrong_type-in-with-a-scalar",
        "wrong_type",
        {"rules.yaml": deny("field: symbol\nin: RSTR  #<")},
    ),
    Invalid(
        "wrong_type-param-of-wrong-type",
        "wrong_type",
        {"rules.yaml": deny("field: regime\neq: {param: risk.max_spread_bps}  #<")},
    ),
    Invalid(
        "wrong_type-description-not-a-string",
        "wrong_type",
        {
            "rules.yaml": rule_file("""
                rules:
                  - id: spread_check
                    description: 42  #<
                    trigger: risk_denied
                    code: SPREAD_TOO_WIDE
                    reason: The bid/ask spread is wider than allowed.
                    deny_when: {field: spread_bps, gt: 25}
            """)
        },
    ),
    Invalid(
        "invalid_value-trigger",
        "invalid_value",
        {"rules.yaml": VALID.replace("trigger: risk_denied", "trigger: risk_denyed  #<")},
    ),
    Invalid(
        "invalid_value-id",
        "invalid_value",
        {"rules.yaml": VALID.replace("id: spread_check", "id: Spread-Check  #<")},
    ),
    Invalid(
        "invalid_value-code",
        "invalid_value",
        {"rules.yaml": VALID.replace("code: SPREAD_TOO_WIDE", "code: spread-too-wide  #<")},
    ),
    Invalid(
        "invalid_value-number-at-1e15",
        "invalid_value",
        {"rules.yaml": deny("field: notional\ngt: 1000000000000000  #<")},
    ),
    Invalid(
        "invalid_value-negative-number-beyond-1e15",
        "invalid_value",
        {"rules.yaml": deny("field: drift\nlt: -2000000000000000.0  #<")},
    ),
    Invalid(
        "invalid_pattern-anchor",
        "invalid_pattern",
        {"rules.yaml": deny('field: symbol\nmatches: "^AAPL"  #<')},
    ),
    Invalid(
        "invalid_pattern-bad-regex",
        "invalid_pattern",
        {"rules.yaml": deny('field: symbol\nmatches: "[A-Z"  #<')},
    ),
    Invalid(
        "unsupported_negation-matches-under-not",
        "unsupported_negation",
        {"rules.yaml": deny('not:\n  field: symbol\n  matches: "A.*"  #<')},
    ),
    Invalid(
        "unsupported_negation-matches-under-not-any",
        "unsupported_negation",
        {
            "rules.yaml": deny("""
                not:
                  any:
                    - {field: spread_bps, gt: 25}
                    - field: symbol
                      matches: "A.*"  #<
            """)
        },
    ),
    Invalid(
        "empty_condition-deny_when",
        "empty_condition",
        {"rules.yaml": HEAD.replace("deny_when:", "deny_when:  #<")},
    ),
    Invalid(
        "empty_condition-all",
        "empty_condition",
        {"rules.yaml": deny("all: []  #<")},
    ),
    Invalid(
        "empty_condition-rules",
        "empty_condition",
        {"rules.yaml": "rules: []  #<\n"},
    ),
    Invalid(
        "duplicate_rule_id-across-files",
        "duplicate_rule_id",
        {
            "a_rules.yaml": VALID,
            "b_rules.yaml": VALID.replace("- id: spread_check", "- id: spread_check  #<"),
        },
    ),
]


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("case", INVALID_SETS, ids=[c.id for c in INVALID_SETS])
def test_validate_when_policy_set_is_invalid_then_reports_code_file_and_line(
    policies_dir: Path, case: Invalid
) -> None:
    write(policies_dir, case.files)
    [(name, text)] = [(n, t) for n, t in case.files.items() if MARK in t]

    issues = validate(policies_dir)

    assert located(issues) == [(case.code, name, marked_line(text))]


@pytest.mark.parametrize("case", INVALID_SETS, ids=[c.id for c in INVALID_SETS])
def test_load_when_policy_set_is_invalid_then_raises_policy_error_with_the_same_issues(
    policies_dir: Path, case: Invalid
) -> None:
    write(policies_dir, case.files)

    with pytest.raises(PolicyError) as raised:
        load(policies_dir)

    assert raised.value.issues == validate(policies_dir)
    assert raised.value.code == "policy_invalid"


def test_validate_when_a_valid_rule_file_is_added_then_no_issues(policies_dir: Path) -> None:
    write(policies_dir, {"rules.yaml": VALID})

    assert validate(policies_dir) == []


def test_validate_when_compliance_yaml_is_missing_then_not_found(policies_dir: Path) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    (policies_dir / "compliance.yaml").unlink()

    issues = validate(policies_dir)

    assert located(issues) == [("not_found", "compliance.yaml", None)]


def test_validate_when_there_is_no_rule_file_then_not_found(policies_dir: Path) -> None:
    issues = validate(policies_dir)

    assert [(i.code, i.file) for i in issues] == [("not_found", str(policies_dir))]


def test_validate_when_directory_does_not_exist_then_not_found(tmp_path: Path) -> None:
    issues = validate(tmp_path / "nowhere")

    assert [(i.code, i.line) for i in issues] == [("not_found", None)]


def test_validate_when_duplicate_rule_id_then_names_the_rule_and_the_first_place(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"a_rules.yaml": VALID, "b_rules.yaml": VALID})

    [issue] = validate(policies_dir)

    assert issue.rule_id == "spread_check"
    assert issue.message == f"rule id already used at {policies_dir / 'a_rules.yaml'}:2"


def test_validate_when_errors_in_several_files_then_reports_them_all_at_once(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    config.write_text(config.read_text().replace("version: 1", "version: one"), encoding="utf-8")
    write(
        policies_dir,
        {
            "a.yaml": deny("field: spread\ngt: 25"),
            "b.yaml": "rules:\n  - id: x\n    trigger: risk_denied: twice\n",
            "c.yaml": rule_file("""
                rules:
                  - id: first_check
                    description: One.
                    trigger: risk_denyed
                    code: FIRST
                    reason: One.
                    deny_when: {field: regime, gt: 3}
                  - id: second_check
                    description: Two.
                    trigger: risk_denied
                    code: SECOND
                    reason: Two.
                    deny_when: {field: symbol, matches: "^A"}
            """),
        },
    )

    issues = validate(policies_dir)

    assert sorted(located(issues)) == [
        ("invalid_pattern", "c.yaml", 13),
        ("invalid_value", "c.yaml", 4),
        ("unknown_field", "a.yaml", 8),
        ("wrong_type", "c.yaml", 7),
        ("wrong_type", "compliance.yaml", 4),
        ("yaml_syntax", "b.yaml", 3),
    ]
    assert {i.rule_id for i in issues if Path(i.file).name == "c.yaml"} == {
        "first_check",
        "second_check",
    }


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("version: 1", "version: one  #<", "wrong_type"),
        ("version: 1", "version: 1\nversoin: 2  #<", "unknown_key"),
        # a missing key is reported where the document's mapping starts
        (
            'version: 1\nexpires: "2027-01-31T00:00:00Z"',
            'expires: "2027-01-31T00:00:00Z"  #<',
            "missing_key",
        ),
        ("  rate_window_s: 1 ", "  rate_window_s: fast  #<", "wrong_type"),
        ("  timezone: America/New_York", "  calender: always  #<", "unknown_key"),
    ],
    ids=[
        "version-not-a-number",
        "unknown-top-level-key",
        "version-missing",
        "flow-window-not-a-number",
        "unknown-session-key",
    ],
)
def test_validate_when_compliance_yaml_is_invalid_then_reports_code_and_line(
    policies_dir: Path, old: str, new: str, code: str
) -> None:
    config = policies_dir / "compliance.yaml"
    text = config.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")
    write(policies_dir, {"rules.yaml": VALID})

    issues = validate(policies_dir)

    assert located(issues) == [(code, "compliance.yaml", marked_line(text))]


def test_validate_when_a_parameter_is_a_nested_mapping_then_reports_wrong_type_at_its_line(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    text = config.read_text().replace(
        "  max_spread_bps: 25", "  max_spread_bps:\n    nested: {deeper: 1}  #<"
    )
    config.write_text(text, encoding="utf-8")
    write(policies_dir, {"rules.yaml": VALID})

    issues = validate(policies_dir)

    # a map's values are single values (test_policy_references covers maps)
    assert located(issues) == [("wrong_type", "compliance.yaml", marked_line(text))]


def test_validate_when_compliance_yaml_has_a_duplicate_key_then_reports_it(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    text = config.read_text().replace(
        "  max_spread_bps: 25", "  max_spread_bps: 25\n  max_spread_bps: 250  #<"
    )
    config.write_text(text, encoding="utf-8")
    write(policies_dir, {"rules.yaml": VALID})

    assert located(validate(policies_dir)) == [
        ("duplicate_key", "compliance.yaml", marked_line(text))
    ]


def test_load_then_rules_carry_their_source_file_and_line(policies_dir: Path) -> None:
    write(policies_dir, {"rules.yaml": "description: x\n" + VALID})

    [rule] = load(policies_dir).policies.rules

    assert (rule.id, Path(rule.source).name, rule.line) == ("spread_check", "rules.yaml", 3)


def test_load_then_policies_tests_directory_is_not_part_of_the_set(policies_dir: Path) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    before = load(policies_dir).policies
    (policies_dir / "tests").mkdir()
    (policies_dir / "tests" / "rules.yaml").write_text("cases: [not a policy]\n")

    after = load(policies_dir).policies

    assert after.files == ("rules.yaml",)
    assert after.policy_digest == before.policy_digest


# --- digests ---------------------------------------------------------------------------


def test_load_when_nothing_changes_then_digests_are_stable(
    policies_dir: Path, tmp_path: Path
) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    first = load(policies_dir).policies
    elsewhere = shutil.copytree(policies_dir, tmp_path / "elsewhere")

    again = load(policies_dir).policies
    moved = load(elsewhere).policies

    assert again.policy_digest == first.policy_digest == moved.policy_digest
    assert again.compliance_digest == first.compliance_digest == moved.compliance_digest
    assert first.policy_digest.startswith("sha256:")
    assert len(first.policy_digest) == len("sha256:") + 64


@pytest.mark.parametrize(
    "change",
    ["edit-a-rule", "add-a-file", "rename-a-file", "whitespace-only"],
)
def test_load_when_a_rule_file_changes_then_policy_digest_changes_and_compliance_digest_does_not(
    policies_dir: Path, change: str
) -> None:
    rules = policies_dir / "rules.yaml"
    rules.write_text(VALID)
    before = load(policies_dir).policies

    if change == "edit-a-rule":
        rules.write_text(VALID.replace("gt: {param", "ge: {param"))
    elif change == "add-a-file":
        (policies_dir / "more.yaml").write_text(VALID.replace("spread_check", "other_check"))
    elif change == "rename-a-file":
        rules.rename(policies_dir / "renamed.yaml")
    else:
        rules.write_text(VALID + "\n")
    after = load(policies_dir).policies

    assert after.policy_digest != before.policy_digest
    assert after.compliance_digest == before.compliance_digest


def test_load_when_compliance_yaml_changes_then_only_compliance_digest_changes(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    before = load(policies_dir).policies
    config = policies_dir / "compliance.yaml"
    config.write_text(config.read_text().replace("max_spread_bps: 25", "max_spread_bps: 30"))

    after = load(policies_dir).policies

    assert after.compliance_digest != before.compliance_digest
    assert after.policy_digest == before.policy_digest


def test_load_then_compliance_digest_is_sha256_of_compliance_yaml_bytes(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    raw = (policies_dir / "compliance.yaml").read_bytes()

    policies = load(policies_dir).policies

    assert policies.compliance_digest == "sha256:" + hashlib.sha256(raw).hexdigest()


# --- required checks: not removable, not alterable, by editing the policy files -------


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped policy set that a test may edit."""
    return shutil.copytree(SHIPPED, tmp_path / "policies", ignore=shutil.ignore_patterns("tests"))


def without_rule(text: str, check_id: str) -> str:
    """The rule file `text` without the rule `check_id`."""
    start = text.index(f"  - id: {check_id}\n")
    end = text.find("\n  - id: ", start + 1)
    return text[:start] + (text[end + 1 :] if end != -1 else "")


def key_line(text: str, check_id: str, key: str) -> int:
    """The line of `key` in the rule `check_id`, or of the rule itself if it has no `key`."""
    lines = text.splitlines()
    first = next(n for n, line in enumerate(lines) if line == f"  - id: {check_id}")
    for n in range(first + 1, len(lines)):
        if lines[n].startswith("  - id: "):
            break
        if lines[n].strip().startswith(f"{key}:"):
            return n + 1
    return first + 1


def edit(path: Path, old: str, new: str) -> str:
    text = path.read_text("utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path.name}"
    path.write_text(text.replace(old, new), "utf-8")
    return text.replace(old, new)


@pytest.mark.parametrize("check_id", REQUIRED_CHECK_IDS)
def test_validate_when_a_required_check_is_deleted_then_missing_required_check_names_it(
    shipped: Path, check_id: str
) -> None:
    controls = shipped / "controls.yaml"
    controls.write_text(without_rule(controls.read_text("utf-8"), check_id), "utf-8")

    issues = validate_policies(shipped)

    assert [(i.code, i.rule_id, i.file, i.line) for i in issues] == [
        ("missing_required_check", check_id, str(shipped), None)
    ]
    assert issues[0].message == (
        f"required check {check_id!r} is not in the policy set; it cannot be removed: "
        "restore it from the shipped policies/controls.yaml"
    )


@pytest.mark.parametrize("check_id", ["omega_check", "mode_check"], ids=["omega", "mode"])
def test_cli_policy_validate_when_a_required_check_is_deleted_then_exit_2_naming_it(
    shipped: Path, check_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    controls = shipped / "controls.yaml"
    controls.write_text(without_rule(controls.read_text("utf-8"), check_id), "utf-8")

    code = main(["policy", "validate", str(shipped)])

    out = capsys.readouterr().out
    assert code == 2
    assert "missing_required_check" in out
    assert check_id in out
    assert out.rstrip().endswith("1 error(s); policy set is INVALID")


@dataclass(frozen=True)
class Altered:
    id: str
    check: str
    key: str
    old: str
    new: str
    want: str
    got: str


ALTERED = [
    Altered(
        "mode-check-denies-live-instead-of-research",
        "mode_check",
        "deny_when",
        "      eq: research\n\n  - id: compliance_signature_check",
        "      eq: live\n\n  - id: compliance_signature_check",
        "{field: mode, eq: research}",
        "{field: mode, eq: live}",
    ),
    Altered(
        "mode-check-applies-to-evaluate-too",
        "mode_check",
        "applies_when",
        "in: [submit, replace]",
        "in: [evaluate, submit, replace]",
        "{field: operation, in: [submit, replace]}",
        "{field: operation, in: [evaluate, submit, replace]}",
    ),
    Altered(
        "mode-check-applies-when-removed",
        "mode_check",
        "applies_when",
        "    applies_when:\n      field: operation\n      in: [submit, replace]\n",
        "",
        "{field: operation, in: [submit, replace]}",
        "(none)",
    ),
    Altered(
        "omega-check-trigger-changed",
        "omega_check",
        "trigger",
        "trigger: omega_directive\n    code: OMEGA_DIRECTIVE_IN_FORCE",
        "trigger: risk_denied\n    code: OMEGA_DIRECTIVE_IN_FORCE",
        "omega_directive",
        "risk_denied",
    ),
    Altered(
        "live-mode-check-code-changed",
        "live_mode_check",
        "code",
        "code: LIVE_LOCKED",
        "code: LIVE_NOT_YET",
        "LIVE_LOCKED",
        "LIVE_NOT_YET",
    ),
    Altered(
        "trading-halted-check-limited-to-submit",
        "trading_halted_check",
        "applies_when",
        "    reason: Trading is halted for this account.\n",
        "    reason: Trading is halted for this account.\n"
        "    applies_when: {field: operation, eq: submit}\n",
        "(none)",
        "{field: operation, eq: submit}",
    ),
    Altered(
        "account-permission-check-inverted",
        "account_permission_check",
        "deny_when",
        "      field: account_permitted\n      eq: false",
        "      field: account_permitted\n      eq: true",
        "{field: account_permitted, eq: false}",
        "{field: account_permitted, eq: true}",
    ),
    Altered(
        "broker-capability-check-drops-the-operation",
        "broker_capability_check",
        "deny_when",
        "        - {field: broker_supports_operation, eq: false}\n",
        "",
        "{any: [{field: broker_supports_order_type, eq: false}, "
        "{field: broker_supports_time_in_force, eq: false}, "
        "{field: broker_supports_reduce_only, eq: false}, "
        "{field: broker_supports_operation, eq: false}]}",
        "{any: [{field: broker_supports_order_type, eq: false}, "
        "{field: broker_supports_time_in_force, eq: false}, "
        "{field: broker_supports_reduce_only, eq: false}]}",
    ),
    Altered(
        "broker-check-limited-to-live",
        "broker_check",
        "applies_when",
        "      field: mode\n      ne: research\n    deny_when:\n      field: broker_configured",
        "      field: mode\n      eq: live\n    deny_when:\n      field: broker_configured",
        "{field: mode, ne: research}",
        "{field: mode, eq: live}",
    ),
]


@pytest.mark.parametrize("case", ALTERED, ids=[c.id for c in ALTERED])
def test_validate_when_a_required_check_is_altered_then_required_check_altered_with_want_and_got(
    shipped: Path, case: Altered
) -> None:
    text = edit(shipped / "controls.yaml", case.old, case.new)

    issues = validate_policies(shipped)

    line = key_line(text, case.check, case.key)
    assert [(i.code, i.rule_id, Path(i.file).name, i.line) for i in issues] == [
        ("required_check_altered", case.check, "controls.yaml", line)
    ]
    assert issues[0].message == (
        f"{case.key} of a required check cannot change (want: {case.want}, got: {case.got})"
    )


def test_validate_when_required_checks_are_reworded_then_valid(shipped: Path) -> None:
    edit(
        shipped / "controls.yaml",
        "    reason: The Omega directive is in force.\n",
        "    reason: Kill switch engaged by compliance; no new orders.\n",
    )
    edit(
        shipped / "controls.yaml",
        "    description: A halted account, or a halted gateway, takes no new order.\n",
        "    description: Halted means halted.\n",
    )

    assert validate_policies(shipped) == []


def test_validate_when_a_required_check_moves_to_another_file_then_valid(shipped: Path) -> None:
    controls = shipped / "controls.yaml"
    text = controls.read_text("utf-8")
    start = text.index("  - id: omega_check\n")
    block = text[start : text.index("\n  - id: ", start + 1) + 1]
    controls.write_text(text.replace(block, ""), "utf-8")
    with (shipped / "compliance_rules.yaml").open("a", encoding="utf-8") as rules:
        rules.write("\n" + block)

    assert validate_policies(shipped) == []


def test_validate_when_a_required_check_is_deleted_beside_other_errors_then_all_reported(
    shipped: Path,
) -> None:
    controls = shipped / "controls.yaml"
    controls.write_text(without_rule(controls.read_text("utf-8"), "omega_check"), "utf-8")
    edit(shipped / "controls.yaml", "code: LIVE_LOCKED", "code: LIVE_NOT_YET")
    edit(shipped / "market_risk.yaml", "field: volatility\n", "field: volatilty\n")

    issues = validate_policies(shipped)

    assert [(i.code, Path(i.file).name, i.rule_id) for i in issues] == [
        ("required_check_altered", "controls.yaml", "live_mode_check"),
        ("unknown_field", "market_risk.yaml", "volatility_check"),
        ("missing_required_check", "policies", "omega_check"),
    ]


def test_validate_when_a_required_check_has_an_error_of_its_own_then_only_that_error(
    shipped: Path,
) -> None:
    edit(
        shipped / "controls.yaml",
        "    code: MODE_RESEARCH\n",
        "    code: MODE_RESEARCH\n    severity: high\n",
    )

    issues = validate_policies(shipped)

    assert [(i.code, i.rule_id) for i in issues] == [("unknown_key", "mode_check")]


def test_validate_when_the_file_of_the_required_checks_is_not_yaml_then_only_yaml_syntax(
    shipped: Path,
) -> None:
    edit(shipped / "controls.yaml", "in: [submit, replace]", "in: [submit, replace")

    issues = validate_policies(shipped)

    assert [(i.code, Path(i.file).name) for i in issues] == [("yaml_syntax", "controls.yaml")]


def test_validate_by_default_when_the_set_has_none_of_the_required_checks_then_each_is_named(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"rules.yaml": VALID})

    issues = validate_policies(policies_dir)

    assert [(i.code, i.rule_id) for i in issues] == [
        ("missing_required_check", check_id) for check_id in REQUIRED_CHECK_IDS
    ]
    with pytest.raises(PolicyError) as raised:
        load_policies(policies_dir)
    assert raised.value.issues == issues


def test_load_when_require_names_one_check_then_only_that_one_is_required(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"rules.yaml": VALID})
    omega = [check for check in REQUIRED_CHECKS if check.id == "omega_check"]

    issues = validate_policies(policies_dir, require=omega)

    assert [(i.code, i.rule_id) for i in issues] == [("missing_required_check", "omega_check")]
    assert [r.id for r in load(policies_dir).policies.rules] == ["spread_check"]


def test_required_checks_when_the_shipped_set_loads_then_each_is_present_as_pinned() -> None:
    rules = {rule.id: rule for rule in load_policies(SHIPPED).policies.rules}

    for check in REQUIRED_CHECKS:
        rule = rules[check.id]
        shipped = (rule.trigger, rule.code, rule.applies_when, rule.deny_when)
        assert shipped == (check.trigger, check.code, check.applies_when, check.deny_when)


# --- did you mean: a near miss names the closest known name ---------------------------

NEAR_MISSES = [
    pytest.param(
        deny("field: quantity\ngt: {param: risk.max_order_quantiy}"),
        "unknown_param",
        "unknown parameter 'risk.max_order_quantiy' in compliance.yaml; "
        "did you mean 'risk.max_order_quantity'?",
        id="parameter",
    ),
    pytest.param(
        deny("field: spred_bps\ngt: 10"),
        "unknown_field",
        "unknown fact field 'spred_bps'; did you mean 'spread_bps'?",
        id="fact_field",
    ),
    pytest.param(
        deny("field: spread_bps\ngtt: 10"),
        "unknown_key",
        "did you mean 'gt'?",
        id="operator",
    ),
    pytest.param(
        VALID.replace("    reason:", "    reasn:"),
        "unknown_key",
        "unknown key 'reasn' in rule; did you mean 'reason'?",
        id="rule_key",
    ),
    pytest.param(
        VALID.replace("trigger: risk_denied", "trigger: risk_denyed"),
        "invalid_value",
        "did you mean 'risk_denied'?",
        id="trigger",
    ),
]


@pytest.mark.parametrize(("text", "code", "hint"), NEAR_MISSES)
def test_validate_when_a_name_is_a_near_miss_then_the_message_says_did_you_mean(
    policies_dir: Path, text: str, code: str, hint: str
) -> None:
    write(policies_dir, {"rules.yaml": text})

    issues = validate(policies_dir)

    # a misspelt key is also a missing one: the near miss is on the unknown name
    named = [i for i in issues if i.code == code]
    assert len(named) == 1
    assert named[0].message.endswith(hint)


def test_validate_when_a_name_is_far_from_every_known_one_then_no_suggestion(
    policies_dir: Path,
) -> None:
    write(policies_dir, {"rules.yaml": deny("field: quantity\ngt: {param: risk.zzzzzz}")})

    issues = validate(policies_dir)

    assert [i.code for i in issues] == ["unknown_param"]
    assert "did you mean" not in issues[0].message


def test_validate_when_compliance_yaml_has_a_misspelt_key_then_did_you_mean(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    config.write_text(
        config.read_text("utf-8").replace("  rate_window_s:", "  rate_windw_s:"), "utf-8"
    )
    write(policies_dir, {"rules.yaml": VALID})

    issues = validate(policies_dir)

    assert [i.code for i in issues] == ["unknown_key"]
    assert issues[0].message.endswith("; did you mean 'rate_window_s'?")


def test_validate_when_a_required_check_id_is_misspelt_then_did_you_mean_names_it(
    shipped: Path,
) -> None:
    edit(shipped / "controls.yaml", "  - id: omega_check\n", "  - id: omega_chek\n")

    issues = validate_policies(shipped)

    assert [(i.code, i.rule_id) for i in issues] == [("missing_required_check", "omega_check")]
    assert issues[0].message.endswith("; rule 'omega_chek' is close: did you mean 'omega_check'?")

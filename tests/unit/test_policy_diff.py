"""`engine.policy.diff`: what a candidate set changes, by meaning. Each case edits a
small valid set (the shipped controls, its own limits and compliance.yaml) and
names the exact diff; edits that decide nothing differently show nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from engine import load_policies
from engine.policy.diff import diff_policies, parameter_changes

ROOT = Path(__file__).resolve().parents[2]

COMPLIANCE = """\
version: 1
expires: "2027-01-31T00:00:00Z"
risk:
  max_order_quantity: 10000
  max_volatility: 0.5
  allowed_regimes: [trending, calm]
compliance:
  restricted_symbols: [RSTR, HALTD]
session:
  calendar: always
  early_closes:
    2026-11-27: "13:00"
"""

LIMITS = """\
description: Limits.
rules:
  - id: max_quantity_check
    description: Fat-finger guard.
    trigger: risk_denied
    code: QUANTITY_ABOVE_LIMIT
    reason: The quantity is above the maximum.
    deny_when: {field: quantity, gt: {param: risk.max_order_quantity}}

  - id: restricted_check
    description: Restricted list.
    trigger: compliance_failure
    code: RESTRICTED
    reason: The symbol is restricted.
    deny_when:
      any:
        - {field: symbol_root, in: {param: compliance.restricted_symbols}}
        - {field: symbol, in: [XYZ, ABC]}

  - id: market_order_check
    description: Market orders only in a calm market.
    trigger: risk_denied
    code: MARKET_IN_STRESS
    reason: No market orders now.
    applies_when: {field: order_type, eq: market}
    deny_when:
      all:
        - {field: volatility, gt: {param: risk.max_volatility}}
        - {field: regime, not_in: {param: risk.allowed_regimes}}
"""

# the same rules, reordered, in block style, with comments, in two files, with
# every `all`/`any` and `in` list reordered, an `all` split in two and 0.5 as 0.50
LIMITS_REWRITTEN = """\
# the market rules first now
description: Limits, rewritten.
rules:
  - id: market_order_check
    description: Market orders only in a calm market.
    trigger: risk_denied
    code: MARKET_IN_STRESS
    reason: No market orders now.
    applies_when:
      field: order_type
      eq: market
    deny_when:
      all:
        - field: regime
          not_in: {param: risk.allowed_regimes}
        - all:
            - {field: volatility, gt: {param: risk.max_volatility}}
"""
OTHER_REWRITTEN = """\
rules:
  - id: restricted_check
    description: Restricted list.
    trigger: compliance_failure
    code: RESTRICTED
    reason: The symbol is restricted.
    deny_when:
      any:
        - {field: symbol, in: [ABC, XYZ]}      # reordered
        - {field: symbol_root, in: {param: compliance.restricted_symbols}}
  - id: max_quantity_check
    description: "Fat-finger guard."
    trigger: risk_denied
    code: QUANTITY_ABOVE_LIMIT
    reason: >-
      The quantity is above
      the maximum.
    deny_when: {field: quantity, gt: {param: risk.max_order_quantity}}
"""

NEW_RULE = """\
rules:
  - id: large_order_check
    description: Large orders need a calm market.
    trigger: risk_denied
    code: LARGE_ORDER
    reason: Too large.
    deny_when: {field: quantity, gt: 5000}
"""


def make_set(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    shutil.copy(ROOT / "policies" / "controls.yaml", directory / "controls.yaml")
    for name, text in files.items():
        (directory / name).write_text(text, "utf-8")
    return directory


def edited(**replacements: tuple[str, str]) -> dict[str, str]:
    """The base files with `old` replaced by `new` (exactly once) in the named file."""
    files = {"compliance.yaml": COMPLIANCE, "limits.yaml": LIMITS}
    for key, (old, new) in replacements.items():
        name = key.replace("_yaml", ".yaml")
        assert files[name].count(old) == 1, f"{old!r} is not once in {name}"
        files[name] = files[name].replace(old, new)
    return files


def placed(value: Any, old_dir: Path, new_dir: Path) -> Any:
    """`value` with `{old}` and `{new}` in its strings replaced by the two folders."""
    if isinstance(value, dict):
        return {k: placed(v, old_dir, new_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [placed(v, old_dir, new_dir) for v in value]
    if isinstance(value, str):
        return value.replace("{old}", str(old_dir)).replace("{new}", str(new_dir))
    return value


NOTHING: dict[str, Any] = {
    "rules": {"added": [], "removed": [], "changed": []},
    "parameters": {"changed": [], "added": [], "removed": []},
}


def expected(**parts: Any) -> dict[str, Any]:
    """NOTHING with the given lists: `rules_changed=[...]`, `parameters_added=[...]`."""
    out: dict[str, Any] = {
        "rules": dict(NOTHING["rules"]),
        "parameters": dict(NOTHING["parameters"]),
    }
    for key, value in parts.items():
        group, _, kind = key.partition("_")
        out[group][kind] = value
    return out


SAME = [
    pytest.param({}, id="an identical copy"),
    pytest.param(
        {"limits.yaml": LIMITS_REWRITTEN, "other.yaml": OTHER_REWRITTEN},
        id="rules reordered, moved to another file, restyled, commented, conditions reordered",
    ),
    pytest.param(
        edited(compliance_yaml=("max_order_quantity: 10000", "max_order_quantity: 10000.0")),
        id="an integer written as a decimal",
    ),
    pytest.param(
        edited(compliance_yaml=("[RSTR, HALTD]", "\n    - HALTD   # halted\n    - RSTR")),
        id="a list parameter reordered and restyled",
    ),
    pytest.param(
        edited(compliance_yaml=('"2027-01-31T00:00:00Z"', '"2027-01-30T19:00:00-05:00"')),
        id="the same expiry in New York time",
    ),
]


@pytest.mark.parametrize("new_files", SAME)
def test_diff_when_nothing_decides_differently_then_nothing_is_shown(
    tmp_path: Path, new_files: dict[str, str]
) -> None:
    old = load_policies(make_set(tmp_path / "old", edited()))
    new = load_policies(make_set(tmp_path / "new", {**edited(), **new_files}))

    diff = diff_policies(old, new)

    assert diff.empty
    assert {k: v for k, v in diff.as_dict().items() if k != "digests"} == NOTHING


CHANGED = [
    pytest.param(
        edited(compliance_yaml=("max_order_quantity: 10000", "max_order_quantity: 50")),
        expected(parameters_changed=[{"name": "risk.max_order_quantity", "old": 10000, "new": 50}]),
        id="a limit lowered",
    ),
    pytest.param(
        edited(compliance_yaml=("[RSTR, HALTD]", "[RSTR, HALTD, XYZ]")),
        expected(
            parameters_changed=[
                {
                    "name": "compliance.restricted_symbols",
                    "old": ["RSTR", "HALTD"],
                    "new": ["RSTR", "HALTD", "XYZ"],
                }
            ]
        ),
        id="a symbol added to a list parameter",
    ),
    pytest.param(
        edited(
            compliance_yaml=("  max_volatility: 0.5\n", "  max_volatility: 0.5\n  max_drift: 0.4\n")
        ),
        expected(parameters_added=[{"name": "risk.max_drift", "value": 0.4}]),
        id="a parameter added",
    ),
    pytest.param(
        edited(
            compliance_yaml=(
                '    2026-11-27: "13:00"\n',
                '    2026-11-27: "13:00"\n    2026-12-24: "13:00"\n',
            )
        ),
        expected(parameters_added=[{"name": "session.early_closes.2026-12-24", "value": "13:00"}]),
        id="a key added to a map setting",
    ),
    pytest.param(
        edited(compliance_yaml=("version: 1", "version: 2")),
        expected(parameters_changed=[{"name": "version", "old": 1, "new": 2}]),
        id="the version bumped",
    ),
    pytest.param(
        {**edited(), "new_rules.yaml": NEW_RULE},
        expected(
            rules_added=[
                {
                    "id": "large_order_check",
                    "file": "{new}/new_rules.yaml",
                    "line": 2,
                    "trigger": "risk_denied",
                    "code": "LARGE_ORDER",
                }
            ]
        ),
        id="a rule added in a new file",
    ),
    pytest.param(
        edited(limits_yaml=(LIMITS[LIMITS.index("  - id: market_order_check") :], "")),
        expected(
            rules_removed=[
                {
                    "id": "market_order_check",
                    "file": "{old}/limits.yaml",
                    "line": 20,
                    "trigger": "risk_denied",
                    "code": "MARKET_IN_STRESS",
                }
            ]
        ),
        id="a rule removed",
    ),
    pytest.param(
        edited(
            limits_yaml=(
                "gt: {param: risk.max_order_quantity}",
                "ge: {param: risk.max_order_quantity}",
            )
        ),
        expected(
            rules_changed=[
                {
                    "id": "max_quantity_check",
                    "file": "{new}/limits.yaml",
                    "line": 3,
                    "changes": [
                        {
                            "key": "deny_when",
                            "old": "{field: quantity, gt: {param: risk.max_order_quantity}}",
                            "new": "{field: quantity, ge: {param: risk.max_order_quantity}}",
                        }
                    ],
                }
            ]
        ),
        id="an operator changed",
    ),
    pytest.param(
        edited(limits_yaml=("[XYZ, ABC]", "[XYZ]")),
        expected(
            rules_changed=[
                {
                    "id": "restricted_check",
                    "file": "{new}/limits.yaml",
                    "line": 10,
                    "changes": [
                        {
                            "key": "deny_when",
                            "old": "{any: [{field: symbol_root, in: {param: "
                            "compliance.restricted_symbols}}, {field: symbol, in: [XYZ, ABC]}]}",
                            "new": "{any: [{field: symbol_root, in: {param: "
                            "compliance.restricted_symbols}}, {field: symbol, in: [XYZ]}]}",
                        }
                    ],
                }
            ]
        ),
        id="a value taken out of an in list",
    ),
    pytest.param(
        edited(
            limits_yaml=(
                "    trigger: compliance_failure\n    code: RESTRICTED\n",
                "    trigger: risk_denied\n    code: RESTRICTED_SYMBOL\n",
            )
        ),
        expected(
            rules_changed=[
                {
                    "id": "restricted_check",
                    "file": "{new}/limits.yaml",
                    "line": 10,
                    "changes": [
                        {"key": "trigger", "old": "compliance_failure", "new": "risk_denied"},
                        {"key": "code", "old": "RESTRICTED", "new": "RESTRICTED_SYMBOL"},
                    ],
                }
            ]
        ),
        id="a trigger and a code changed",
    ),
    pytest.param(
        edited(
            compliance_yaml=(
                "  max_volatility: 0.5\n",
                "  max_volatility: 0.5\n  max_quantity_by_account: {ACC-1: 500, ACC-2: 800}\n",
            ),
            limits_yaml=(
                "gt: {param: risk.max_order_quantity}}",
                "gt: {param: risk.max_quantity_by_account, key: account,"
                " default: {param: risk.max_order_quantity}}}",
            ),
        ),
        expected(
            rules_changed=[
                {
                    "id": "max_quantity_check",
                    "file": "{new}/limits.yaml",
                    "line": 3,
                    "changes": [
                        {
                            "key": "deny_when",
                            "old": "{field: quantity, gt: {param: risk.max_order_quantity}}",
                            "new": "{field: quantity, gt: {param: risk.max_quantity_by_account, "
                            "key: account, default: {param: risk.max_order_quantity}}}",
                        }
                    ],
                }
            ],
            parameters_added=[
                {"name": "risk.max_quantity_by_account", "value": {"ACC-1": 500, "ACC-2": 800}}
            ],
        ),
        id="a scalar limit replaced by a per-account map with a default",
    ),
    pytest.param(
        edited(
            limits_yaml=(
                "deny_when: {field: quantity, gt: {param: risk.max_order_quantity}}",
                "deny_when: {field: bid, gt: {field: ask}}",
            )
        ),
        expected(
            rules_changed=[
                {
                    "id": "max_quantity_check",
                    "file": "{new}/limits.yaml",
                    "line": 3,
                    "changes": [
                        {
                            "key": "deny_when",
                            "old": "{field: quantity, gt: {param: risk.max_order_quantity}}",
                            "new": "{field: bid, gt: {field: ask}}",
                        }
                    ],
                }
            ]
        ),
        id="a comparison with another field",
    ),
    pytest.param(
        {
            "compliance.yaml": COMPLIANCE,
            "limits.yaml": LIMITS.replace(
                "    applies_when: {field: order_type, eq: market}\n", ""
            ).replace("No market orders now.", "No market orders in stress."),
        },
        expected(
            rules_changed=[
                {
                    "id": "market_order_check",
                    "file": "{new}/limits.yaml",
                    "line": 20,
                    "changes": [
                        {
                            "key": "applies_when",
                            "old": "{field: order_type, eq: market}",
                            "new": "(none)",
                        },
                        {
                            "key": "reason",
                            "old": "No market orders now.",
                            "new": "No market orders in stress.",
                        },
                    ],
                }
            ]
        ),
        id="applies_when dropped and the reason reworded",
    ),
]


@pytest.mark.parametrize(("new_files", "want"), CHANGED)
def test_diff_when_a_set_changes_then_exactly_that_change_is_named(
    tmp_path: Path, new_files: dict[str, str], want: dict[str, Any]
) -> None:
    old_dir = make_set(tmp_path / "old", edited())
    new_dir = make_set(tmp_path / "new", new_files)
    old, new = load_policies(old_dir), load_policies(new_dir)

    got = diff_policies(old, new).as_dict()

    assert {k: v for k, v in got.items() if k != "digests"} == placed(want, old_dir, new_dir)
    assert got["digests"] == {
        "old": {"policy": old.policies.policy_digest, "compliance": old.policies.compliance_digest},
        "new": {"policy": new.policies.policy_digest, "compliance": new.policies.compliance_digest},
    }


def test_diff_when_only_layout_changed_then_the_digests_still_differ(tmp_path: Path) -> None:
    old = load_policies(make_set(tmp_path / "old", edited()))
    new = load_policies(
        make_set(tmp_path / "new", {**edited(), "limits.yaml": "# reviewed\n" + LIMITS})
    )

    diff = diff_policies(old, new)

    assert diff.empty
    assert diff.old_digests["policy"] != diff.new_digests["policy"]
    assert diff.old_digests["compliance"] == diff.new_digests["compliance"]


PARAMETERS = [
    pytest.param(
        {"risk": {"limit": 100}},
        {"risk": {"limit": {"ACC-1": 50, "ACC-2": 80}}},
        ([{"name": "risk.limit", "old": 100, "new": {"ACC-1": 50, "ACC-2": 80}}], [], []),
        id="a value that becomes a map is one change with both whole values",
    ),
    pytest.param(
        {"risk": {"limit": {"ACC-1": 50, "ACC-2": 80}}},
        {"risk": {"limit": 100}},
        ([{"name": "risk.limit", "old": {"ACC-1": 50, "ACC-2": 80}, "new": 100}], [], []),
        id="a map that becomes a value is one change with both whole values",
    ),
    pytest.param(
        {"risk": {"limit": {"ACC-1": 50, "ACC-2": 80, "ACC-3": 10}}},
        {"risk": {"limit": {"ACC-2": 90, "ACC-1": 50, "ACC-4": 20}}},
        (
            [{"name": "risk.limit.ACC-2", "old": 80, "new": 90}],
            [{"name": "risk.limit.ACC-4", "value": 20}],
            [{"name": "risk.limit.ACC-3", "value": 10}],
        ),
        id="a map compared key by key, its order aside",
    ),
    pytest.param(
        {"risk": {"flag": True}},
        {"risk": {"flag": 1}},
        ([{"name": "risk.flag", "old": True, "new": 1}], [], []),
        id="true is not 1",
    ),
    pytest.param(
        {"risk": {"symbols": ["A", "B"], "limit": 5}},
        {"risk": {"symbols": ["B", "A", "A"], "limit": 5.0}},
        ([], [], []),
        id="a list is a set and 5 is 5.0",
    ),
]


@pytest.mark.parametrize(("old", "new", "want"), PARAMETERS)
def test_parameter_changes_when_values_differ_then_dotted_names_with_old_and_new(
    old: dict[str, Any], new: dict[str, Any], want: tuple[list[Any], list[Any], list[Any]]
) -> None:
    changed, added, removed = parameter_changes(old, new)

    assert (
        [c.as_dict() for c in changed],
        [a.as_dict() for a in added],
        [r.as_dict() for r in removed],
    ) == want

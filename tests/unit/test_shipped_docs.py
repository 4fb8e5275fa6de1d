"""docs/policies.md lists every shipped check with the trigger and code its
rule declares, so the reference a compliance officer reads cannot drift from
the set that judges orders."""

from __future__ import annotations

import re
from pathlib import Path

from engine.policy.loader import load_policies

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_checks_when_documented_then_each_rule_with_its_file_trigger_and_code() -> None:
    text = (ROOT / "docs" / "policies.md").read_text("utf-8")
    section = text.split("## The shipped checks", 1)[1]
    documented = {
        m["id"]: (m["trigger"], m["code"])
        for m in re.finditer(
            r"^\| `(?P<id>[a-z0-9_]+)` \| `[a-z_]+\.yaml` \| `(?P<trigger>[a-z_]+)` \| "
            r"`(?P<code>[A-Z0-9_]+)` \|",
            section,
            re.MULTILINE,
        )
    }
    shipped = {r.id: (r.trigger, r.code) for r in load_policies(ROOT / "policies").policies.rules}

    assert documented == shipped

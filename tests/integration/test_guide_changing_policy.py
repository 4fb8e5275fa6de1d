"""docs/policy-language.md, section 11 ("Changing a policy safely"), done as a
compliance officer would do it from the guide: the candidate's edits and cases
are the guide's own YAML blocks, the commands are the guide's command lines, and
what they print is compared with what the guide shows. If the guide drifts from
the product (a snippet that no longer validates, a flag that is gone, an output
that reads otherwise), this fails.

Steps 1 to 5 run on a copy of the shipped set in a scratch folder (paths in the
outputs are relative to it, as in the guide), with a service in this process on
a fixed clock (a Monday, 10:00 in New York) recording the guide's flow. Steps 6
to 8 need a running service (`policy shadow` talks HTTP), which judges on the
real clock: its set is the shipped one with the calendar `always` (the test runs
at any hour), signed by officers made here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

import api.cli_whatif
from api.app import create_app
from api.runtime import Runtime
from tests.conftest import (
    POLICIES,
    ROOT,
    FixedClock,
    OrderBuilder,
    build_order,
    make_lasting,
    role_tokens,
)
from tests.integration.cli_support import run_main
from tests.integration.served import served
from tests.integration.test_cli_compliance import write_private
from tests.signing_support import Officers, officers

GUIDE = ROOT / "docs" / "policy-language.md"
SECTION = "## 11. Changing a policy safely"


# --- the guide, read -------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    language: str
    text: str


@dataclass(frozen=True)
class Shown:
    """A `$ command` of the guide and the output it shows under it."""

    argv: tuple[str, ...]
    output: str


def section() -> str:
    text = GUIDE.read_text("utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def blocks() -> list[Block]:
    fences = re.finditer(r"(?ms)^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```$",
                         section())  # fmt: skip
    found = []
    for fence in fences:
        indent = len(fence["indent"])
        body = "".join(line[indent:] for line in fence["body"].splitlines(keepends=True))
        found.append(Block(fence["lang"], body))
    return found


def yaml_block(start: str) -> str:
    """The one ```yaml block of the section that starts with `start`."""
    found = [b.text for b in blocks() if b.language == "yaml" and b.text.startswith(start)]
    assert len(found) == 1, f"want one yaml block starting {start!r} in section 11, got {found}"
    return found[0]


def shown(command: str) -> list[Shown]:
    """Each `$ COMMAND ...` the guide shows with its output (up to the next `$`)."""
    found = []
    for block in blocks():
        if block.language:
            continue
        parts = re.split(r"(?m)^\$ ", block.text)
        for part in parts[1:]:
            line, _, output = part.partition("\n")
            if line.startswith(command):
                argv = tuple(shlex.split(line, comments=True))
                found.append(Shown(argv[1:], output))  # without `apex-oms`
    assert found, f"the guide shows no `$ {command}`"
    return found


def shown_once(command: str) -> Shown:
    [one] = shown(command)
    return one


def step_table() -> dict[str, str]:
    """The table at the top of the section: step -> its command column."""
    rows = {}
    for line in section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.match(r"\d\. ", cells[0]):
            rows[cells[0][3:]] = cells[1]
    return rows


def in_order(guide_output: str, real: str) -> None:
    """Every line the guide shows (its `...` aside) is in the real output, in order."""
    lines = real.splitlines()
    at = 0
    for want in guide_output.rstrip("\n").splitlines():
        if want.strip() == "...":
            continue
        assert want in lines[at:], f"the guide shows {want!r}; the real output:\n{real}"
        at = lines.index(want, at) + 1


# --- step 1: the edits, from the guide ----------------------------------------------------


def edit_copy(policies: Path, candidate: Path) -> Path:
    """`cp -r policies candidate`, then the guide's three edits. Returns the case file."""
    shutil.copytree(policies, candidate)
    config = candidate / "compliance.yaml"
    config.write_text(merge_config(config.read_text("utf-8"), yaml_block("version: ")))
    rules = candidate / "order_limits.yaml"
    rules.write_text(replace_rule(rules.read_text("utf-8"), yaml_block("  - id: ")))
    [name] = {str(n) for n in re.findall(r"`candidate/tests/(\w+\.yaml)`", section())}
    cases = candidate / "tests" / name
    assert not cases.exists(), f"{name} would replace a shipped case file"
    cases.write_text(yaml_block("cases:"), "utf-8")
    return cases


def merge_config(text: str, snippet: str) -> str:
    """The guide's compliance.yaml snippet: `version: N` replaces the version; under
    `risk:`, the lines already in the file place the others, which go in after them
    (`...` stands for the rest of the file)."""
    lines = snippet.splitlines()
    assert lines[0].startswith("version: ") and lines[1] == "..." and lines[2] == "risk:", snippet
    text, count = re.subn(r"(?m)^version: .*$", lines[0], text)
    assert count == 1
    anchor: str | None = None
    new: list[str] = []
    for line in lines[3:]:
        if line + "\n" in text:
            assert not new, f"{line!r}: the guide's new lines come after the existing one"
            anchor = line
        else:
            new.append(line)
    assert anchor is not None and new, snippet
    return text.replace(anchor + "\n", anchor + "\n" + "".join(f"{n}\n" for n in new), 1)


def replace_rule(text: str, rule: str) -> str:
    """The rule whose id the guide's block names, replaced by the block."""
    rule_id = re.search(r"- id: (\w+)", rule)
    assert rule_id is not None
    pattern = rf"(?ms)^  - id: {rule_id[1]}\n.*?(?=^  - id: |\Z)"
    found = re.search(pattern, text)
    assert found is not None, f"no rule {rule_id[1]} to change"
    return text[: found.start()] + rule.rstrip("\n") + "\n\n" + text[found.end() :].lstrip("\n")


def printed_digests(validated: str) -> dict[str, str]:
    """`policy validate`'s two digests: {"policy": ..., "compliance": ...}."""
    return dict(re.findall(r"(?m)^(policy|compliance) digest: +(sha256:[0-9a-f]{64})$", validated))


def digests_aside(text: str) -> str:
    """The text with its digests, whole or shortened (`sha256:d99cd0ab...`), left
    out: the guide shows those of the shipped set when it was written, and any
    change to a shipped rule file changes them. That they are the candidate's is
    asserted from the real outputs."""
    return re.sub(r"sha256:[0-9a-f]{8}(?:[0-9a-f]{56}|\.\.\.)", "sha256:<digest>", text)


# --- steps 1 to 5: a scratch folder, a service in this process --------------------------

# The guide's flow: orders of paper-1 above its new limit and below it, and orders of
# `default`, which keeps the general one (1,000,000). Quantities at 150.25 a share.
FLOW = (
    ("default", 100),  # 15,025
    ("paper-1", 1000),  # 150,250
    ("paper-1", 1900),  # 285,475: above 250,000
    ("default", 1900),  # 285,475: under the general limit
    ("paper-1", 1700),  # 255,425: above 250,000
)
PAPER_LIMIT = 250_000


def record_flow(
    client: TestClient[Any], tokens: dict[str, str], make_order: OrderBuilder, clock: FixedClock
) -> list[tuple[str, int, str]]:
    """Each order of FLOW through the API (all approved by the set in force):
    (account, quantity, order id)."""
    compliance = {"Authorization": f"Bearer {tokens['compliance']}"}
    trader = {"Authorization": f"Bearer {tokens['trader']}"}
    mode = {"mode": "simulation", "reason": "the guide's flow"}
    assert client.post("/v1/mode", json=mode, headers=compliance).status_code == 200
    sent = []
    for account, quantity in FLOW:
        clock.advance(2)  # past the throttle's window and the duplicate window's reach
        answer = client.post(
            "/v1/orders", json=make_order(account=account, quantity=quantity), headers=trader
        )
        assert answer.status_code == 201, answer.text
        sent.append((account, quantity, answer.json()["order_id"]))
    return sent


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_steps_1_to_5_of_the_guide_print_what_it_shows_and_whatif_names_the_orders_it_blocks(
    start_runtime: Any,
    store_url: str,
    clock: FixedClock,
    make_order: OrderBuilder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(POLICIES, tmp_path / "policies")
    steps = step_table()

    # step 1: edit a copy, with the guide's own blocks
    assert steps["edit"].startswith("`cp -r policies candidate`")
    cases = edit_copy(Path("policies"), Path("candidate"))

    # step 2: validate
    validate = shown_once("apex-oms policy validate")
    assert steps["validate"] == f"`apex-oms {shlex.join(validate.argv)}`"
    valid = run_main(capsys, validate.argv)
    assert valid.code == 0, valid.err
    assert digests_aside(valid.out) == digests_aside(validate.output), "step 2 differs"
    digests = printed_digests(valid.out)

    # step 3: test, with coverage; the guide's three cases pass where it says they are
    test = shown_once("apex-oms policy test")
    assert steps["test, with coverage"] == f"`apex-oms {shlex.join(test.argv)}`"
    tested = run_main(capsys, test.argv)
    assert tested.code == 0, tested.err + tested.out[-3000:]
    in_order(test.output, tested.out)
    assert str(cases) in tested.out

    # step 4: diff against the set in force: one rule changed, one map added, version up
    diff = shown_once("apex-oms policy diff")
    assert steps["diff"] == f"`apex-oms {shlex.join(diff.argv)}`"
    differ = run_main(capsys, diff.argv)
    assert differ.code == 0, differ.err
    assert digests_aside(differ.out) == digests_aside(diff.output), "step 4 differs"
    as_json = run_main(capsys, (*diff.argv, "--json"))
    report = json.loads(as_json.out)
    assert (as_json.code, report["rules"]["added"], report["rules"]["removed"]) == (0, [], [])
    [changed] = report["rules"]["changed"]
    assert (changed["id"], changed["file"], changed["line"]) == (
        "max_notional_check", "candidate/order_limits.yaml", 46)  # fmt: skip
    assert [c["key"] for c in changed["changes"]] == ["deny_when"]
    assert report["parameters"] == {
        "changed": [{"name": "version", "old": 1, "new": 2}],
        "added": [{"name": "risk.max_order_notional_by_account",
                   "value": {"paper-1": PAPER_LIMIT}}],
        "removed": [],
    }  # fmt: skip
    assert report["digests"]["new"] == {"policy": digests["policy"],
                                        "compliance": digests["compliance"]}  # fmt: skip

    # step 5: the flow recorded by a service on the set in force, then what-if
    runtime: Runtime = start_runtime(policies=tmp_path / "policies")
    monkeypatch.setenv("APEX_HOME", str(runtime.settings.home))
    monkeypatch.setenv("APEX_DATABASE_URL", store_url)
    monkeypatch.setenv("APEX_POLICIES", str(tmp_path / "policies"))
    with TestClient(create_app(runtime)) as client:
        sent = record_flow(client, role_tokens(runtime), make_order, clock)
    clock.advance(60)
    monkeypatch.setattr(api.cli_whatif, "system_clock", clock)  # `--since 7d` from the flow
    above = [order_id for account, quantity, order_id in sent
             if account == "paper-1" and quantity * 150.25 > PAPER_LIMIT]  # fmt: skip
    assert len(above) == 2

    whatif = shown_once("apex-oms policy whatif")
    assert steps["what-if"] == f"`apex-oms {shlex.join(whatif.argv)}`"
    replayed = run_main(capsys, whatif.argv)
    assert replayed.code == 0, replayed.err
    assert digests_aside(replayed.out) == digests_aside(whatif.output), "step 5 differs"
    assert f" under {digests['policy']}\n" in replayed.out
    as_json = run_main(capsys, (*whatif.argv, "--json"))
    assert (as_json.code, json.loads(as_json.out)) == (0, {
        "replayed": len(FLOW),
        "changed": [{"order_id": order_id, "from": "approved", "to": "blocked",
                     "rules": ["max_notional_check"]} for order_id in above],
        "by_rule": {"max_notional_check": {"newly_blocked": 2, "newly_approved": 0}},
    })  # fmt: skip

    # ... and under the set in force, every recorded verdict comes out again
    audit_replay = shown_once("apex-oms audit replay")
    again = run_main(capsys, audit_replay.argv)
    assert (again.code, again.out) == (0, audit_replay.output)
    as_json = run_main(capsys, (*audit_replay.argv, "--json"))
    assert json.loads(as_json.out)["findings"] == []


# --- steps 6 to 8: a running service, an officer's shell -----------------------------

WAIT_S = 60.0  # a loaded CI machine: the shadow's worker gets there well before


@dataclass
class Shell:
    """An officer's shell in the desk folder, on the running service: `apex-oms`
    command lines as the guide writes them (`~` is the officer's home)."""

    cwd: Path
    env: dict[str, str]

    def run(self, argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        home = self.env["HOME"]
        argv = tuple(home + a[1:] if a.startswith("~/") else a for a in argv)
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *argv],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, argv: tuple[str, ...]) -> str:
        done = self.run(argv)
        assert done.returncode == 0, f"apex-oms {shlex.join(argv)}: {done.stderr}{done.stdout}"
        return done.stdout


def varying(text: str) -> str:
    """What changes from run to run: times (and so a table's widths), the year in
    order ids, a token's id; and the digests."""
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>", text)
    text = re.sub(r"ORD-\d{4}-", "ORD-<year>-", text)
    text = re.sub(r" by [0-9a-f]{8}$", " by <token>", text, flags=re.MULTILINE)
    return digests_aside(re.sub(r" {2,}", "  ", re.sub(r"-{3,}", "---", text)))


def commands_in_sh_block(word: str) -> list[tuple[str, ...]]:
    """The `apex-oms WORD ...` lines of the guide's ```sh blocks, without `apex-oms`."""
    found = []
    for block in blocks():
        for line in block.text.splitlines():
            if block.language == "sh" and line.startswith(f"apex-oms {word} "):
                found.append(tuple(shlex.split(line, comments=True))[1:])
    return found


def officers_set(tmp_path: Path) -> Officers:
    """The shipped set with the calendar `always` (the service judges on the real
    clock), lasting, pinned and signed by two of three officers; their private keys
    encrypted in the desk's ~/.apex-oms/private, as in the guide's step 7."""
    source = tmp_path / "source"
    shutil.copytree(POLICIES, source)
    make_lasting(source)
    config = source / "compliance.yaml"
    text, count = re.subn(r"(?m)^(  calendar:) us_equities", r"\1 always", config.read_text())
    assert count == 1
    config.write_text(text)
    team = officers(tmp_path / "desk", source=source)
    private = tmp_path / "officer-home" / ".apex-oms" / "private"
    private.mkdir(parents=True, mode=0o700)
    for name in ("alice", "bob"):
        write_private(private / f"{name}.pem", team.private[name], PASSPHRASE[name].encode())
    return team


PASSPHRASE = {"alice": "alice's passphrase", "bob": "bob's passphrase"}


def live_order(client_order_id: str, account: str, quantity: int) -> dict[str, Any]:
    return build_order(client_order_id, datetime.now(UTC), account=account, quantity=quantity)


def test_steps_6_to_8_of_the_guide_shadow_shows_the_difference_then_signed_and_reloaded_it_blocks(
    tmp_path: Path,
) -> None:
    team = officers_set(tmp_path)
    desk = team.policies.parent
    environment = {"APEX_POLICIES": str(team.policies), "APEX_KEYS": str(team.keys)}
    with ExitStack() as stack:
        service = stack.enter_context(served(tmp_path / "service", env=environment))
        admin = Shell(desk, {**service.env, "HOME": str(tmp_path / "officer-home")})
        compliance = admin.ok(("tokens", "create", "--role", "compliance")).strip()
        trader = admin.ok(("tokens", "create", "--role", "trader")).strip()
        passphrases = {f"{name.upper()}_PASS": p for name, p in PASSPHRASE.items()}
        shell = Shell(
            desk, {**admin.env, "APEX_URL": service.url, "APEX_TOKEN": compliance, **passphrases}
        )
        http = stack.enter_context(httpx.Client(base_url=service.url, timeout=30))
        as_compliance = {"Authorization": f"Bearer {compliance}"}
        as_trader = {"Authorization": f"Bearer {trader}"}
        mode = {"mode": "simulation", "reason": "the guide's shadow"}
        assert http.post("/v1/mode", json=mode, headers=as_compliance).status_code == 200

        # step 1 on the set in force: a copy, the guide's edits
        edit_copy(team.policies, desk / "candidate")
        validated = printed_digests(shell.ok(("policy", "validate", "candidate")))  # step 2
        in_force = http.get("/v1/policies", headers=as_compliance).json()

        # step 6: the candidate as the shadow, then three orders, the third of paper-1
        # above its new limit
        load, show = shown("apex-oms policy shadow")
        assert load.argv == ("policy", "shadow", "candidate") and show.argv == ("policy", "shadow")
        loaded = shell.ok(load.argv)
        assert varying(loaded) == varying(load.output)
        assert loaded.startswith(f"shadow: {validated['policy']} (")
        assert step_table()["shadow"].startswith(f"`apex-oms {shlex.join(load.argv)}`")
        answers = [
            http.post("/v1/orders", json=live_order(f"guide-{n}", account, quantity),
                      headers=as_trader)
            for n, (account, quantity) in enumerate(FLOW[:3])
        ]  # fmt: skip
        assert [a.status_code for a in answers] == [201] * 3, [a.text for a in answers]
        third = answers[2].json()
        # the set in force alone decides: approved and routed, whatever the shadow finds
        assert third["account"] == "paper-1"
        assert (third["order_status"], third["fail_closed_triggers"]) == ("accepted", [])
        view = wait_for_shadow(http, as_compliance, judged=3)
        [difference] = view["differences"]
        assert (difference["order_id"], difference["from"], difference["to"]) == (
            third["order_id"], "approved", "blocked")  # fmt: skip
        assert difference["rules"] == ["max_notional_check"]
        assert varying(shell.ok(show.argv)) == varying(show.output)

        # step 7: the candidate in place of the set in force, pinned, signed, verified
        assert "`rsync -a --delete candidate/ policies/`" in section()
        shutil.rmtree(team.policies)  # what that rsync does
        shutil.copytree(desk / "candidate", team.policies)
        pin, *signs, verify = commands_in_sh_block("compliance")
        assert (pin, verify) == (("compliance", "pin"), ("compliance", "verify"))
        assert [s[:2] for s in signs] == [("compliance", "sign")] * 2
        for argv in (pin, *signs, verify):
            shell.ok(argv)
        pinned = printed_digests(shell.ok(("policy", "validate", "policies")))
        # pin wrote the rules' digest into compliance.yaml: the rules' digest is step 2's,
        # compliance.yaml's is not
        assert pinned["policy"] == validated["policy"] != in_force["policy_digest"]
        assert pinned["compliance"] != validated["compliance"]

        # step 8: reload; the new digests in force, the order above 250,000 blocked
        reloaded = http.post("/v1/policies/reload", headers=as_compliance)
        assert reloaded.status_code == 200, reloaded.text
        assert (reloaded.json()["policy_digest"], reloaded.json()["compliance_digest"]) == (
            pinned["policy"], pinned["compliance"])  # fmt: skip
        assert http.get("/v1/compliance", headers=as_compliance).json()["version"] == 2
        over = http.post("/v1/orders", json=live_order("guide-over", "paper-1", 1700),
                         headers=as_trader)  # fmt: skip
        other = http.post("/v1/orders", json=live_order("guide-other", "default", 1700),
                          headers=as_trader)  # fmt: skip

    assert over.status_code == 403, over.text
    blocked = over.json()
    assert blocked["order_status"] == "blocked"
    assert [r["code"] for r in blocked["reasons"]] == ["NOTIONAL_EXCEEDS_MAX_PER_ORDER"]
    assert blocked["policy_digest"] == pinned["policy"]
    assert other.status_code == 201, other.text


def wait_for_shadow(http: httpx.Client, headers: dict[str, str], *, judged: int) -> Any:
    """GET /v1/policies/shadow once the shadow has judged `judged` orders (it judges
    off the order's path, so a moment after the answers)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        view = http.get("/v1/policies/shadow", headers=headers).json()
        if view["shadow"]["judged"] >= judged and view["shadow"]["queued"] == 0:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)

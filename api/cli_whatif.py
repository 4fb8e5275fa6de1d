"""`apex-oms policy whatif|shadow` and `apex-oms audit replay`: recorded
decisions judged again, and the shadow set of a running service.

`whatif` and `audit replay` read the service's store (`APEX_DATABASE_URL`,
`APEX_HOME`) and compile policy sets in this process, never in the service's:
the rules engine never frees a compiled ruleset. `shadow` talks to a running
service over HTTP (`--url`, default `$APEX_URL` or http://127.0.0.1:8000), with a
compliance token from `$APEX_TOKEN` (or `--token-file`).

Errors name a stable code and exit 2: `candidate_invalid` (with the
validator's issues), `bad_timestamp`, `empty_window`, `no_records`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from engine import Evaluator, load_policies, validate_policies
from engine.clock import format_utc, parse_utc, system_clock
from engine.errors import InvalidArgument
from engine.policy.loader import COMPLIANCE_FILE, rule_files
from engine.policy.versions import VersionUnusable, load_version
from engine.whatif import DecisionReplay, WhatIf, decisions, replay_decisions, whatif

from ._table import table
from .auth import TokenRefused, parse_duration
from .cli_service import CliError, service_database_exists
from .settings import Settings

__all__ = ["add_replay_action", "add_whatif_parsers"]

OK, FAILED, USAGE = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:8000"


class _Refused(Exception):
    def __init__(self, code: str, detail: str, issues: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.issues = issues or []


def add_whatif_parsers(policy_commands: Any) -> None:
    text = "judge the recorded orders again under a candidate set: every verdict that changes"
    whatif_ = policy_commands.add_parser(
        "whatif", help=text, description=text[0].upper() + text[1:] + ". " + _WINDOW_HELP
    )
    whatif_.add_argument("candidate", metavar="CANDIDATE_DIR", help="the candidate policy set")
    whatif_.add_argument("--since", metavar="T", help="from this time (ISO-8601 or 7d, 24h, ...)")
    whatif_.add_argument("--until", metavar="T", help="up to this time (same forms)")
    whatif_.add_argument("--json", action="store_true", help="machine-readable output")
    whatif_.set_defaults(handler=_whatif)

    text = "load, show or drop the shadow set of a running service"
    shadow = policy_commands.add_parser(
        "shadow",
        help=text,
        description=text[0].upper() + text[1:] + ": it judges every order beside the"
        " enforced set and records each verdict that differs; it decides nothing."
        " Needs a compliance token in $APEX_TOKEN (or --token-file).",
    )
    shadow.add_argument(
        "directory", nargs="?", metavar="DIR", help="the candidate set to load (none: show)"
    )
    shadow.add_argument("--drop", action="store_true", help="drop the shadow set")
    shadow.add_argument("--url", help=f"the service (default: $APEX_URL or {DEFAULT_URL})")
    shadow.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    shadow.add_argument("--json", action="store_true", help="print the service's answer")
    shadow.set_defaults(handler=_shadow)


_WINDOW_HELP = (
    "Exit 0 when the replay ran (changes or not), 2 on bad input: an invalid candidate"
    " (candidate_invalid), a bad time (bad_timestamp), --since after --until"
    " (empty_window), no recorded decision in the window (no_records)."
)


def add_replay_action(action: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`audit replay`, registered among the audit actions."""
    replay = action(
        "replay",
        "judge every recorded decision again under the policy version that judged it; "
        "any difference is a finding",
    )
    replay.add_argument("--json", action="store_true", help="print the report as an object")
    replay.set_defaults(handler=_replay)


# --- whatif ----------------------------------------------------------------------------


def _whatif(args: argparse.Namespace) -> int:
    try:
        report, digest = _run_whatif(args)
    except _Refused as exc:
        return _refusal(exc, args.json)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(_describe(report, digest))
    for order_id, why in sorted(report.unreadable.items()):
        print(f"apex-oms: {order_id} not replayed: {why}", file=sys.stderr)
    return OK


def _run_whatif(args: argparse.Namespace) -> tuple[WhatIf, str]:
    now = system_clock()
    since = _moment("--since", args.since, now)
    until = _moment("--until", args.until, now)
    if since is not None and until is not None and since > until:
        raise _Refused(
            "empty_window", f"--since {format_utc(since)} is after --until {format_utc(until)}"
        )
    candidate = Path(args.candidate)
    issues = validate_policies(candidate)
    if issues:
        raise _Refused(
            "candidate_invalid",
            f"the candidate set {candidate} does not validate ({len(issues)} issues)",
            [vars(i) for i in issues],
        )
    evaluator = Evaluator(load_policies(candidate))
    settings = Settings.from_env()
    if not service_database_exists(settings.database_url):
        raise _Refused("no_records", f"no service database at {settings.database_url}")
    from adapters.sql import SqlStore  # the store only when there is one to read

    store = SqlStore(settings.database_url)
    try:
        store.migrate()
        report = whatif(decisions(store.audit_records(), since, until), evaluator)
    finally:
        store.close()
    if not report.replayed and not report.unreadable:
        window = f"{_show(since)} to {_show(until)}"
        raise _Refused("no_records", f"no recorded decision to replay from {window}")
    return report, evaluator.policy.policies.policy_digest


def _moment(option: str, text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_utc(text)
    except (ValueError, InvalidArgument) as exc:
        problem = str(exc)
    try:
        return now - parse_duration(text)
    except TokenRefused:
        pass
    raise _Refused(
        "bad_timestamp",
        f"{option} {text[:60]!r}: want an ISO-8601 time with a zone"
        f" (2026-11-27T14:30:00Z) or a duration back from now (7d, 24h, 30m) ({problem})",
    )


def _show(moment: datetime | None) -> str:
    return format_utc(moment) if moment is not None else "the start"


def _describe(report: WhatIf, digest: str) -> str:
    lines = [f"what-if: {report.replayed} recorded decisions judged again under {digest}"]
    if not report.changed:
        lines.append("no decision would change")
        return "\n".join(lines)
    lines.append(f"{len(report.changed)} would change:\n")
    rows = [[c.order_id, c.operation, c.from_, c.to, ", ".join(c.rules)] for c in report.changed]
    lines.append(table(["order", "operation", "from", "to", "rules"], rows))
    rows = [
        [rule, str(counts["newly_blocked"]), str(counts["newly_approved"])]
        for rule, counts in sorted(report.by_rule.items())
    ]
    lines.append("\nby rule:\n")
    lines.append(table(["rule", "newly blocked", "newly approved"], rows))
    return "\n".join(lines)


def _refusal(exc: _Refused, as_json: bool) -> int:
    print(f"apex-oms: {exc.code}: {exc.detail}", file=sys.stderr)
    for issue in exc.issues:
        where = f"{issue.get('file')}:{issue.get('line') or '-'}"
        print(f"  {where}: {issue.get('code')}: {issue.get('message')}", file=sys.stderr)
    if as_json:
        body = {"error": exc.code, "detail": exc.detail, "issues": exc.issues}
        print(json.dumps(body, indent=2, ensure_ascii=False))
    return USAGE


# --- audit replay ------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not service_database_exists(settings.database_url):
        raise CliError(f"no service database at {settings.database_url}")
    from adapters.sql import SqlStore

    store = SqlStore(settings.database_url)
    try:
        store.migrate()
        archive = store.policy_archive()

        def evaluator_for(policy_digest: str, compliance_digest: str) -> Evaluator:
            version = archive.get(policy_digest, compliance_digest)
            if version is None:
                raise LookupError("the policy version is not kept in the store")
            try:
                return Evaluator(load_version(version))
            except VersionUnusable as exc:
                raise LookupError(f"the kept policy version {exc}") from exc

        report = replay_decisions(store.audit_records(), evaluator_for)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(_describe_replay(report))
    return OK if report.ok else FAILED


def _describe_replay(report: DecisionReplay) -> str:
    head = (
        f"{report.replayed} recorded decisions judged again under {report.versions} policy versions"
    )
    lines = []
    if report.ok:
        lines.append(f"decision replay OK: {head}; every verdict reproduced")
    else:
        lines.append(f"decision replay DIFFERS: {head}; {len(report.findings)} findings")
        lines += [f"  {finding.describe()}" for finding in report.findings]
    if report.not_judged:
        lines.append(
            f"{report.not_judged} order records keep no judged_on (an order's later records:"
            " the broker's answers, fills, cancels; refused requests, retries, orders blocked"
            " before the policies ran, records older than judged_on): not replayed"
        )
    return "\n".join(lines)


# --- shadow ------------------------------------------------------------------------------


def _shadow(args: argparse.Namespace) -> int:
    import httpx

    url = (args.url or os.environ.get("APEX_URL") or DEFAULT_URL).rstrip("/")
    token = _token(args.token_file)
    headers = {"Authorization": f"Bearer {token}"}
    route = f"{url}/v1/policies/shadow"
    try:
        with httpx.Client(timeout=60.0, headers=headers) as client:
            if args.drop:
                answer = client.delete(route)
            elif args.directory is not None:
                answer = client.post(route, json=_read_set(Path(args.directory)))
            else:
                answer = client.get(route)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the service at {url}: {exc}") from None
    try:
        data = answer.json()
    except ValueError:
        data = {"detail": answer.text[:200]}
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    if answer.status_code != 200:
        code = data.get("code", "error") if isinstance(data, dict) else "error"
        detail = data.get("detail", "") if isinstance(data, dict) else ""
        print(f"apex-oms: {answer.status_code} {code}: {detail}", file=sys.stderr)
        for issue in data.get("issues") or [] if isinstance(data, dict) else []:
            where = f"{issue.get('file')}:{issue.get('line') or '-'}"
            print(f"  {where}: {issue.get('code')}: {issue.get('message')}", file=sys.stderr)
        return USAGE if answer.status_code in (400, 404, 409, 413, 422) else FAILED
    if not args.json:
        print(_describe_shadow(data, dropped=args.drop))
    return OK


def _token(file: str | None) -> str:
    if file is not None:
        try:
            return Path(file).read_text("utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read the token file {file}: {exc}") from None
    token = os.environ.get("APEX_TOKEN", "").strip()
    if not token:
        raise CliError("a compliance token is needed: set APEX_TOKEN or pass --token-file")
    return token


def _read_set(directory: Path) -> dict[str, Any]:
    """The set as the route takes it: each rule file's text, compliance.yaml's."""
    if not directory.is_dir():
        raise CliError(f"{directory}: not a policy directory")
    try:
        files = {path.name: path.read_text("utf-8") for path in rule_files(directory)}
        compliance = (directory / COMPLIANCE_FILE).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the policy set {directory}: {exc}") from None
    return {"files": files, "compliance": compliance}


def _describe_shadow(data: dict[str, Any], *, dropped: bool) -> str:
    shadow = data.get("shadow")
    bound = f"shadow sets compiled: {data.get('loads')} of at most {data.get('limit')}"
    if shadow is None:
        return f"no shadow set is loaded ({bound})"
    head = "dropped" if dropped else "shadow"
    lines = [
        f"{head}: {shadow['policy_digest']} ({shadow['rules']} rules), loaded"
        f" {shadow['loaded_at']} by {shadow['loaded_by']}",
        f"judged {shadow['judged']}, differences {shadow['differences']},"
        f" dropped {shadow['dropped']}, errors {shadow['errors']}, queued {shadow['queued']}",
        bound,
    ]
    differences = data.get("differences") or []
    if differences:
        rows = [
            [str(d.get("order_id")), str(d.get("from")), str(d.get("to")),
             ", ".join(d.get("rules") or []), str(d.get("decided_at"))]
            for d in differences
        ]  # fmt: skip
        lines.append("\n" + table(["order", "enforced", "shadow", "rules", "decided at"], rows))
    return "\n".join(lines)

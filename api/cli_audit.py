"""`apex-oms audit verify|export|pubkey|checkpoint|replay`: the audit chain, its
signed checkpoints and the service's public key (docs/audit.md); `replay` judges
every recorded decision again (api/cli_whatif.py).

`verify` exits 0 when everything verified, 1 on a finding, 2 on unusable input
(an unreadable export, checkpoint or key file)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.audit import ChainReport
from engine.audit_replay import ServiceKeys, verify_export, verify_store
from engine.ports import CHECKPOINT_SETTING
from engine.signing.keys import KeyFileError, key_id, load_public_pem, public_pem

from .runtime import Runtime
from .service_key import load_service_key, service_key_path
from .settings import Settings

__all__ = ["add_audit_actions"]

OK, FAILED, USAGE = 0, 1, 2


def add_audit_actions(actions: Any, runtime: Callable[[], Runtime]) -> None:
    """Register the audit actions; `runtime` opens the service's store."""

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + "."
        )
        return parser

    verify = action(
        "verify",
        "verify the chain, its checkpoints, and the stored head, orders and positions against it",
    )
    verify.add_argument("--json", action="store_true", help="print the report as an object")
    verify.add_argument(
        "--export",
        metavar="FILE",
        help="verify an export file (JSON Lines) instead, with no database: links, hashes "
        "and checkpoints",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="a checkpoint obtained separately (`audit checkpoint`): the chain must reach "
        "its sequence with its hash",
    )
    verify.add_argument(
        "--service-key",
        metavar="PEM",
        action="append",
        help="the service's public key (`audit pubkey`; repeat for more); default: the "
        "key in $APEX_HOME/private",
    )
    verify.set_defaults(handler=lambda args: _verify(args, runtime))

    export = action("export", "write the chain as JSON Lines, oldest record first")
    export.add_argument("--output", "-o", default="-", help="file (default: standard output)")
    export.set_defaults(handler=lambda args: _export(args, runtime))

    pubkey = action("pubkey", "print the service's public key (PEM), which signs checkpoints")
    pubkey.add_argument("--json", action="store_true", help="an object: keyid, public_key_pem")
    pubkey.set_defaults(handler=_pubkey)

    checkpoint = action("checkpoint", "print the latest signed checkpoint as JSON")
    checkpoint.set_defaults(handler=lambda args: _checkpoint(runtime))

    from .cli_whatif import add_replay_action  # here: cli_whatif reads cli_service

    add_replay_action(action)


def _verify(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    try:
        keys = _service_keys(args.service_key)
        given = _read_checkpoint(args.checkpoint) if args.checkpoint else None
    except _Unusable as exc:
        print(f"apex-oms: {exc}", file=sys.stderr)
        return USAGE
    if args.export is not None:
        try:
            with open(args.export, encoding="utf-8") as lines:
                report = verify_export(lines, keys, given)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"apex-oms: cannot read the export {args.export}: {exc}", file=sys.stderr)
            return USAGE
    else:
        report = verify_store(runtime().store, keys, given)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report, exported=args.export is not None, given=given is not None)
    return OK if report.ok else FAILED


class _Unusable(Exception):
    pass


def _service_keys(files: list[str] | None) -> ServiceKeys | None:
    """The given public keys, else the local service key; None when there is none."""
    try:
        if files:
            keys = [load_public_pem(Path(name)) for name in files]
        else:
            home = Settings.from_env().home
            local = load_service_key(home)
            if local is None:
                return None
            keys = [local]
    except KeyFileError as exc:
        raise _Unusable(f"service key: {exc}") from None
    return {key_id(key): key for key in keys}


def _read_checkpoint(name: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(name).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _Unusable(f"cannot read the checkpoint {name}: {exc}") from None
    if not isinstance(value, dict):
        raise _Unusable(f"the checkpoint {name}: want a JSON object")
    return value


def _print_report(report: ChainReport, *, exported: bool, given: bool) -> None:
    broken = report.first_break
    if broken is not None:
        print(
            f"audit chain BROKEN at record {broken.position} "
            f"(order {broken.order_id or '-'}): {broken.reason}"
        )
    elif report.findings:
        against = "its checkpoints" if exported else "the store"
        print(f"audit chain DIFFERS from {against}: {len(report.findings)} findings")
        for finding in report.findings:
            print(f"  {finding.describe()}")
    else:
        print(f"audit chain OK: {report.records} records, head {report.head}")
        if report.checkpoints and not report.notes:
            print(f"{report.checkpoints} signed checkpoints verified")
    for note in report.notes:
        print(f"warning: {note}")
    if given and report.ok:
        print("the chain reaches the given checkpoint and agrees with it")
    if exported:
        if not given:
            print(
                "links and hashes only: an export has no stored head, so a deleted tail cannot show"
            )
        return
    if report.ok:
        print("the stored head, checkpoints, orders and positions match the chain")
    elif not report.rows_compared:
        print("the stored head, orders and positions not compared: the chain is broken")


def _export(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    store = runtime().store
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    count = 0
    try:
        for record in store.audit_records():
            out.write(
                json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
            )
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output != "-":
        print(f"exported {count} records to {args.output}", file=sys.stderr)
    return OK


def _pubkey(args: argparse.Namespace) -> int:
    home = Settings.from_env().home
    try:
        key = load_service_key(home)
    except KeyFileError as exc:
        print(f"apex-oms: service key: {exc}", file=sys.stderr)
        return USAGE
    if key is None:
        print(
            f"apex-oms: no service key yet ({service_key_path(home)}): "
            "`apex-oms serve` creates it on its first start",
            file=sys.stderr,
        )
        return FAILED
    pem = public_pem(key).decode("ascii")
    if args.json:
        print(json.dumps({"keyid": key_id(key), "public_key_pem": pem}, indent=2))
    else:
        print(pem, end="")
    return OK


def _checkpoint(runtime: Callable[[], Runtime]) -> int:
    latest = runtime().store.setting(CHECKPOINT_SETTING)
    if latest is None:
        print(
            "apex-oms: no checkpoint yet: the service signs one once records are appended",
            file=sys.stderr,
        )
        return FAILED
    print(json.dumps(latest, indent=2, sort_keys=True, ensure_ascii=False))
    return OK

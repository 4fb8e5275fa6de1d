"""`apex-oms compliance sign|verify|pin`: signatures over the compliance
configuration (`DIR/compliance.yaml` and `DIR/compliance.sig.json`, SPEC
section 12), judged against the trust file in `APEX_KEYS` (default ./keys).

Exit codes: `verify` 0 valid, 1 invalid, 2 unusable input (a malformed
signature, key, trust or configuration file); `sign` and `pin` 0 done, 2
unusable input.

`verify` against a data directory whose service database exists judges the
version against the highest one the service accepted (rollback) and appends
its verdict to the audit chain (a `verification` record, trigger `cli`);
`--offline`, or a judgement at another instant (`--at`), reads and writes no
store. Nothing here judges orders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.sql import SqlStore
from engine import PolicyError, load_policies
from engine.clock import parse_utc
from engine.errors import StoreUnavailable
from engine.gateway.compliance import recorded
from engine.policy.loader import COMPLIANCE_FILE, rules_digest
from engine.signing import KeyFileError, Trust, TrustFileError, key_id, load_private_pem, load_trust
from engine.signing.pin import PinError, pin_policy_digest
from engine.signing.standing import Standing, no_signers, standing_of
from engine.signing.verify import (
    PayloadError,
    SigFileError,
    VerifyReport,
    dump_sig_file,
    pinned_digest,
    sign,
    verify,
)

from ._table import table
from .cli_service import CLI_ACTOR, CliError, service_database_exists
from .key_source import keys_dir
from .settings import Settings

__all__ = ["SIG_FILE", "add_compliance_parser"]

OK, INVALID, USAGE = 0, 1, 2
SIG_FILE = "compliance.sig.json"


def add_compliance_parser(commands: Any, default_dir: str) -> None:
    """Register `compliance` and its actions on the top-level subparsers."""
    compliance = commands.add_parser(
        "compliance",
        help="sign, verify or pin the compliance configuration",
        description="Sign and verify the compliance configuration (compliance.yaml, its "
        "signatures in compliance.sig.json) against the trust file in $APEX_KEYS "
        "(default ./keys), and pin the policy digest it approves.",
    )
    actions = compliance.add_subparsers(metavar="ACTION", title="actions", required=True)

    def directory(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "directory",
            nargs="?",
            default=default_dir,
            metavar="DIR",
            help=f"the policy directory (default: {default_dir})",
        )

    sign_ = actions.add_parser(
        "sign",
        help="add one signature (refreshes the payload from compliance.yaml)",
        description="Sign DIR/compliance.yaml with a private key: the payload in "
        "DIR/compliance.sig.json is refreshed from the YAML, and signatures over an "
        "older payload are dropped (and named). Exit 0 signed, 2 unusable input.",
    )
    sign_.add_argument("--key", required=True, metavar="PRIVATE_PEM", help="the private key")
    sign_.add_argument(
        "--signer",
        metavar="NAME",
        help="the name recorded with the signature (default: the key's name in the trust "
        "file, else the key file's name)",
    )
    sign_.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="the environment variable holding the private key's passphrase",
    )
    directory(sign_)
    sign_.set_defaults(handler=_sign)

    verify_ = actions.add_parser(
        "verify",
        help="check the signatures, threshold, expiry and policy digest",
        description="Verify DIR/compliance.sig.json over DIR/compliance.yaml against the "
        "trust file, and the configuration's expiry and policy digest against the rule "
        "files in DIR. Exit 0 valid, 1 invalid, 2 unusable input.",
    )
    verify_.add_argument("--json", action="store_true", help="print the report as JSON")
    verify_.add_argument(
        "--at",
        metavar="ISO-TIME",
        help="judge expiry at this time (default: now; a judgement at another time is not "
        "recorded)",
    )
    verify_.add_argument(
        "--offline",
        action="store_true",
        help="do not read the service's accepted version nor record the verification in "
        "its audit chain",
    )
    directory(verify_)
    verify_.set_defaults(handler=_verify)

    pin = actions.add_parser(
        "pin",
        help="write the loaded rules' policy digest into compliance.yaml",
        description="Set policy_digest in DIR/compliance.yaml to the digest of the rule "
        "files in DIR (one line changes; comments and order stay). Signatures over the "
        "old file no longer match: sign again. Exit 0 done, 2 unusable input.",
    )
    directory(pin)
    pin.set_defaults(handler=_pin)


# --- sign -----------------------------------------------------------------------------


def _sign(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    yaml_bytes = _read_bytes(directory / COMPLIANCE_FILE)
    sig_path = directory / SIG_FILE
    existing = _read_sig_file(sig_path)
    try:
        private_key = load_private_pem(Path(args.key), _passphrase(args.passphrase_env))
    except KeyFileError as exc:
        raise CliError(f"{exc.path}: {exc.code}: {exc.detail}", USAGE) from None
    keyid = key_id(private_key.public_key())
    trust = _trust_or_none()
    signer = args.signer or _signer_name(trust, keyid, Path(args.key))
    _warn_before_signing(directory, yaml_bytes, trust, keyid, signer)
    try:
        new, dropped = sign(existing, yaml_bytes, private_key, signer, _now())
    except PayloadError as exc:
        raise CliError(f"{directory / COMPLIANCE_FILE}: {exc}", USAGE) from None
    except SigFileError as exc:
        raise CliError(
            f"{sig_path}: sig_file_malformed: {exc}; fix it, or remove it to start over",
            USAGE,
        ) from None
    _write_atomic(sig_path, dump_sig_file(new).encode("utf-8"))
    payload = new["payload"]
    print(
        f"signed {directory / COMPLIANCE_FILE} (version {payload['version']}, expires "
        f"{payload['expires']}) as {signer}, key {keyid}"
    )
    if dropped:
        names = ", ".join(f"{d.get('signer')} ({d.get('keyid')})" for d in dropped)
        print(
            f"compliance.yaml changed since the last signing: dropped {len(dropped)} "
            f"signature(s) over the old payload: {names}"
        )
    print(f"{sig_path}: {len(new['signatures'])} signature(s)")
    return OK


def _signer_name(trust: Trust | None, keyid: str, key_path: Path) -> str:
    signer = trust.signer(keyid) if trust is not None else None
    return signer.name if signer is not None else key_path.stem


def _warn_before_signing(
    directory: Path, yaml_bytes: bytes, trust: Trust | None, keyid: str, signer: str
) -> None:
    """Signing is never refused for these; a signer should still know at once."""
    if trust is not None:
        known = trust.signer(keyid)
        if trust.status_of(keyid) == "revoked":
            _warn(f"key {keyid} is revoked in the trust file: this signature will not count")
        elif known is None:
            _warn(f"key {keyid} is not in the trust file: this signature will not count")
        elif known.name != signer:
            _warn(f"key {keyid} is {known.name!r} in the trust file, signing as {signer!r}")
    pinned = pinned_digest(yaml_bytes)
    loaded = rules_digest(directory)
    if pinned != loaded:
        _warn(
            f"policy digest mismatch (want: {pinned or 'none pinned'}, got: {loaded}); "
            f"run `apex-oms compliance pin {directory}` and sign again"
        )


def _passphrase(variable: str | None) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise CliError(f"--passphrase-env {variable}: the variable is unset or empty", USAGE)
    return value.encode("utf-8")


def _trust_or_none() -> Trust | None:
    try:
        return load_trust(keys_dir())
    except (KeyFileError, TrustFileError) as exc:
        _warn(f"the trust file cannot be used ({exc}); signing anyway")
        return None


# --- verify ---------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    now = _at(args.at)
    yaml_bytes = _read_bytes(directory / COMPLIANCE_FILE)
    sig_path = directory / SIG_FILE
    sig_text = _read_bytes(sig_path) if sig_path.exists() else None
    keys = keys_dir()
    trust: Trust | KeyFileError | TrustFileError
    try:
        trust = load_trust(keys)
    except (KeyFileError, TrustFileError) as exc:
        trust = exc
    loaded_digest = rules_digest(directory)
    reports: list[VerifyReport] = []

    def verdict(accepted: int | None, at: datetime) -> Standing:
        report = verify(yaml_bytes, sig_text, trust, at, accepted, loaded_digest)
        reports.append(report)
        return standing_of(report, "signed", loaded_digest, None, sig_text, None)

    store = None if args.offline or args.at is not None else _service_store()
    recorded_in: str | None = None
    if store is None:
        verdict(None, now)
    else:
        try:
            standing = recorded(store, now, CLI_ACTOR, "cli", verdict)
            recorded_in = f"{store.shown_url} (record {standing.record.get('hash')})"
        finally:
            store.close()
    report = reports[-1]
    development = no_signers(keys)
    if args.json:
        body = report.to_json()
        body["development"] = development
        body["recorded_in"] = recorded_in
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print(_describe(report, directory))
        if development:
            print(
                f"development: {keys / 'trust.yaml'} names no signer; outside live the service "
                "runs this configuration under the development trust root of its data "
                "directory (never valid for live)"
            )
        if recorded_in is not None:
            print(f"recorded in the audit chain of {recorded_in}")
    return report.exit_code


def _service_store() -> SqlStore | None:
    """The service's store when its database exists (a SQLite file not yet made
    means no service has run here: nothing to judge a rollback against)."""
    url = Settings.from_env().database_url
    if not service_database_exists(url):
        return None
    try:
        store = SqlStore(url)
        store.migrate()
    except StoreUnavailable as exc:
        raise CliError(f"{exc}; use --offline to verify without the service's store") from None
    return store


def _describe(report: VerifyReport, directory: Path) -> str:
    lines = [
        f"configuration: {directory / COMPLIANCE_FILE}",
        f"  version {report.version}, expires {report.expires}",
        f"  config sha256 {report.config_sha256}",
        f"  policy digest {report.policy_digest or 'none pinned'}",
    ]
    if report.signatures:
        rows = [
            [str(s.index), s.signer or "-", s.name or "-", s.keyid or "-", s.result]
            for s in report.signatures
        ]
        lines += ["", table(["#", "signer", "trusted as", "keyid", "result"], rows)]
    if report.findings:
        rows = [[f.code, f.keyid or "-", f.message] for f in report.findings]
        lines += ["", table(["code", "keyid", "message"], rows)]
    counted = f"{report.threshold} of {report.trusted} needed, {len(report.valid_signers)} valid"
    signers = f" ({', '.join(report.valid_signers)})" if report.valid_signers else ""
    if report.ok:
        verdict = f"VALID: {counted}{signers}"
    elif report.exit_code == USAGE:
        verdict = "UNUSABLE INPUT: " + ", ".join(sorted({f.code for f in report.findings}))
    else:
        failing = [f.code for f in report.findings]
        verdict = "INVALID: " + ", ".join(dict.fromkeys(failing))
    return "\n".join([*lines, "", verdict])


def _at(text: str | None) -> datetime:
    if text is None:
        return _now()
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise CliError(f"--at {text}: {exc}", USAGE) from None


# --- pin ------------------------------------------------------------------------------


def _pin(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    path = directory / COMPLIANCE_FILE
    try:
        digest = load_policies(directory).policies.policy_digest
    except PolicyError as exc:
        raise CliError(f"the policy set is invalid; nothing pinned:\n{exc}", USAGE) from None
    before = _read_bytes(path)
    try:
        after = pin_policy_digest(before, digest)
    except PinError as exc:
        raise CliError(f"{path}: {exc}", USAGE) from None
    if after == before:
        print(f"{path}: policy_digest already {digest}")
        return OK
    _write_atomic(path, after)
    print(f"{path}: policy_digest {digest}")
    signed = _read_sig_file(directory / SIG_FILE, quiet=True)
    if signed:
        print(
            f"compliance.yaml changed: the signatures in {directory / SIG_FILE} sign the old "
            f"file and no longer count; sign it again (apex-oms compliance sign)"
        )
    return OK


# --- files ----------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", USAGE) from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc}", USAGE) from None


def _read_sig_file(path: Path, quiet: bool = False) -> Mapping[str, Any] | None:
    """The signature file as JSON, None when absent. An unreadable one stops `sign`
    (it is never overwritten unseen); `quiet` only asks whether there is one."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        if quiet:
            return {"unreadable": True}
        raise CliError(
            f"{path}: sig_file_malformed: not JSON ({exc}); fix it, or remove it to start over",
            USAGE,
        ) from None
    if not isinstance(data, dict):
        if quiet:
            return {"unreadable": True}
        raise CliError(f"{path}: sig_file_malformed: not a JSON object", USAGE)
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    """A temporary file beside `path`, then os.replace: a reader (the service, a
    verifier) sees the old file or the new one, never half. The mode is kept."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise CliError(f"{path}: cannot write: {exc}", USAGE) from None
        raise


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _warn(message: str) -> None:
    print(f"apex-oms: warning: {message}", file=sys.stderr)

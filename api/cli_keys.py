"""`apex-oms keys generate|threshold|revoke|list`: the compliance officers'
keys and the trust file (`$APEX_KEYS/trust.yaml`, see docs/compliance.md).

Exit codes: 0 done, 2 usage or an unusable key, trust file or argument. Every
change to the trust file is made under a lock on the keys directory and written
atomically, so two officers at once never lose a change.

The threshold can never be set above the number of trusted signers, so a
k-of-n setup is: generate the n keys first, then `keys threshold k`. Revoking
is never refused, even when it leaves fewer trusted signers than the
threshold: verification then fails (fail closed) until the threshold is
lowered or a key is added, and `keys list` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from engine.errors import ApexError
from engine.signing import Signer, Trust, generate, load_trust, locked, save_trust, trust_path

from ._table import table
from .cli_service import CliError
from .key_source import keys_dir, private_dir

__all__ = ["add_keys_parser"]

OK, USAGE = 0, 2
_KEYID = re.compile(r"[0-9a-f]{64}")


def add_keys_parser(commands: Any) -> None:
    """Register `keys` and its four actions on the top-level subparsers."""
    keys = commands.add_parser(
        "keys",
        help="compliance signers' keys and the trust threshold",
        description="Manage compliance signers' Ed25519 keys and the trust file "
        "($APEX_KEYS/trust.yaml, default ./keys). Exit 0 done, 2 usage or unusable input.",
    )
    actions = keys.add_subparsers(metavar="ACTION", title="actions", required=True)

    gen = actions.add_parser(
        "generate",
        help="a new signer key pair, added to the trust file; prints its key id",
        description="Write a new Ed25519 private key to $APEX_HOME/private/NAME.pem (mode "
        "0600) and its public key to $APEX_KEYS/NAME.pem, add the signer to the trust "
        "file, and print the key id alone on standard output.",
    )
    gen.add_argument("--name", required=True, help="the signer's name: 1-64 of A-Za-z0-9._-")
    gen.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the private key with the passphrase held in environment variable VAR",
    )
    gen.set_defaults(handler=_generate)

    threshold = actions.add_parser(
        "threshold",
        help="set k, the number of trusted signatures a configuration needs",
        description="Set the threshold k (1 <= k <= the number of trusted signers).",
    )
    threshold.add_argument("k", type=int, metavar="K", help="signatures needed")
    threshold.set_defaults(handler=_threshold)

    revoke = actions.add_parser(
        "revoke",
        help="revoke a signer's key: its signatures stop counting",
        description="Add a signer's key id to the revoked list; its signatures stop counting "
        "at the next verification.",
    )
    revoke.add_argument("keyid", metavar="KEYID", help="the key id (64 hex digits)")
    revoke.set_defaults(handler=_revoke)

    list_ = actions.add_parser(
        "list",
        help="every signer with its status, and the threshold",
        description="List every signer with its key id and status (trusted or revoked).",
    )
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(handler=_list)


def _generate(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.passphrase_env)
    directory, private = keys_dir(), private_dir()
    with _errors(), locked(directory):
        trust = load_trust(directory, check_threshold=False)
        if any(s.name == args.name for s in trust.signers):
            raise CliError(
                f"{trust_path(directory)}: a signer named {args.name!r} is already listed "
                f"(trusted or revoked); choose another name",
                USAGE,
            )
        keyid, private_path, public_path = generate(args.name, private, directory, passphrase)
        trust = trust.with_signer(Signer(name=args.name, keyid=keyid, pem=public_path.name))
        save_trust(directory, trust)
    print(keyid)
    print(
        f"apex-oms: private key {private_path} (mode 0600, "
        f"{'encrypted' if passphrase else 'NOT encrypted: use --passphrase-env'}); "
        f"public key {public_path}; {len(trust.trusted())} trusted signer(s), "
        f"threshold {trust.threshold}",
        file=sys.stderr,
    )
    return OK


def _threshold(args: argparse.Namespace) -> int:
    directory = keys_dir()
    with _errors(), locked(directory):
        trust = load_trust(directory, check_threshold=False)
        wanted = trust.with_threshold(args.k)
        problem = wanted.threshold_problem()
        if problem is not None:
            hint = (
                "; generate the keys first (keys generate --name NAME), then set the threshold"
                if args.k > 1
                else ""
            )
            raise CliError(f"{trust_path(directory)}: {problem}{hint}", USAGE)
        save_trust(directory, wanted)
    print(f"threshold {args.k} of {len(wanted.trusted())} trusted signer(s)", file=sys.stderr)
    return OK


def _revoke(args: argparse.Namespace) -> int:
    keyid = args.keyid.strip().lower()
    if not _KEYID.fullmatch(keyid):
        raise CliError(f"KEYID: want 64 hex digits, got {args.keyid[:80]!r}", USAGE)
    directory = keys_dir()
    with _errors(), locked(directory):
        trust = load_trust(directory, check_threshold=False)
        signer = trust.signer(keyid)
        if signer is None:
            raise CliError(
                f"{trust_path(directory)}: no signer has key id {keyid} (keys list shows them)",
                USAGE,
            )
        if keyid in trust.revoked:
            print(f"{signer.name} ({keyid}) was already revoked", file=sys.stderr)
            return OK
        trust = trust.with_revoked(keyid)
        save_trust(directory, trust)
    print(f"revoked {signer.name} ({keyid})", file=sys.stderr)
    _warn_threshold(trust, directory)
    return OK


def _list(args: argparse.Namespace) -> int:
    directory = keys_dir()
    with _errors():
        trust = load_trust(directory, check_threshold=False)
    signers = [
        {"name": s.name, "keyid": s.keyid, "status": trust.status_of(s.keyid)}
        for s in trust.signers
    ]
    if args.json:
        print(json.dumps({"threshold": trust.threshold, "signers": signers}, indent=2))
    else:
        rows = [[s["name"], s["status"], s["keyid"]] for s in signers]
        print(table(["name", "status", "keyid"], rows))
        print(
            f"\nthreshold {trust.threshold} of {len(trust.trusted())} trusted signer(s) "
            f"({trust_path(directory)})"
        )
    _warn_threshold(trust, directory)
    return OK


def _warn_threshold(trust: Trust, directory: Path) -> None:
    """Say when no set of trusted signers can meet the threshold: every
    verification fails until it is fixed."""
    problem = trust.threshold_problem()
    if problem is not None and trust.signers:
        print(
            f"apex-oms: warning: {trust_path(directory)}: {problem}; every verification "
            f"fails until then",
            file=sys.stderr,
        )


def _passphrase(variable: str | None) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise CliError(
            f"--passphrase-env {variable}: the variable is unset or empty; set it to the "
            f"passphrase (or drop the option for an unencrypted key)",
            USAGE,
        )
    return value.encode("utf-8")


class _errors:
    """A key or trust file problem as one line naming the file and its code, exit 2."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if isinstance(exc, ApexError):
            raise CliError(str(exc), USAGE) from exc
        if isinstance(exc, OSError):
            raise CliError(f"{exc.filename or 'keys'}: {exc.strerror or exc}", USAGE) from exc

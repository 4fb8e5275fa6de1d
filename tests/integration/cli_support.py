"""What the CLI tests share: a data directory chosen through the environment,
and `main` run in-process with its exit code and output captured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from api.cli import main

__all__ = ["Run", "run_main", "use_home"]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def use_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policies: Path) -> Path:
    """A fresh APEX_HOME with its SQLite database, and the policies to use."""
    home = tmp_path / "home"
    monkeypatch.setenv("APEX_HOME", str(home))
    monkeypatch.setenv("APEX_DATABASE_URL", f"sqlite:///{home / 'apex.db'}")
    monkeypatch.setenv("APEX_POLICIES", str(policies))
    return home


def run_main(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> Run:
    """`apex-oms ARGV` in-process; argparse's exits (--help, --version, a usage
    error) become exit codes like any other."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)

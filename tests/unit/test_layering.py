"""Imports flow one way: `api` uses `engine` and `adapters`; `adapters` use only
what `engine` exports for them; `engine` imports neither, and knows no HTTP
framework or SQL driver. Read from the source, so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# top-level modules a package may not import
FORBIDDEN = {
    "engine": {
        "adapters", "api", "sqlalchemy", "alembic", "psycopg", "sqlite3", "litestar",
        "uvicorn", "httpx", "prometheus_client",
    },
    "adapters": {"api", "litestar", "uvicorn", "prometheus_client"},
}  # fmt: skip


def imports(path: Path) -> set[str]:
    """The top-level modules a file imports (relative imports stay in the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_it_must_not(package: str) -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if imports(path) & FORBIDDEN[package]
    }

    assert offending == {}


def test_imports_when_a_file_imports_a_forbidden_module_then_found(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sqlite3\nfrom adapters.sql import SqlStore\nfrom .x import y\n")

    assert imports(sample) == {"sqlite3", "adapters"}

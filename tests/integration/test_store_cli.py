"""The database URL as a new user writes it, and the CLI when the database is
missing or unreachable: `postgres://` and `postgresql://` work (read with psycopg
3), and a database that cannot be reached is one line on standard error naming
it (password hidden) and exit 2, for every command, `serve` included. The CLI
runs as a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters.sql import SqlStore, mask_url
from adapters.sql._dialect import dialect_for
from engine.errors import InvalidArgument, StoreUnavailable
from tests.conftest import _Databases

ROOT = Path(__file__).resolve().parents[2]
USAGE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(url: str, home: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APEX_HOME": str(home),
        "APEX_DATABASE_URL": url,
        "APEX_POLICIES": str(ROOT / "policies"),
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def pg_database(_pg_databases: _Databases) -> Iterator[str]:
    """A fresh database, as a URL without its scheme: `postgres@127.0.0.1:5432/NAME`."""
    name = _pg_databases.take()
    try:
        yield f"postgres@127.0.0.1:5432/{name}"
    finally:
        _pg_databases.give_back(name)


# --- the accepted URL forms -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect", "driver"),
    [
        ("postgres://u:p@h:5432/d", "postgresql", "postgresql+psycopg"),
        ("postgresql://u@h/d", "postgresql", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/d", "postgresql", "postgresql+psycopg"),
        ("sqlite:///tmp/apex.db", "sqlite", "sqlite"),
        ("sqlite+pysqlite:///tmp/apex.db", "sqlite", "sqlite+pysqlite"),
    ],
    ids=["postgres", "postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite"],
)
def test_dialect_for_when_an_accepted_scheme_then_its_dialect_and_installed_driver(
    url: str, dialect: str, driver: str
) -> None:
    found, parsed = dialect_for(url)

    assert (found.name, parsed.drivername) == (dialect, driver)
    assert parsed.host == make_url(url).host and parsed.database == make_url(url).database


@pytest.mark.parametrize(
    "url",
    ["mysql://u:s3cret@h/d", "postgresql+psycopg2://u:s3cret@h/d", "not a url s3cret"],
    ids=["mysql", "psycopg2", "garbage"],
)
def test_sql_store_when_an_unsupported_url_then_invalid_argument_naming_the_forms(
    url: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        SqlStore(url)

    assert "postgresql://" in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:s3cret@127.0.0.1:5999/x",
            "postgresql://postgres:***@127.0.0.1:5999/x",
        ),
        ("postgres://postgres@127.0.0.1:5999/x", "postgres://postgres@127.0.0.1:5999/x"),
        ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
    ],
    ids=["password", "no-password", "sqlite"],
)
def test_mask_url_when_shown_then_as_given_with_the_password_hidden(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_cli_when_the_url_is_bare_postgres_or_postgresql_then_commands_work(
    scheme: str, pg_database: str, tmp_path: Path
) -> None:
    url = f"{scheme}://{pg_database}"

    changed = _cli(url, tmp_path, "mode", "set", "simulation", "--reason", "url test")
    shown = _cli(url, tmp_path, "mode", "show", "--json")

    assert changed.returncode == 0, changed.stderr
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["mode"] == "simulation"


# --- a database that cannot be reached ----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("mode", "show"),
        ("orders", "list"),
        ("audit", "verify"),
        ("tokens", "list"),
        ("serve", "--port", "0"),
    ],
    ids=["mode", "orders", "audit", "tokens", "serve"],
)
def test_cli_when_nothing_listens_at_the_url_then_one_line_naming_it_and_exit_2(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/x"

    done = _cli(url, tmp_path, *argv)

    assert done.returncode == USAGE
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"apex-oms: cannot reach the database at postgresql://postgres:***@127.0.0.1:{port}/x: "
    )
    assert "Connection refused" in lines[0] and "s3cret" not in done.stderr


def test_cli_when_the_database_does_not_exist_then_one_line_saying_so_and_exit_2(
    tmp_path: Path,
) -> None:
    url = "postgres://postgres@127.0.0.1:5432/apex_no_such_database"

    done = _cli(url, tmp_path, "mode", "show")

    assert done.returncode == USAGE
    assert done.stderr.splitlines() == [
        "apex-oms: cannot reach the database at postgres://postgres@127.0.0.1:5432/"
        'apex_no_such_database: connection failed: connection to server at "127.0.0.1",'
        ' port 5432 failed: FATAL:  database "apex_no_such_database" does not exist'
    ]


def test_cli_when_the_sqlite_file_cannot_be_opened_then_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'apex.db'}"

    done = _cli(url, tmp_path / "home", "orders", "list")

    assert done.returncode == USAGE
    assert done.stderr.splitlines() == [
        f"apex-oms: cannot reach the database at {url}: unable to open database file"
    ]


def test_cli_when_the_url_scheme_is_unsupported_then_one_line_naming_the_forms_and_exit_2(
    tmp_path: Path,
) -> None:
    done = _cli("mysql://user:pw@127.0.0.1/apex", tmp_path, "mode", "show")

    assert done.returncode == USAGE
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("apex-oms: unsupported database URL scheme")
    assert "postgres://" in lines[0] and "pw" not in lines[0]


def test_sql_store_when_unreachable_then_migrate_raises_store_unavailable_naming_where() -> None:
    port = _free_port()
    store = SqlStore(f"postgresql://postgres:s3cret@127.0.0.1:{port}/x")
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.migrate()
    finally:
        store.close()

    assert str(raised.value).startswith(
        f"cannot reach the database at postgresql://postgres:***@127.0.0.1:{port}/x: "
    )

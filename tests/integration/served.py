"""`apex-oms serve` in a process of its own, for the tests that need the real
server (uvicorn, our protocol, our middleware): its URL, its first admin token,
its standard error (the JSON logs) and the CLI on the same store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, copy_policies

__all__ = ["Served", "served"]

START_TIMEOUT_S = 60


@dataclass
class Served:
    url: str
    port: int
    token: str
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log_text(self) -> str:
        return (self.home / "stderr.log").read_text() + (self.home / "stdout.log").read_text()

    def log_lines(self, logger: str) -> list[dict[str, Any]]:
        """The JSON lines of `logger` on standard error so far."""
        lines = []
        for line in (self.home / "stderr.log").read_text().splitlines():
            with suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("logger") == logger:
                    lines.append(entry)
        return lines

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """A fresh service on SQLite, with the default policies, `serve` flags `args`
    and extra environment `env`; stopped (SIGTERM) on exit."""
    home = tmp_path / "home"
    home.mkdir(parents=True)
    environment = {
        **os.environ,
        "APEX_HOME": str(home),
        "APEX_DATABASE_URL": f"sqlite:///{home / 'apex.db'}",
        "APEX_POLICIES": str(copy_policies(tmp_path / "policies", lasting=True)),
        "APEX_KEYS": str(tmp_path / "keys"),  # none: the development root stands in
        **(env or {}),
    }
    port = _free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port), *args]
    with (home / "stdout.log").open("wb") as out, (home / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (home / "stderr.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        token = (home / "admin-token").read_text().strip()
        yield Served(url, port, token, environment, home, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

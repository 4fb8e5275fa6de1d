"""Connection limits (docs/operations.md, "Connections"), against the real server:
idle and slow (slowloris) connections fill the cap; the ones beyond it get a
503 `over_capacity` and are closed; the idle and slow ones are closed after
their timeouts; and a fresh client then gets `/healthz` and an authenticated
evaluate answered. Timeouts are 2 s here; the bounds asserted are generous."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.server import HEADROOM, Limits, capped
from tests.conftest import ROOT, build_order
from tests.integration.served import Served, served

CAP = 20
TIMEOUT_S = 2
IDLE, SLOW_HEAD, SLOW_BODY = 10, 5, 5  # together: the cap
BEYOND = 5
BOUND_S = 20  # "closed after its timeout": well within this


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Served]:
    env = {"APEX_MAX_CONNECTIONS": str(CAP), "APEX_HEADER_TIMEOUT": str(TIMEOUT_S)}
    flags = ("--keep-alive-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S))
    with served(tmp_path, *flags, env=env) as service:
        yield service


def _connect(service: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=BOUND_S)
    return sock


def _trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send `data` one byte every 0.5 s until it is sent, the server closes, or `stop`."""
    for byte in data:
        if stop.wait(0.5):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:  # closed by the server: what the test waits for
            return


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _answer(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def test_serve_when_idle_and_slow_connections_pass_the_cap_then_the_rest_get_503_and_others_are_served_after_the_timeouts(  # noqa: E501
    service: Served,
) -> None:
    stop = threading.Event()
    idle = [_connect(service) for _ in range(IDLE)]
    slow_head = [_connect(service) for _ in range(SLOW_HEAD)]
    slow_body = [_connect(service) for _ in range(SLOW_BODY)]
    order = json.dumps(build_order("slow-body", datetime.now(UTC))).encode()
    head = (
        f"POST /v1/orders/evaluate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {service.token}\r\ncontent-length: {len(order)}\r\n\r\n"
    ).encode()
    for sock in slow_body:
        sock.sendall(head)  # the head at once, then the body a byte at a time
    senders = [
        threading.Thread(target=_trickle, args=(sock, data, stop), daemon=True)
        for sock, data in [(s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n") for s in slow_head]
        + [(s, order) for s in slow_body]
    ]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    try:
        # beyond the cap: a clean 503 over_capacity, then the server closes
        for _ in range(BEYOND):
            with _connect(service) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                status, headers, body = _answer(_read_to_close(extra))
                assert status == 503
                assert headers[b"connection"] == b"close"
                assert json.loads(body)["code"] == "over_capacity"

        # every idle and slow connection is closed by the server after its timeout
        for sock in idle + slow_body:
            _read_to_close(sock)  # b"" or a reset: closed; a socket timeout fails the test
        for sock in slow_head:
            status, _, body = _answer(_read_to_close(sock))
            assert (status, json.loads(body)["code"]) == (408, "request_timeout")
        assert time.monotonic() - started < BOUND_S

        # a fresh client is served again
        with httpx.Client(base_url=service.url, timeout=BOUND_S) as client:
            assert client.get("/healthz").status_code == 200
            evaluated = client.post(
                "/v1/orders/evaluate",
                json=build_order("fresh-client", datetime.now(UTC)),
                headers=service.auth,
            )
            assert evaluated.status_code == 200, evaluated.text
            assert evaluated.json()["client_order_id"] == "fresh-client"
    finally:
        stop.set()
        for sock in idle + slow_head + slow_body:
            sock.close()
    metrics = httpx.get(f"{service.url}/metrics").text
    assert f"apex_connections_over_capacity_total {float(BEYOND)}" in metrics


def test_serve_when_a_client_keeps_its_connection_then_it_is_served_until_idle(
    service: Served,
) -> None:
    with httpx.Client(base_url=service.url, timeout=BOUND_S) as client:
        for _ in range(3):  # one connection, several requests
            assert client.get("/healthz").status_code == 200
    with _connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        sock.settimeout(BOUND_S)
        # the answer, then the close once the connection has been idle its timeout
        status, _, body = _answer(_read_to_close(sock))
        assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_serve_when_a_client_asks_for_a_websocket_then_it_is_answered_as_plain_http(
    service: Served,
) -> None:
    """The gateway serves no WebSocket: an Upgrade request goes through our own
    protocol (its limits, the access log) and is answered by the route as HTTP."""
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    with _connect(service) as sock:
        sock.sendall(upgrade)
        sock.settimeout(BOUND_S)
        status, _, body = _answer(_read_to_close(sock))
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    deadline = time.monotonic() + BOUND_S
    while not [e for e in service.log_lines("apex.access") if e.get("path") == "/healthz"]:
        assert time.monotonic() < deadline, service.log_text()
        time.sleep(0.05)
    assert "WebSocket" not in service.log_text()


@pytest.mark.parametrize(
    ("asked", "file_limit", "kept"),
    [
        pytest.param(1000, 1024, 1024 - HEADROOM, id="lowered-below-the-file-limit"),
        pytest.param(1000, 65536, 1000, id="kept-when-there-is-room"),
        pytest.param(20, 1024, 20, id="small-cap-kept"),
        pytest.param(1000, 100, 1, id="never-below-one"),
    ],
)
def test_capped_when_the_file_limit_is_low_then_the_cap_leaves_headroom(
    asked: int, file_limit: int, kept: int
) -> None:
    limits = Limits(keep_alive=5, header=10, body=30, max_connections=asked)
    assert capped(limits, file_limit).max_connections == kept


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        pytest.param(["--header-timeout", "0"], {}, "--header-timeout", id="flag"),
        pytest.param([], {"APEX_MAX_CONNECTIONS": "many"}, "APEX_MAX_CONNECTIONS", id="env"),
    ],
)
def test_serve_when_a_limit_is_not_a_positive_number_then_it_refuses_to_start_naming_it(
    tmp_path: Path, argv: list[str], env: dict[str, str], named: str
) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", "1", *argv],
        cwd=ROOT,
        env={**os.environ, "APEX_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert named in refused.stderr
    assert "Traceback" not in refused.stderr

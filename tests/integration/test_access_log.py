"""The access log, the request id and the decision log (docs/operations.md, "Logs"),
against the real server: one JSON access line per request with its keys, no
token anywhere in the logs (401s with a bad token and a token in a query
string included), `X-Request-ID` echoed on every answer and carried by the
order record (in the API and in the audit export), a bad one replaced."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from api.auth import token_id_of
from tests.conftest import build_order
from tests.integration.served import Served, served

KEYS = {"method", "path", "status", "duration_ms", "request_id", "principal"}
GENERATED = re.compile(r"[0-9a-f]{32}")
BAD_TOKEN = "apx_this-is-not-a-token-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("access")) as service:
        yield service


@pytest.fixture(scope="module")
def run(service: Served) -> dict[str, httpx.Response]:
    """One run of requests, each named; every answer kept."""
    answers: dict[str, httpx.Response] = {}
    created = service.cli("tokens", "create", "--role", "auditor")
    assert created.returncode == 0, created.stderr
    auditor = re.findall(r"apx_[A-Za-z0-9_-]+", created.stdout)[0]
    with httpx.Client(base_url=service.url, timeout=30) as client:

        def call(name: str, method: str, path: str, **kwargs: object) -> None:
            answers[name] = client.request(method, path, **kwargs)  # type: ignore[arg-type]

        call("health", "GET", "/healthz", headers={"X-Request-ID": "health-1"})
        call("no_token", "GET", "/v1/orders", headers={"X-Request-ID": "no-token-1"})
        call("bad_token", "GET", "/v1/orders", headers={"Authorization": f"Bearer {BAD_TOKEN}"})
        call("query_token", "GET", f"/v1/orders?token={service.token}&access_token={BAD_TOKEN}")
        call(
            "evaluate",
            "POST",
            "/v1/orders/evaluate",
            json=build_order("access-log-1", datetime.now(UTC)),
            headers={**service.auth, "X-Request-ID": "client-req.42"},
        )
        order_id = answers["evaluate"].json()["order_id"]
        call("order", "GET", f"/v1/orders/{order_id}", headers=service.auth)
        call("bad_id_space", "GET", "/healthz", headers={"X-Request-ID": "two words"})
        call("bad_id_long", "GET", "/healthz", headers={"X-Request-ID": "a" * 129})
        call("bad_id_quote", "GET", "/healthz", headers={"X-Request-ID": 'x"}{'})
        call("longest_id", "GET", "/healthz", headers={"X-Request-ID": "b" * 128})
        call("not_found", "GET", "/nowhere", headers={"X-Request-ID": "nowhere-1"})
        call(
            "refused_role",
            "POST",
            "/v1/omega",
            json={"reason": "not an auditor's to do"},
            headers={"Authorization": f"Bearer {auditor}", "X-Request-ID": "refused-1"},
        )
        call("metrics", "GET", "/metrics")
    return answers


def _id(answer: httpx.Response) -> str:
    return answer.headers["x-request-id"]


def _access_lines(service: Served, run: dict[str, httpx.Response]) -> list[dict[str, object]]:
    """The access lines once every answer of the run has its own: a line is
    written just after its answer is sent, so the last one may lag the client."""
    wanted = {_id(answer) for answer in run.values()}
    deadline = time.monotonic() + 30
    while True:
        lines = service.log_lines("apex.access")
        if wanted <= {line["request_id"] for line in lines} or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_when_requests_are_served_then_each_gets_exactly_one_line_with_its_keys(
    service: Served, run: dict[str, httpx.Response]
) -> None:
    lines = _access_lines(service, run)
    for name, answer in run.items():
        mine = [line for line in lines if line["request_id"] == _id(answer)]
        assert len(mine) == 1, (name, mine)
        line = mine[0]
        assert set(line) >= KEYS
        assert line["method"] == answer.request.method
        assert line["path"] == answer.request.url.path  # never the query string
        assert line["status"] == answer.status_code
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
    by_name = {name: next(x for x in lines if x["request_id"] == _id(a)) for name, a in run.items()}
    # the token's public id, never the token
    assert by_name["evaluate"]["principal"] == token_id_of(service.token)
    assert by_name["order"]["principal"] == token_id_of(service.token)
    refused = run["refused_role"]
    assert refused.status_code == 403
    assert by_name["refused_role"]["principal"] == token_id_of(
        refused.request.headers["authorization"].split()[1]
    )
    for unauthenticated in ("health", "no_token", "bad_token", "query_token", "not_found"):
        assert by_name[unauthenticated]["principal"] is None


def test_access_log_when_tokens_are_sent_then_no_token_appears_in_any_log(
    service: Served, run: dict[str, httpx.Response]
) -> None:
    assert [run[name].status_code for name in ("no_token", "bad_token", "query_token")] == [401] * 3
    _access_lines(service, run)  # every line of the run written
    text = service.log_text()
    assert service.token not in text
    assert BAD_TOKEN not in text
    assert run["refused_role"].request.headers["authorization"].split()[1] not in text
    assert "access_token" not in text  # the query string is never logged
    metrics = run["metrics"].text
    assert "apex_unauthenticated_total 3.0" in metrics


def test_request_id_when_given_then_echoed_and_stored_in_the_record_and_the_export(
    service: Served, run: dict[str, httpx.Response]
) -> None:
    evaluated = run["evaluate"]
    assert evaluated.status_code == 200, evaluated.text
    assert _id(evaluated) == "client-req.42"
    assert evaluated.json()["request_id"] == "client-req.42"
    # the order, read back by another request, still names the one that wrote it
    assert run["order"].json()["request_id"] == "client-req.42"
    assert _id(run["order"]) != "client-req.42"
    exported = service.cli("audit", "export")
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    mine = [r for r in records if r.get("order_id") == evaluated.json()["order_id"]]
    assert [r["request_id"] for r in mine] == ["client-req.42"]
    verified = service.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_request_id_when_echoed_then_every_answer_has_it_errors_and_401s_included(
    run: dict[str, httpx.Response],
) -> None:
    assert _id(run["health"]) == "health-1"
    assert _id(run["no_token"]) == "no-token-1"
    assert _id(run["not_found"]) == "nowhere-1"
    assert run["not_found"].status_code == 404
    assert _id(run["longest_id"]) == "b" * 128
    for name in ("bad_token", "query_token", "order", "metrics"):
        assert GENERATED.fullmatch(_id(run[name])), name


@pytest.mark.parametrize("name", ["bad_id_space", "bad_id_long", "bad_id_quote"])
def test_request_id_when_unsafe_then_a_new_one_is_generated(
    run: dict[str, httpx.Response], name: str
) -> None:
    assert run[name].status_code == 200
    assert GENERATED.fullmatch(_id(run[name]))


def test_decision_log_when_an_order_is_judged_then_one_line_names_it(
    service: Served, run: dict[str, httpx.Response]
) -> None:
    record = run["evaluate"].json()
    lines = [x for x in service.log_lines("apex.decision") if x["request_id"] == "client-req.42"]
    assert len(lines) == 1
    line = lines[0]
    assert line["operation"] == "evaluate"
    assert line["order_id"] == record["order_id"]
    assert line["client_order_id"] == "access-log-1"
    assert line["order_status"] == record["order_status"]
    assert line["triggers"] == record["fail_closed_triggers"]


def test_access_log_when_serving_then_uvicorn_text_access_lines_are_off(
    service: Served, run: dict[str, httpx.Response]
) -> None:
    assert run
    assert service.log_lines("uvicorn.access") == []
    assert '"GET /healthz HTTP/1.1" 200' not in service.log_text()

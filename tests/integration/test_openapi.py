"""The OpenAPI document against the service itself: schemathesis generates
requests for every operation from the document (valid and invalid ones) and
sends them in-process to the ASGI app, with an admin token (admin passes
every guard, so every handler is reached), on SQLite and on PostgreSQL.

It fails on any failure it finds: a 5xx, a status the document does not list,
a body that does not match the documented shape, a route that answers
without a token, an undocumented content type. Examples are bounded and
derandomized, so a run is deterministic and fits in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans

from api.app import create_app
from api.metrics import Metrics
from api.runtime import Runtime
from engine.clock import system_clock

# Every check schemathesis has. A documented 422 is a correct answer to
# schema-valid input that breaks a rule JSON Schema cannot state (a limit
# order without a limit price, a stop order without a stop price).
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 7,  # with `derandomize`, the same requests on every run
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "502", "503"]
            }
        },
    }
)


def _document_app() -> Litestar:
    """An app to read the document from when the module loads (the test store
    does not exist yet); the document depends on the routes alone. Requests go
    to each test's own app, on its own store."""
    routes_only = SimpleNamespace(
        gateway=None,
        store=SimpleNamespace(dialect="sqlite"),
        settings=SimpleNamespace(max_body_bytes=0),
        metrics=Metrics(),
        clock=system_clock,
        tokens=None,
        checkpointer=None,
    )
    return create_app(cast(Runtime, routes_only))


schema = schemathesis.openapi.from_asgi("/schema/openapi.json", _document_app(), config=CONFIG)


@pytest.fixture
def app(runtime: Runtime) -> Iterator[Litestar]:
    yield create_app(runtime)
    shutdown_lifespans()  # schemathesis keeps each app's lifespan until told


@pytest.fixture
def admin_headers(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime.tokens.create('admin', 'openapi', runtime.clock())}"}


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_openapi_document_says(
    case: Any, app: Litestar, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(app=app, headers=admin_headers)


def test_document_when_read_then_each_token_route_declares_bearer_and_its_errors() -> None:
    document = schema.raw_schema
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    guarded = {key: op for key, op in operations.items() if key[1].startswith("/v1/")}

    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # the 18 routes before the compliance issue, the audit checkpoint, the compliance
    # configuration and its verifications, the live unlock's two, and the shadow
    # policy set's three (GET, POST, DELETE /v1/policies/shadow)
    assert len(guarded) == 26
    for key, operation in guarded.items():
        assert operation["security"] == [{"bearer": []}], key
        for status in ("401", "503"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (key, status)
    assert set(document["components"]["schemas"]["Error"]["required"]) == {
        "code",
        "detail",
        "errors",
    }
    assert sorted(operations["POST", "/v1/orders"]["responses"]) == [
        "201", "202", "401", "403", "409", "413", "422", "502", "503",
    ]  # fmt: skip
    assert "requestBody" in operations["POST", "/v1/orders"]
    assert "security" not in operations["GET", "/healthz"]

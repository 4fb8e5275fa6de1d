"""The HTTP API (SPEC section 8): Litestar controllers per area over the gateway.

Guards (`guards.py`) authenticate and check the role; dependencies come through
`Provide`; gateway outcomes become answers through one table (`outcomes.py`);
bodies are read by `intake.py`; the OpenAPI document (`docs.py`) declares every
body, answer and status, with the bearer scheme.

The gateway blocks (database, broker): its calls run on our own threads
(`_threads.py`). On SQLite an evaluation runs on the event loop itself: it calls
no broker, and its reads and its one local write take well under a
millisecond, while handing it to a thread makes the loop and that thread pass
the GIL to and fro: 9-13% more CPU per evaluation in a paired run (README,
"Benchmarks").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from ._threads import GatewayThreads
from .controllers import CONTROLLERS
from .controllers.unlock import UnlockController
from .deps import Services, provide
from .errors import EXCEPTION_HANDLERS
from .intake import Intake
from .runtime import Runtime

__all__ = ["create_app"]

GATEWAY_THREADS = 16


def create_app(runtime: Runtime) -> Litestar:
    threads = GatewayThreads(GATEWAY_THREADS)
    gateway = runtime.gateway
    intake = Intake(gateway, threads, runtime.metrics, runtime.settings.max_body_bytes)
    services = Services(
        gateway=gateway,
        store=runtime.store,
        settings=runtime.settings,
        metrics=runtime.metrics,
        clock=runtime.clock,
        threads=threads,
        intake=intake,
        inline_evaluation=runtime.store.dialect == "sqlite",
    )
    on_shutdown: list[Callable[[], Any]] = [threads.close]
    if runtime.checkpointer is not None:
        # the last checkpoint: uvicorn re-raises SIGTERM once the app has shut down,
        # so nothing after `serve` returns is sure to run
        on_shutdown.append(runtime.checkpointer.stop)
    app = Litestar(
        route_handlers=[*CONTROLLERS, UnlockController],
        dependencies={"services": provide(services)},
        state=State({"tokens": runtime.tokens, "intake": intake}),  # intake: guards log refusals
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="apex-oms",
            version="0.1.0",
            path="/schema",
            description="Pre-trade policy gateway: every order judged by the policies, "
            "every attempt in a hash-chained audit log.",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A token from `apex-oms tokens create`.",
                    )
                }
            ),
        ),
        request_max_body_size=4 * 1024 * 1024,
        on_shutdown=on_shutdown,
        # Logging belongs to the process (api/_logging.py): Litestar's default
        # config would replace the root handlers and turn the JSON logs to text.
        logging_config=None,
    )
    _whole_allow_headers(app)
    return app


def _whole_allow_headers(app: Litestar) -> None:
    """Litestar (2.25) builds a path's automatic OPTIONS answer with the first route
    object it makes for that path, so that `Allow` names only the first handler's
    methods (`GET, OPTIONS` where POST works too). Point each at its whole route."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for cell in handler.fn.__closure__ or ():
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route

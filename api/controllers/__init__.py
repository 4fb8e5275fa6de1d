"""One controller per area of the API (SPEC section 8)."""

from __future__ import annotations

from litestar import Controller

from .audit import AuditController
from .brokers import BrokersController
from .compliance import ComplianceController
from .controls import ControlsController
from .operations import OperationsController
from .orders import OrdersController
from .policies import PoliciesController
from .shadow import ShadowController
from .sim import SimController

__all__ = ["CONTROLLERS"]

CONTROLLERS: list[type[Controller]] = [
    OrdersController,
    ControlsController,
    PoliciesController,
    ShadowController,
    ComplianceController,
    AuditController,
    SimController,
    OperationsController,
    BrokersController,
]

"""apex-oms engine: policies, facts, evaluation. Knows no HTTP and no adapter."""

from __future__ import annotations

from .config import ComplianceConfig
from .decision import Decision, FieldError, Reason
from .errors import ApexError, EngineFault, PolicyError, PolicyIssue
from .evaluator import Evaluator
from .loader import LoadedPolicies, load_policies, validate_policies
from .models import EngineState, OrderContext, OrderRequest, Quote, RecentOrder

__all__ = [
    "ApexError",
    "ComplianceConfig",
    "Decision",
    "EngineFault",
    "EngineState",
    "Evaluator",
    "FieldError",
    "LoadedPolicies",
    "OrderContext",
    "OrderRequest",
    "PolicyError",
    "PolicyIssue",
    "Quote",
    "Reason",
    "RecentOrder",
    "load_policies",
    "validate_policies",
]

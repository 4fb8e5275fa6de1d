"""apex-oms engine: policies, facts, evaluation. Knows no HTTP and no adapter."""

from __future__ import annotations

from .errors import ApexError, EngineFault, PolicyError, PolicyIssue
from .models import EngineState, OrderContext, OrderRequest, Quote, RecentOrder
from .policy.config import ComplianceConfig
from .policy.decision import Decision, FieldError, Reason
from .policy.evaluator import Evaluator
from .policy.loader import LoadedPolicies, load_policies, validate_policies

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

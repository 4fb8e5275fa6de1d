"""Evaluate orders against a compiled policy version, fail-closed.

`Evaluator.evaluate` never raises and never approves by accident: invalid
input is `rejected` with every bad field named; any fault inside evaluation
(the rules engine included) blocks the order with `engine_error`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..clock import Clock, system_clock
from ..errors import fault
from ..models import EngineState, OrderRequest
from ._durable import DurableRulesets
from .compiler import CompiledPolicy, RuleInputs, compile_policy, presence_flag
from .decision import CheckResult, Decision, FieldError, Reason, sort_triggers
from .explain import explain
from .facts import Fact, build_fact
from .guards import Plan as _Plan
from .guards import choose_guards
from .loader import LoadedPolicies
from .reference import Predicate, predicate
from .rules import Rule

__all__ = ["Evaluator", "compiled", "field_errors"]

log = logging.getLogger("apex.engine")

_CACHE_SIZE = 16
_cache: OrderedDict[tuple[str, str], tuple[CompiledPolicy, DurableRulesets]] = OrderedDict()
_cache_lock = threading.Lock()


def compiled(loaded: LoadedPolicies) -> tuple[CompiledPolicy, DurableRulesets]:
    """Compile once per policy version (policy digest + compliance digest), into as
    many rulesets as the set needs (`CompiledPolicy.partitions`), named after the
    digests and each part's index. A version's rulesets are deleted when it leaves
    the cache, but durable-rules keeps most of their memory (measured here: about
    0.07 MB per ruleset and 0.012 MB per rule, never returned), so the cache is
    bounded and a process that compiles many versions should not live forever."""
    key = (loaded.policies.policy_digest, loaded.policies.compliance_digest)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        policy = compile_policy(loaded.policies, loaded.config)
        name = "apex_" + key[0][7:23] + "_" + key[1][7:23]
        parts = [(p.definition, p.keys) for p in policy.partitions()]
        entry = (policy, DurableRulesets(name, parts))
        _cache[key] = entry
        if len(_cache) > _CACHE_SIZE:
            # An evaluator still holding the retired version gets engine_error: fail-closed.
            _, (_, retired) = _cache.popitem(last=False)
            retired.close()
        return entry


def field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(body)"
        # field names come from the client: keep them printable and valid UTF-8
        path = path.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
        out.append(FieldError(path, err["msg"]))
    return tuple(out)


@dataclass(frozen=True)
class _Check:
    """One rule, with what the evaluator needs of it on every order."""

    rule: Rule
    inputs: RuleInputs
    required: frozenset[str]
    applies: Predicate | None
    deny: Predicate
    # (field, values): the rule can fail only when the fact's field is one of the
    # values (an `eq`/`in` of a constant that applies_when and deny_when both need)
    guard: tuple[str, frozenset[Any]] | None = None


class Evaluator:
    """Judges orders against one policy version; safe to share between threads."""

    def __init__(self, loaded: LoadedPolicies, clock: Clock = system_clock) -> None:
        self._loaded = loaded
        self._policy, self._ruleset = compiled(loaded)
        self._clock = clock
        config = self._policy.config
        self._flags = tuple((f, presence_flag(f)) for f in self._policy.flagged_fields)
        self._derived = self._policy.derived
        self._check_ids = tuple(rule.id for rule in self._policy.policies.rules)
        rules = self._policy.policies.rules
        chosen = choose_guards(rules, config)
        self._checks = tuple(
            _Check(
                rule,
                self._policy.inputs[rule.id],
                frozenset(self._policy.inputs[rule.id].when + self._policy.inputs[rule.id].deny),
                predicate(rule.applies_when, config) if rule.applies_when else None,
                predicate(rule.deny_when, config),
                chosen.get(rule.id),
            )
            for rule in rules
        )
        self._plan = _Plan(self._checks)

    @property
    def policy(self) -> CompiledPolicy:
        return self._policy

    @property
    def check_ids(self) -> tuple[str, ...]:
        return self._check_ids

    def evaluate(
        self,
        order: OrderRequest | Mapping[str, Any],
        state: EngineState | None = None,
        now: datetime | None = None,
    ) -> Decision:
        moment = now or self._clock()
        try:
            parsed = (
                order if isinstance(order, OrderRequest) else OrderRequest.model_validate(order)
            )
        except ValidationError as exc:
            return self.rejected(order, moment, field_errors(exc))
        except Exception as exc:  # anything odd about the input itself
            log.exception("order could not be read")
            error = FieldError("(body)", f"could not be read: {type(exc).__name__}")
            return self.rejected(order, moment, (error,))
        try:
            return self._judge(parsed, state or EngineState(), moment)
        except Exception as exc:
            log.exception("evaluation failed; order blocked")
            return self.blocked(parsed, moment, "engine_error", "ENGINE_ERROR", fault(exc))

    def rejected(self, raw: Any, now: datetime, errors: tuple[FieldError, ...]) -> Decision:
        """The decision for input that failed validation."""
        request = dict(raw) if isinstance(raw, Mapping) else {}
        return self._decision("rejected", now, request=request, errors=errors)

    def blocked(
        self, order: OrderRequest, now: datetime, trigger: str, code: str, detail: str
    ) -> Decision:
        """A decision blocked before the policies could run (every check `error`)."""
        return self._decision(
            "blocked",
            now,
            order=order,
            checks_run=self.check_ids,
            results=dict.fromkeys(self.check_ids, "error"),
            triggers=(trigger,),
            reasons=(Reason("engine", "error", code, trigger, detail),),
        )

    def _judge(self, order: OrderRequest, state: EngineState, now: datetime) -> Decision:
        config = self._policy.config
        fact = build_fact(order, state, config, now)
        if self._derived:
            fact = self._with_lookups(fact)
        flags = {flag: name in fact for name, flag in self._flags}
        lookups = {
            m.name: fact[m.field] in m.values for m in self._policy.memberships if m.field in fact
        }
        fired = self._ruleset.fired({"kind": "order", **fact, **flags, **lookups})
        # every check passes unless the engine or the reference says otherwise
        results: dict[str, CheckResult] = dict.fromkeys(self._check_ids, "pass")
        reasons: list[Reason] = []
        triggers: set[str] = set()
        for index in self._plan.to_judge(fact, fired):
            check = self._checks[index]
            result, reason = self._check(check, fact, fired)
            results[check.rule.id] = result
            if reason is not None:
                reasons.append(reason)
                triggers.add(reason.trigger)
        status = "blocked" if triggers else "evaluated"
        return self._decision(
            status,
            now,
            order=order,
            checks_run=self.check_ids,
            results=results,
            triggers=sort_triggers(triggers),
            reasons=tuple(reasons),
        )

    def _with_lookups(self, fact: Fact) -> Fact:
        """The fact with each map lookup resolved into its derived field, so the engine
        and the reference compare two plain values. A new dict: the fact itself holds
        only what the order and the state say."""
        judged = dict(fact)
        for lookup in self._derived:
            value = lookup.value(fact)
            if value is not None:
                judged[lookup.name] = value
        return judged

    def _check(
        self, check: _Check, fact: Fact, fired: set[str]
    ) -> tuple[CheckResult, Reason | None]:
        config = self._policy.config
        rule, inputs = check.rule, check.inputs
        applies_when, deny_when = check.applies, check.deny
        # what plain Python says, to explain the result and to check the engine
        absent = [f for f in inputs.when if f not in fact]
        applies = not absent and (applies_when is None or applies_when(fact))
        if applies:
            absent = [f for f in inputs.deny if f not in fact]
        expect_missing = bool(absent)
        expect_fail = applies and not absent and deny_when(fact)
        engine_missing = inputs.missing_name in fired
        engine_fail = rule.id in fired
        if engine_missing != expect_missing or (not expect_missing and engine_fail != expect_fail):
            detail = (
                f"rules engine and reference disagree (engine: missing={engine_missing}, "
                f"fail={engine_fail}; reference: missing={expect_missing}, fail={expect_fail})"
            )
            log.error("check %s: %s", rule.id, detail)
            return "error", Reason(rule.id, "error", "ENGINE_DISAGREEMENT", "engine_error", detail)
        if engine_missing:
            detail = "missing input: " + ", ".join(absent)
            return "error", Reason(rule.id, "error", "MISSING_INPUT", rule.trigger, detail)
        if engine_fail:
            detail = explain(rule.deny_when, fact, config)
            return "fail", Reason(rule.id, "fail", rule.code, rule.trigger, detail)
        return "pass", None

    def _decision(self, status: Any, moment: datetime, **parts: Any) -> Decision:
        policies = self._policy.policies
        return Decision(
            status=status,
            evaluated_at=moment,
            policy_digest=policies.policy_digest,
            compliance_digest=policies.compliance_digest,
            compliance_version=self._policy.config.version,
            **parts,
        )

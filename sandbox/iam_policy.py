"""IAM policy evaluation with AWS's semantics, for the sandbox's moto (whose own evaluator checks only
``StringEquals`` and treats a key missing from the request as a match).

The rules, from AWS's IAM reference:
- evaluation: an explicit Deny wins, then any Allow, else the request is implicitly denied
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html);
- a statement applies when its Action (or NotAction), Resource (or NotResource), Principal (or
  NotPrincipal, for resource and trust policies) and every Condition match; within Condition, all
  operators and all keys must match (AND), and any one of a key's values may (OR)
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_logic_multiple_context_keys_or_values.html);
- operators and the absent key: a key missing from the request makes a condition false, except that a
  negated operator (``StringNotEquals``, ``ArnNotLike``, ``NotIpAddress``...) is then true, an
  ``...IfExists`` operator is true, ``Null`` tests presence itself, and ``ForAllValues:`` is true
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html);
- ``ForAnyValue:`` / ``ForAllValues:`` compare a multivalued key's set with the policy's values
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html).

Not modelled: SCPs, RCPs, session policies, permission boundaries, the ``${*}``-style escapes of
policy variables, and ``BinaryEquals`` (no policy this project renders uses them).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

ContextValue = str | Sequence[str]


class Decision(Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class Request:
    """What is being asked: the action, the resource ARN, the caller, and the request's context keys.

    ``context`` keys are matched case-insensitively, as AWS does; a value is a string, or a list
    of strings for a multivalued key such as ``aws:TagKeys``.
    """

    action: str
    resource: str = "*"
    principal: Mapping[str, str] = field(default_factory=dict)  # e.g. {"AWS": arn} or {"Federated": arn}
    context: Mapping[str, ContextValue] = field(default_factory=dict)

    def value(self, key: str) -> ContextValue | None:
        wanted = key.lower()
        return next((value for name, value in self.context.items() if name.lower() == wanted), None)


def evaluate(policies: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    """The decision of a set of policies (identity, resource or trust) for one request."""
    allowed = False
    for policy in policies:
        for statement in _statements(policy):
            if not statement_applies(statement, request):
                continue
            if statement.get("Effect") == "Deny":
                return Decision.EXPLICIT_DENY
            allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    return (
        _element_matches(statement, "Action", request.action, _action_matches)
        and _element_matches(statement, "Resource", request.resource, _resource_matches)
        and _principal_matches(statement, request.principal)
        and conditions_match(statement.get("Condition") or {}, request)
    )


def conditions_match(conditions: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    return all(
        _condition_matches(operator, key, _as_list(values), request)
        for operator, keys in conditions.items()
        for key, values in keys.items()
    )


# -- elements -------------------------------------------------------------------------------------


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement") or []
    return [statements] if isinstance(statements, Mapping) else list(statements)


def _element_matches(statement: Mapping[str, Any], name: str, value: str, match: Any) -> bool:
    if name in statement:
        return any(match(pattern, value) for pattern in _as_list(statement[name]))
    if f"Not{name}" in statement:
        return not any(match(pattern, value) for pattern in _as_list(statement[f"Not{name}"]))
    # Trust policies have no Resource; identity policies always name one (IAM refuses them otherwise).
    return name == "Resource"


def _action_matches(pattern: str, action: str) -> bool:
    return _wildcard(pattern, action, ignore_case=True)


def _resource_matches(pattern: str, resource: str) -> bool:
    return _wildcard(pattern, resource)


def _principal_matches(statement: Mapping[str, Any], principal: Mapping[str, str]) -> bool:
    if "Principal" in statement:
        return _principal_in(statement["Principal"], principal)
    if "NotPrincipal" in statement:
        return not _principal_in(statement["NotPrincipal"], principal)
    return True  # an identity policy: the principal is the one it is attached to


def _principal_in(element: Any, principal: Mapping[str, str]) -> bool:
    if element == "*":
        return True
    for kind, patterns in (element or {}).items():
        caller = principal.get(kind)
        for pattern in _as_list(patterns):
            if pattern == "*" and caller is not None:
                return True
            if caller is not None and (caller == pattern or _account_root(pattern, caller)):
                return True
    return False


def _account_root(pattern: str, caller: str) -> bool:
    """``123456789012`` and ``arn:aws:iam::123456789012:root`` stand for every principal of that account."""
    account = pattern if re.fullmatch(r"\d{12}", pattern) else None
    if account is None and (match := re.fullmatch(r"arn:[^:]+:iam::(\d{12}):root", pattern)):
        account = match.group(1)
    return account is not None and caller.split(":")[4:5] == [account]


# -- conditions -----------------------------------------------------------------------------------


def _condition_matches(operator: str, key: str, wanted: list[str], request: Request) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    present = request.value(key)
    if base == "Null":
        return (present is None) == (str(wanted[0]).lower() == "true")
    test = _OPERATORS.get(base)
    if test is None:
        raise ValueError(f"condition operator {operator!r} is not one of AWS's")
    if present is None or (isinstance(present, (list, tuple)) and not present and qualifier):
        if qualifier == "ForAllValues":
            return True
        return if_exists or _negated(base)
    values = _as_list(present)
    wanted = [_substitute(str(value), request) for value in wanted]
    if qualifier == "ForAllValues":
        return all(test(value, wanted) for value in values)
    # ForAnyValue, and a plain operator on a multivalued key: any of the request's values
    return any(test(value, wanted) for value in values)


def _negated(base: str) -> bool:
    return base in _NEGATIONS.values()


def _substitute(value: str, request: Request) -> str:
    """Policy variables such as ``${aws:username}``, from the request's context (others stay as written)."""

    def replace(match: re.Match[str]) -> str:
        found = request.value(match.group(1))
        return found if isinstance(found, str) else match.group(0)

    return re.sub(r"\$\{([^}]+)\}", replace, value)


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _any(predicate: Any) -> Any:
    return lambda value, wanted: any(predicate(value, one) for one in wanted)


def _number(text: str) -> float:
    return float(text)


def _date(text: str) -> datetime:
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_network(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _arn_like(value: str, pattern: str) -> bool:
    """ARN patterns match segment by segment (the resource part may itself hold ':')."""
    parts, wanted = value.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(wanted) == 6 and all(_wildcard(w, p) for w, p in zip(wanted, parts, strict=True))


_POSITIVE = {
    "StringEquals": _any(lambda value, one: value == one),
    "StringEqualsIgnoreCase": _any(lambda value, one: value.lower() == one.lower()),
    "StringLike": _any(lambda value, one: _wildcard(one, value)),
    "NumericEquals": _any(lambda value, one: _number(value) == _number(one)),
    "NumericLessThan": _any(lambda value, one: _number(value) < _number(one)),
    "NumericLessThanEquals": _any(lambda value, one: _number(value) <= _number(one)),
    "NumericGreaterThan": _any(lambda value, one: _number(value) > _number(one)),
    "NumericGreaterThanEquals": _any(lambda value, one: _number(value) >= _number(one)),
    "DateEquals": _any(lambda value, one: _date(value) == _date(one)),
    "DateLessThan": _any(lambda value, one: _date(value) < _date(one)),
    "DateLessThanEquals": _any(lambda value, one: _date(value) <= _date(one)),
    "DateGreaterThan": _any(lambda value, one: _date(value) > _date(one)),
    "DateGreaterThanEquals": _any(lambda value, one: _date(value) >= _date(one)),
    "Bool": _any(lambda value, one: value.lower() == one.lower()),
    "IpAddress": _any(_in_network),
    "ArnEquals": _any(_arn_like),
    "ArnLike": _any(_arn_like),
}
# A negated operator is true when none of the policy's values match.
_NEGATIONS = {
    "StringEquals": "StringNotEquals",
    "StringEqualsIgnoreCase": "StringNotEqualsIgnoreCase",
    "StringLike": "StringNotLike",
    "NumericEquals": "NumericNotEquals",
    "DateEquals": "DateNotEquals",
    "ArnEquals": "ArnNotEquals",
    "ArnLike": "ArnNotLike",
    "IpAddress": "NotIpAddress",
}
_OPERATORS = {
    **_POSITIVE,
    **{negated: (lambda test: lambda value, wanted: not test(value, wanted))(_POSITIVE[positive])
       for positive, negated in _NEGATIONS.items()},
}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]

"""TwinSpace policy parameters <-> ODRL 2.2 rules, one table, both directions.

An offer in the catalog is a Rego policy id plus its parameters (``policies/``); on the wire it is an
ODRL Offer. ``to_rules`` writes the ODRL permissions, prohibitions and duties for a policy id and its
parameters; ``from_rules`` reads them back. The agreement's Rego input parameters are the ones read
back from its ODRL terms (``from_rules``), so what the agreement says and what the policy engine
decides on are the same data. A parameter with no standard ODRL left operand is written with a
TwinSpace profile term (``https://twinspace.dev/ns/twin#``, docs/dataspace-protocol.md).

Standard ODRL 2.2 terms used: actions ``use``, ``read``, ``derive``, ``aggregate``, ``anonymize``;
left operands ``purpose``, ``spatial``, ``dateTime``, ``count``, ``elapsedTime``; operators ``eq``,
``lt``, ``lteq``, ``gteq``, ``isAnyOf``, ``isPartOf``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from twinspace.dsp.contexts import ODRL_NS, TWIN_NS

XSD = "http://www.w3.org/2001/XMLSchema#"
WKT = "http://www.opengis.net/ont/geosparql#wktLiteral"

# Policies whose Rego checks the consumer's clearance against the asset's classification (lib.clearance_denied).
CLEARANCE_POLICIES = frozenset({"purpose-restricted", "aggregation-only", "geo-restricted", "scenario-authorisation",
                                "domain-authorisation"})
AGGREGATION_POLICIES = frozenset({"aggregation-only"})


class OdrlProblem(ValueError):
    """ODRL terms TwinSpace cannot map to a policy (unknown operand, wrong operator or value)."""


_TWIN_BARE = frozenset({"scenario"})


def odrl(name: str) -> str:
    return ODRL_NS + name


def twin(name: str) -> str:
    return TWIN_NS + name


def expand_term(value: Any) -> str:
    """A left operand, operator or action as an absolute IRI, whatever its spelling: ``odrl:purpose``,
    bare ``purpose`` (as in the DSP examples), or the full IRI."""
    if isinstance(value, dict):
        value = value.get("@id") or value.get("@value")
    if not isinstance(value, str):
        raise OdrlProblem("an ODRL term must be a string")
    if value.startswith("odrl:"):
        return ODRL_NS + value[5:]
    if value.startswith("twin:"):
        return TWIN_NS + value[5:]
    if "://" in value or value.startswith("urn:"):
        return value
    if value in _TWIN_BARE:  # a TwinSpace context term (compaction writes twin:scenario as "scenario")
        return TWIN_NS + value
    return ODRL_NS + value


def _typed(value: Any, datatype: str) -> dict[str, Any]:
    return {"@value": value, "@type": datatype}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> float | int:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    ts = value.timestamp()
    return int(ts) if ts.is_integer() else ts


def _bbox_wkt(b: list[float]) -> str:
    w, s, e, n = (float(x) for x in b)
    return f"POLYGON(({w!r} {s!r}, {e!r} {s!r}, {e!r} {n!r}, {w!r} {n!r}, {w!r} {s!r}))"


_POLY = re.compile(r"^\s*POLYGON\s*\(\((.*)\)\)\s*$", re.IGNORECASE)


def _wkt_bbox(text: str) -> list[float]:
    match = _POLY.match(text)
    if not match:
        raise OdrlProblem("a spatial constraint's right operand must be a WKT POLYGON")
    try:
        points = [tuple(float(v) for v in p.split()) for p in match.group(1).split(",")]
    except ValueError:
        raise OdrlProblem("the WKT POLYGON has a non-numeric coordinate") from None
    if len(points) < 4 or any(len(p) != 2 for p in points):
        raise OdrlProblem("the WKT POLYGON must be a ring of 2-D points")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _duration(seconds: int) -> str:
    return f"PT{int(seconds)}S"


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _seconds(text: str) -> int:
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT"):
        raise OdrlProblem("elapsedTime needs an xsd:duration such as PT3600S or P30D")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return ((d * 24 + h) * 60 + m) * 60 + s


def _value(operand: Any) -> Any:
    """The plain value of a right operand (a literal, a typed value object, a list)."""
    if isinstance(operand, dict):
        if "@value" in operand:
            return operand["@value"]
        if "@id" in operand:
            return operand["@id"]
        if "@list" in operand:
            return [_value(v) for v in operand["@list"]]
    if isinstance(operand, list):
        return [_value(v) for v in operand]
    return operand


def _int(value: Any, what: str) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise OdrlProblem(f"{what} needs an integer right operand") from None
    if number < 0:
        raise OdrlProblem(f"{what} cannot be negative")
    return number


def _number(value: Any, what: str) -> float | int:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        raise OdrlProblem(f"{what} needs a numeric right operand") from None
    return int(number) if number.is_integer() and "." not in str(value) else number


def _strings(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise OdrlProblem(f"{what} needs a string or a list of strings")
    return list(items)


def _c(left: str, operator: str, right: Any) -> dict[str, Any]:
    return {"leftOperand": left, "operator": operator, "rightOperand": right}


# --------------------------------------------------------------------------- params -> ODRL
def to_rules(policy_id: str, params: dict[str, Any], *, classification: str | None = None) -> dict[str, Any]:
    """``{"permission": [...], "prohibition": [...], "obligation"?: [...]}`` for a Rego policy id and its
    parameters. ``classification`` (the asset's) becomes the consumer-clearance constraint of the
    policies that check it."""
    params = dict(params or {})
    constraints: list[dict[str, Any]] = []
    duties: list[dict[str, Any]] = []
    if "purposes" in params:
        constraints.append(_c(odrl("purpose"), "isAnyOf", _strings(params.pop("purposes"), "purposes")))
    if "scenarios" in params:
        constraints.append(_c(twin("scenario"), "isAnyOf", _strings(params.pop("scenarios"), "scenarios")))
    if "bbox" in params:
        bbox = params.pop("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise OdrlProblem("bbox must be [west, south, east, north]")
        constraints.append(_c(odrl("spatial"), "isPartOf", _typed(_bbox_wkt(bbox), WKT)))
    if "not_before" in params:
        constraints.append(_c(odrl("dateTime"), "gteq", _typed(_iso(params.pop("not_before")), XSD + "dateTime")))
    if "not_after" in params:
        constraints.append(_c(odrl("dateTime"), "lt", _typed(_iso(params.pop("not_after")), XSD + "dateTime")))
    if "max_accesses" in params:
        constraints.append(_c(odrl("count"), "lteq", _typed(str(_int(params.pop("max_accesses"), "count")),
                                                            XSD + "integer")))
    if "max_elapsed_seconds" in params:
        constraints.append(_c(odrl("elapsedTime"), "lteq",
                              _typed(_duration(_int(params.pop("max_elapsed_seconds"), "elapsedTime")),
                                     XSD + "duration")))
    if "max_total_rows" in params:
        constraints.append(_c(twin("totalRows"), "lteq", _typed(str(_int(params.pop("max_total_rows"), "totalRows")),
                                                                XSD + "integer")))
    if "max_rows" in params:
        constraints.append(_c(twin("rowsPerTransfer"), "lteq",
                              _typed(str(_int(params.pop("max_rows"), "rowsPerTransfer")), XSD + "integer")))
    if "columns" in params:
        constraints.append(_c(twin("column"), "isAnyOf", _strings(params.pop("columns"), "columns")))
    if "roles" in params:
        constraints.append(_c(twin("role"), "isAnyOf", _strings(params.pop("roles"), "roles")))
    if "org_types" in params:
        constraints.append(_c(twin("orgType"), "isAnyOf", _strings(params.pop("org_types"), "org_types")))
    if policy_id in CLEARANCE_POLICIES and classification:
        constraints.append(_c(twin("clearance"), "gteq", classification))
    if policy_id in AGGREGATION_POLICIES:
        anonymize = []
        if "epsilon_per_query" in params:
            anonymize.append(_c(twin("epsilon"), "lteq", _typed(str(params.pop("epsilon_per_query")),
                                                                 XSD + "decimal")))
        if "min_cohort" in params:
            anonymize.append(_c(twin("cohortSize"), "gteq", _typed(str(_int(params.pop("min_cohort"), "cohortSize")),
                                                                   XSD + "integer")))
        duties.append({"action": odrl("anonymize"), **({"constraint": anonymize} if anonymize else {})})
    for name in sorted(params):  # everything else a policy reads, kept whole (e.g. tiers, grants)
        constraints.append(_c(twin("policyParameter"), "eq",
                              {"@type": "@json", "@value": {"name": name, "value": params[name]}}))
    permission: dict[str, Any] = {"action": odrl("aggregate") if policy_id in AGGREGATION_POLICIES else "use"}
    if constraints:
        permission["constraint"] = constraints
    if duties:
        permission["duty"] = duties
    rules: dict[str, Any] = {"permission": [permission]}
    if policy_id in AGGREGATION_POLICIES:
        rules["prohibition"] = [{"action": odrl("read")}, {"action": odrl("derive")}]
    return rules


# --------------------------------------------------------------------------- ODRL -> params
_LISTS = {odrl("purpose"): "purposes", twin("scenario"): "scenarios", twin("column"): "columns",
          twin("role"): "roles", twin("orgType"): "org_types"}
_INTS = {(odrl("count"), "lteq"): "max_accesses", (twin("totalRows"), "lteq"): "max_total_rows",
         (twin("rowsPerTransfer"), "lteq"): "max_rows"}


def _constraint(c: dict[str, Any], params: dict[str, Any], facts: dict[str, Any]) -> None:
    if not isinstance(c, dict):
        raise OdrlProblem("a constraint must be an object")
    if any(k in c for k in ("and", "or", "xone", "andSequence")):
        raise OdrlProblem("logical constraints are not part of the TwinSpace profile")
    for key in ("leftOperand", "operator", "rightOperand"):
        if key not in c:
            raise OdrlProblem(f"a constraint needs {key}")
    left, op, right = expand_term(c["leftOperand"]), expand_term(c["operator"])[len(ODRL_NS):], _value(c["rightOperand"])
    if left in _LISTS and op in ("isAnyOf", "eq"):
        params[_LISTS[left]] = _strings(right, _LISTS[left])
    elif (left, op) in _INTS:
        params[_INTS[(left, op)]] = _int(right, left.rsplit("#", 1)[-1].rsplit("/", 1)[-1])
    elif left == odrl("spatial") and op in ("isPartOf", "eq"):
        params["bbox"] = _wkt_bbox(str(right))
    elif left == odrl("dateTime") and op in ("gteq", "gt", "lt", "lteq"):
        try:
            params["not_before" if op in ("gteq", "gt") else "not_after"] = _epoch(str(right))
        except ValueError:
            raise OdrlProblem("a dateTime constraint needs an xsd:dateTime") from None
    elif left == odrl("elapsedTime") and op in ("lteq", "lt"):
        params["max_elapsed_seconds"] = _seconds(str(right))
    elif left == twin("clearance") and op == "gteq":
        facts["classification"] = _strings(right, "clearance")[0]
    elif left == twin("policyParameter") and op == "eq":
        if not (isinstance(right, dict) and isinstance(right.get("name"), str) and "value" in right):
            raise OdrlProblem("a policyParameter constraint needs {name, value}")
        params[right["name"]] = right["value"]
    else:
        raise OdrlProblem(f"unsupported constraint {left} {op}")


def from_rules(policy: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, facts)`` read from an ODRL policy's rules; ``facts`` holds what is not a Rego
    parameter (the ``classification`` the clearance constraint names, ``aggregation_only``)."""
    params: dict[str, Any] = {}
    facts: dict[str, Any] = {"aggregation_only": False}
    permissions = policy.get("permission") or []
    if isinstance(permissions, dict):
        permissions = [permissions]
    if not permissions:
        raise OdrlProblem("a TwinSpace offer has one permission")
    if len(permissions) != 1:
        raise OdrlProblem("a TwinSpace offer has exactly one permission")
    permission = permissions[0]
    if not isinstance(permission, dict) or "action" not in permission:
        raise OdrlProblem("every ODRL rule has an action")
    action = expand_term(permission["action"])
    if action not in (odrl("use"), odrl("aggregate"), odrl("read")):
        raise OdrlProblem(f"unsupported permission action {action}")
    facts["aggregation_only"] = action == odrl("aggregate")
    constraints = permission.get("constraint") or []
    for c in constraints if isinstance(constraints, list) else [constraints]:
        _constraint(c, params, facts)
    duties = permission.get("duty") or []
    for duty in duties if isinstance(duties, list) else [duties]:
        if not isinstance(duty, dict) or expand_term(duty.get("action")) != odrl("anonymize"):
            raise OdrlProblem("the only duty in the TwinSpace profile is odrl:anonymize")
        for c in duty.get("constraint") or []:
            left, right = expand_term(c.get("leftOperand")), _value(c.get("rightOperand"))
            if left == twin("epsilon"):
                params["epsilon_per_query"] = _number(right, "epsilon")
            elif left == twin("cohortSize"):
                params["min_cohort"] = _int(right, "cohortSize")
            else:
                raise OdrlProblem(f"unsupported duty constraint {left}")
    for prohibition in policy.get("prohibition") or []:
        if not isinstance(prohibition, dict) or "action" not in prohibition:
            raise OdrlProblem("every ODRL rule has an action")
    return params, facts


def same_terms(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two ODRL policies say the same (compared through ``from_rules``)."""
    try:
        return from_rules(a) == from_rules(b)
    except OdrlProblem:
        return False

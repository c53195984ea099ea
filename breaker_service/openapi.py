"""The OpenAPI 3.1 document, built from the route list and the wire models (msgspec writes every schema).

Error answers are listed by status, as they are served: each is the contract's `ErrorBody`, with the ORC code the
status carries. Which statuses a route may answer follows from what it takes (a role, a `{name}`, a body, a query)
plus those its operation names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.routing import BaseRoute, Route

import breaker_service
from breaker_client.protocol.models import ErrorBody
from breaker_service.auth import Role
from breaker_service.idempotency import IDEMPOTENCY_HEADER
from breaker_service.routes.common import OPERATIONS, Name, Operation

if TYPE_CHECKING:
    from collections.abc import Sequence

REF_TEMPLATE: Final = "#/components/schemas/{name}"
_ERROR_REF: Final = {"$ref": REF_TEMPLATE.format(name="ErrorBody")}
_UNTYPED: Final = {
    "application/json": {"type": "object"},
    # One Server-Sent Event: its data is the JSON of the event's kind (see routes/events.py).
    "text/event-stream": {
        "type": "object",
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
        "required": ["data"],
    },
}
ERRORS: Final = {
    400: "ORC_001: the body is not JSON, or nests deeper than 64 levels, or a bad Idempotency-Key",
    401: "ORC_007: no or malformed credentials, or an unknown token",
    403: "ORC_008: credentials without the needed role",
    404: "ORC_009: no such breaker or resource",
    409: "ORC_002 / ORC_003: a business rule (the breaker cap, a full queue) or the workflow refuses it (a request"
    " with this Idempotency-Key is in flight)",
    413: "ORC_010: the body (or a queue payload) is too large",
    415: "ORC_001: the body is not declared application/json",
    422: "ORC_001: a bad field, name or query value, or an unknown query parameter (details.location, details.path);"
    " an Idempotency-Key used for another request",
    500: "ORC_005: an unexpected server error",
    503: "ORC_005: the store is unreachable",
}
"""What each error status means, in the error body's `code`."""
_IDEMPOTENCY_KEY: Final = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Answer a retry of this write with the first answer instead of applying it again (24 h)",
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}


def build_openapi(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """One path item per route, one operation per method, schemas from `msgspec.json.schema_components`."""
    documented = [(r, OPERATIONS[r.endpoint]) for r in routes if isinstance(r, Route) and r.endpoint in OPERATIONS]
    models = {
        kind
        for _, op in documented
        for kind in (op.body, op.answer, *op.alternatives, *op.other_answers.values())
        if kind is not None
    } | {ErrorBody}
    ordered = sorted(models, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=REF_TEMPLATE)
    schema_of = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route, op in documented:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, op, schema_of)
    document: dict[str, Any] = _ecma_patterns(
        {
            "openapi": "3.1.0",
            "info": {"title": "breaker-service", "version": breaker_service.__version__},
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )
    return document


def _operation(route: Route, op: Operation, schema_of: dict[Any, Any]) -> dict[str, Any]:
    parameters = [_parameter("path", name, Name) for name in route.param_convertors]
    parameters += [_parameter("query", name, kind) for name, kind in op.query.items()]
    if op.role is Role.ADMIN:
        parameters.append(_IDEMPOTENCY_KEY)
    answer = schema_of[op.answer] if op.answer is not None else _UNTYPED.get(op.media_type, {"type": "string"})
    if op.alternatives:
        answer = {"oneOf": [answer, *(schema_of[kind] for kind in op.alternatives)]}
    responses: dict[str, Any] = {
        str(op.status): {"description": "success"} if op.status == 204 else _content(op.media_type, answer),
    }
    for status, kind in op.other_answers.items():
        responses[str(status)] = _content("application/json", schema_of[kind])
    for status in sorted(_error_statuses(route, op) - op.other_answers.keys()):
        responses[str(status)] = {**_content("application/json", _ERROR_REF), "description": ERRORS[status]}
    document: dict[str, Any] = {
        "operationId": route.name,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
        "x-role": op.role.name.lower() if op.role is not None else None,
        "security": [{"bearer": []}] if op.role is not None else [],
    }
    if op.body is not None:
        document["requestBody"] = {"required": op.body_required, **_content("application/json", schema_of[op.body])}
    return document


def _error_statuses(route: Route, op: Operation) -> set[int]:
    statuses = {422, 500, *op.errors}  # 422: an unknown query parameter, on any route
    if op.role is not None:
        statuses |= {401, 503}
    if op.role is Role.ADMIN:
        statuses |= {400, 403, 409, 422}  # Idempotency-Key: malformed, in flight, used for another request
    if "name" in route.param_convertors:
        statuses.add(404)
    if op.body is not None:
        statuses |= {400, 413, 415}
    return statuses


def _ecma_patterns(node: Any) -> Any:
    """Patterns end in `\\Z` for Python (where `$` also matches before a final newline); JSON Schema's regex dialect
    (ECMA 262) has no `\\Z`, and its `$` already means the very end."""
    if isinstance(node, dict):
        return {
            key: value[:-2] + "$"
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z")
            else _ecma_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ecma_patterns(item) for item in node]
    return node


def _parameter(where: str, name: str, kind: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": msgspec.json.schema(kind)}


def _content(media_type: str, schema: Any) -> dict[str, Any]:
    return {"description": "success", "content": {media_type: {"schema": schema}}}

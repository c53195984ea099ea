"""The OpenAPI 3.1 document, built from the route list and the wire models (msgspec writes every schema)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.routing import BaseRoute, Route

import breaker_service
from breaker_client.protocol.models import ErrorBody
from breaker_service.routes.common import OPERATIONS, Name, Operation

if TYPE_CHECKING:
    from collections.abc import Sequence

REF_TEMPLATE: Final = "#/components/schemas/{name}"
_ERROR_REF: Final = {"$ref": REF_TEMPLATE.format(name="ErrorBody")}
_UNTYPED: Final = {"application/json": {"type": "object"}}


def build_openapi(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """One path item per route, one operation per method, schemas from `msgspec.json.schema_components`."""
    documented = [(r, OPERATIONS[r.endpoint]) for r in routes if isinstance(r, Route) and r.endpoint in OPERATIONS]
    models = {kind for _, op in documented for kind in (op.body, op.answer) if kind is not None} | {ErrorBody}
    ordered = sorted(models, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=REF_TEMPLATE)
    schema_of = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route, op in documented:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "breaker-service", "version": breaker_service.__version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Route, op: Operation, schema_of: dict[Any, Any]) -> dict[str, Any]:
    parameters = [_parameter("path", name, Name) for name in route.param_convertors]
    parameters += [_parameter("query", name, kind) for name, kind in op.query.items()]
    answer = schema_of[op.answer] if op.answer is not None else _UNTYPED.get(op.media_type, {"type": "string"})
    responses: dict[str, Any] = {
        str(op.status): {"description": "success"} if op.status == 204 else _content(op.media_type, answer),
        "default": {"description": "error", **_content("application/json", _ERROR_REF)},
    }
    document: dict[str, Any] = {
        "operationId": route.name,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
        "x-role": op.role.name.lower() if op.role is not None else None,
        "security": [{"bearer": []}] if op.role is not None else [],
    }
    if op.body is not None:
        document["requestBody"] = {"required": True, **_content("application/json", schema_of[op.body])}
    return document


def _parameter(where: str, name: str, kind: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": msgspec.json.schema(kind)}


def _content(media_type: str, schema: Any) -> dict[str, Any]:
    return {"description": "success", "content": {media_type: {"schema": schema}}}

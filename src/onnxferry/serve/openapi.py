"""The OpenAPI 3.1 document the server publishes at /openapi.json, rendered from its route table.

    doc = openapi_document("0.1.0", api_keys=True)
    sorted(doc["paths"])          # ['/metrics', '/openapi.json', '/v2', '/v2/health/live', ...]

Security is declared as the server enforces it (``routes.Auth``): bearer keys on every route
but health and this document when ``api_keys``; on the repository API when either kind of key
is set. A route that needs a key documents 401.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .routes import ROUTES, Route

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def openapi_document(
    version: str = "",
    *,
    api_keys: bool = False,
    repository_keys: bool = False,
    routes: Iterable[Route] = ROUTES,
) -> dict[str, Any]:
    """Every route, its parameters, bodies, error statuses and the keys it needs."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, api_keys=api_keys, repository_keys=repository_keys
        )
    title = "onnxferry serve (KServe V2 / Open Inference Protocol)"
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}}
    if api_keys or repository_keys:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    if api_keys:
        doc["security"] = _BEARER
    doc["paths"] = paths
    return doc


def _operation(route: Route, *, api_keys: bool, repository_keys: bool) -> dict[str, Any]:
    if route.auth == "open":
        keyed, security = False, []
    elif route.auth == "repository":
        keyed = api_keys or repository_keys
        security = _BEARER if keyed else []
    else:
        keyed, security = api_keys, None  # the document's own security applies
    errors = sorted({*route.errors, *([401] if keyed else [])})
    op: dict[str, Any] = {
        "summary": route.summary,
        "responses": {"200": dict(route.ok), **{str(code): _ERROR for code in errors}},
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": dict(route.body)}
    path_params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.names
    ]
    parameters = [*path_params, *(dict(p) for p in route.parameters)]
    if parameters:
        op["parameters"] = parameters
    if security is not None:
        op["security"] = security
    return op

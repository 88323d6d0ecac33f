"""The server's routes as data: one table that the app dispatches on and /openapi.json renders.

    found = ROUTER.match("/v2/models/resnet/versions/2/infer")
    found.route("POST")      # the Route (endpoint "infer"); None: 405 if found.routes, else 404
    found.params             # {"model": "resnet", "version": "2"}
    found.auth               # the keys the path needs: "open", "api" or "repository"

A path is matched segment by segment, empty segments ignored ("/v2//models/m/" is
"/v2/models/m"); a ``{name}`` segment matches any one segment. A path that no route matches
still needs the keys of its area (``AREAS``), so a client without a key learns nothing of the
routes: 401 comes before 404 and 405. "repository" keys also need the repository API on (403).

``SAGEMAKER_ROUTES`` (``/ping``, ``/invocations``) join them when the server runs with
``--sagemaker`` (``SAGEMAKER_ROUTER``).

Each route carries its documentation too (summary, the 200 response, the error statuses, the
request body); ``openapi.openapi_document`` renders it, adding 401 where keys apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Auth = Literal["open", "api", "repository"]
"""No key; an API key (when the server has any); a repository key (or the API keys when it has
none), and the repository API switched on."""

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
_OBJECT = {"type": "object"}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": _OBJECT,
        "data": {"description": "row-major values (absent when sent as binary data)"},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "timeout": {"type": "integer", "description": "deadline in microseconds"},
                "binary_data_output": {"type": "boolean"},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _OBJECT},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _OBJECT,
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_INFER_BODY = {
    "application/json": {"schema": _INFER_REQUEST},
    "application/octet-stream": {
        "schema": {"type": "string", "format": "binary"},
        "description": "binary tensor data extension: a JSON header of "
        "Inference-Header-Content-Length bytes, then the tensors' raw bytes",
    },
}
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "schema": {"type": "integer"},
}


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": "ok", "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class Route:
    """One method on one path: who answers, what it needs, and what the document says."""

    method: str
    path: str
    """A template: literal segments and ``{name}`` segments, e.g. "/v2/models/{model}"."""
    endpoint: str
    """The name of what answers; the app maps each name to one of its methods."""
    auth: Auth
    summary: str
    ok: Mapping[str, Any] = field(default_factory=lambda: {"description": "ok"})
    """The 200 response object of the document."""
    errors: tuple[int, ...] = ()
    """Error statuses the route answers, besides 401 (documented where keys apply)."""
    body: Mapping[str, Any] | None = None
    """The request body's content by media type; None: no body."""
    parameters: tuple[Mapping[str, Any], ...] = ()
    """Documented parameters besides the path's (headers)."""

    @property
    def names(self) -> list[str]:
        """The path's parameters, in order: ["model", "version"]."""
        return [s[1:-1] for s in self.path.split("/") if s.startswith("{")]


def _per_model(suffix: str, method: str, endpoint: str, summary: str, **kw: Any) -> list[Route]:
    """The route on a model's path and on a version's."""
    prefixes = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    return [Route(method, prefix + suffix, endpoint, "api", summary, **kw) for prefix in prefixes]


_MODEL_ERRORS = (400, 404)


def _shared_memory() -> list[Route]:
    """Triton's system shared memory extension (shm.py): 403 while the server runs without
    ``--shared-memory system``, as the repository API."""
    base, one = "/v2/systemsharedmemory", "/v2/systemsharedmemory/region/{region}"
    status = "system shared memory regions: name, key, offset, byte_size"
    register = {"application/json": {"schema": {
        "type": "object",
        "required": ["key", "byte_size"],
        "properties": {"key": {"type": "string"}, "offset": {"type": "integer"},
                       "byte_size": {"type": "integer"}},
    }}}  # fmt: skip
    return [
        Route("GET", base + "/status", "shm_status", "api", status, ok=_json(_OBJECT),
              errors=(400, 403)),
        Route("GET", one + "/status", "shm_status", "api", status, ok=_json(_OBJECT),
              errors=(400, 403)),
        Route("POST", one + "/register", "shm_register", "api",
              "map a region of a /dev/shm object (key) for inputs and outputs", errors=(400, 403),
              body=register),
        Route("POST", base + "/unregister", "shm_unregister", "api", "forget every region",
              errors=(400, 403)),
        Route("POST", one + "/unregister", "shm_unregister", "api", "forget a region",
              errors=(400, 403)),
    ]  # fmt: skip


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "live", "open", "is the server live"),
    Route(
        "GET",
        "/v2/health/ready",
        "ready",
        "open",
        "does every model have a version serving (200) or not (400)",
        errors=(400,),
    ),
    Route("GET", "/v2", "server_metadata", "api", "server metadata", ok=_json(_OBJECT)),
    *_per_model(
        "",
        "GET",
        "model_metadata",
        "model metadata",
        ok=_json(_MODEL_METADATA),
        errors=_MODEL_ERRORS,
    ),
    *_per_model(
        "/ready",
        "GET",
        "model_ready",
        "is the model ready (200) or not (4xx)",
        errors=_MODEL_ERRORS,
    ),
    *_per_model(
        "/infer",
        "POST",
        "infer",
        "run inference",
        ok=_json(_INFER_RESPONSE),
        errors=(400, 404, 405, 408, 413, 500, 503, 504),
        body=_INFER_BODY,
        parameters=(_HEADER_LENGTH,),
    ),
    *_per_model(
        "/explain",
        "POST",
        "explain",
        "explain a prediction: attributions of the request's rows (parameters: method, input, "
        "target, max_evals, samples, segments, window, seed, kind)",
        ok=_json(_INFER_RESPONSE),
        errors=(400, 404, 408, 413, 500, 503, 504),
        body=_INFER_BODY,
        parameters=(_HEADER_LENGTH,),
    ),
    *_per_model(
        "/config",
        "GET",
        "model_config",
        "model configuration (Triton)",
        ok=_json(_OBJECT),
        errors=_MODEL_ERRORS,
    ),
    *_per_model(
        "/stats",
        "GET",
        "model_stats",
        "statistics (Triton extension)",
        ok=_json(_OBJECT),
        errors=_MODEL_ERRORS,
    ),
    Route(
        "POST",
        "/v2/repository/index",
        "repository_index",
        "repository",
        "models on disk and their state",
        errors=(403,),
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/load",
        "repository_load",
        "repository",
        "load or reload a model",
        errors=(400, 403, 404),
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/unload",
        "repository_unload",
        "repository",
        "stop serving a model",
        errors=(403, 404),
    ),
    *_shared_memory(),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "api",
        "Prometheus metrics",
        ok={"description": "text exposition"},
    ),
    Route("GET", "/openapi.json", "openapi", "open", "this document", ok=_json(_OBJECT)),
)

SAGEMAKER_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/ping",
        "ping",
        "open",
        "SageMaker health check: every model has a version serving (200) or not (503)",
        errors=(503,),
    ),
    Route(
        "POST",
        "/invocations",
        "invocations",
        "api",
        "SageMaker inference: a V2 body, plain JSON or .npy (see serve/sagemaker.py)",
        ok={
            "description": "ok",
            "content": {"application/json": {"schema": _OBJECT}, "application/x-npy": {}},
        },
        errors=(400, 404, 406, 408, 413, 415, 500, 503, 504),
        body={
            "application/json": {
                "schema": {"oneOf": [_INFER_REQUEST, {"type": ["array", "object"]}]}
            },
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
        },
        parameters=(
            {"name": "X-Amzn-SageMaker-Target-Model", "in": "header", "schema": {"type": "string"}},
            {"name": "model", "in": "query", "schema": {"type": "string"}},
        ),
    ),
)
"""The routes ``ServeSettings.sagemaker`` adds (``ferry serve --sagemaker``)."""

AREAS: Mapping[str, Auth] = {"/v2/repository": "repository", "/v2": "api"}
"""The keys a path no route matches needs, by its longest matching prefix (else none)."""


class Match(NamedTuple):
    """What a path matched: its routes (one per method; none: 404), their parameters and the
    keys they need."""

    routes: tuple[Route, ...]
    params: dict[str, str]
    auth: Auth

    def route(self, method: str) -> Route | None:
        """The route for ``method``; None when no route at this path takes it."""
        return next((r for r in self.routes if r.method == method), None)

    @property
    def allowed(self) -> str:
        """The methods this path takes, for 405's Allow header."""
        return ", ".join(r.method for r in self.routes)


class Router:
    """Paths to routes, by segment count, then segment by segment in table order."""

    def __init__(self, routes: Iterable[Route], areas: Mapping[str, Auth]) -> None:
        grouped: dict[tuple[str | None, ...], list[Route]] = {}
        for route in routes:
            pattern = tuple(None if s.startswith("{") else s for s in _segments(route.path))
            grouped.setdefault(pattern, []).append(route)
        self._paths: dict[int, list[_Template]] = {}
        for pattern, group in grouped.items():
            first, methods = group[0], {r.method for r in group}
            if len(methods) < len(group) or any(
                (r.path, r.auth) != (first.path, first.auth) for r in group
            ):
                text = "need one template and the same keys, and one route per method"
                raise ValueError(f"routes on {first.path} {text}")
            literals = [(i, s) for i, s in enumerate(pattern) if s is not None]
            holes = [i for i, s in enumerate(pattern) if s is None]
            slots = list(zip(first.names, holes, strict=True))
            found = Match(tuple(group), {}, first.auth)
            template = _Template(literals, slots, found)
            self._paths.setdefault(len(pattern), []).append(template)
        by_length = sorted(areas.items(), key=lambda item: -len(_segments(item[0])))
        self._areas = [(_segments(prefix), auth) for prefix, auth in by_length]

    def match(self, path: str) -> Match:
        parts = _segments(path)
        for template in self._paths.get(len(parts), ()):
            for i, literal in template.literals:
                if parts[i] != literal:
                    break
            else:
                params = {name: parts[i] for name, i in template.slots}
                return Match(template.found.routes, params, template.found.auth)
        for prefix, auth in self._areas:
            if parts[: len(prefix)] == prefix:
                return Match((), {}, auth)
        return Match((), {}, "open")


class _Template(NamedTuple):
    literals: list[tuple[int, str]]  # (segment index, the text it must be)
    slots: list[tuple[str, int]]  # (parameter name, segment index)
    found: Match


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


ROUTER = Router(ROUTES, AREAS)
SAGEMAKER_ROUTER = Router((*ROUTES, *SAGEMAKER_ROUTES), AREAS)

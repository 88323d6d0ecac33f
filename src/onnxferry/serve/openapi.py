"""The OpenAPI 3.1 document the server publishes at /openapi.json: every route it answers.

doc = openapi_document("0.1.0", api_keys=True)
sorted(doc["paths"])          # ['/metrics', '/openapi.json', '/v2', '/v2/health/live', ...]

Security is declared as the server enforces it: bearer keys on every route but health and
this document when ``api_keys``; on the repository API when either kind of key is set.
"""

from __future__ import annotations

from typing import Any

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
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
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
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
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
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
        "parameters": {"type": "object"},
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


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (401,),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok or {"description": "ok"}}
    responses.update({str(code): _ERROR for code in errors})
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


def openapi_document(
    version: str = "", *, api_keys: bool = False, repository_keys: bool = False
) -> dict[str, Any]:
    """Every route, its parameters, bodies, error statuses and the keys it needs."""
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ver = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    infer_body = {
        "application/json": {"schema": _INFER_REQUEST},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "binary tensor data extension: a JSON header of "
            "Inference-Header-Content-Length bytes, then the tensors' raw bytes",
        },
    }
    infer = _op(
        "run inference",
        _json(_INFER_RESPONSE),
        (400, 401, 404, 405, 408, 413, 500, 503, 504),
        infer_body,
    )
    infer["parameters"] = [
        {"name": "Inference-Header-Content-Length", "in": "header", "schema": {"type": "integer"}}
    ]
    per_model = {
        "": {"get": _op("model metadata", _json(_MODEL_METADATA), (400, 401, 404))},
        "/ready": {"get": _op("is the model ready (200) or not (4xx)", None, (400, 401, 404))},
        "/infer": {"post": infer},
        "/config": {
            "get": _op("model configuration (Triton)", _json({"type": "object"}), (400, 401, 404))
        },
        "/stats": {
            "get": _op("statistics (Triton extension)", _json({"type": "object"}), (400, 401, 404))
        },
    }
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _op("is the server live", None, ())},
        "/v2/health/ready": {
            "get": _op("does every model have a version serving (200) or not (400)", None, (400,))
        },
        "/v2": {"get": _op("server metadata", _json({"type": "object"}))},
        "/v2/repository/index": {"post": _op("models on disk and their state", None, (401, 403))},
        "/v2/repository/models/{model}/load": {
            "post": _op("load or reload a model", None, (400, 401, 403, 404))
        },
        "/v2/repository/models/{model}/unload": {
            "post": _op("stop serving a model", None, (401, 403, 404))
        },
        "/metrics": {"get": _op("Prometheus metrics", {"description": "text exposition"})},
        "/openapi.json": {"get": _op("this document", _json({"type": "object"}), ())},
    }
    for suffix, ops in per_model.items():
        for prefix, params in (
            ("/v2/models/{model}", [model]),
            ("/v2/models/{model}/versions/{version}", [model, ver]),
        ):
            paths[prefix + suffix] = {
                method: {**op, "parameters": [*params, *op.get("parameters", [])]}
                for method, op in ops.items()
            }
    for name in ("/v2/repository/models/{model}/load", "/v2/repository/models/{model}/unload"):
        paths[name]["post"]["parameters"] = [model]
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    for name in ("/v2/health/live", "/v2/health/ready", "/openapi.json"):
        paths[name]["get"]["security"] = []
    for name, item in paths.items():
        for op in item.values():
            if name.startswith("/v2/repository"):
                op["security"] = bearer if api_keys or repository_keys else []
            if not op.get("security", bearer if api_keys else []):
                op["responses"].pop("401", None)
    title = "onnxferry serve (KServe V2 / Open Inference Protocol)"
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}}
    if api_keys or repository_keys:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    if api_keys:
        doc["security"] = bearer
    doc["paths"] = paths
    return doc

"""The servers `benchmarks/serve.py` compares `ferry serve` against, one per process.

    BENCH/bin/python benchmarks/serve_backends.py pytriton MODEL.onnx --name cnn --port 8100
    BENCH/bin/python benchmarks/serve_backends.py fastapi MODEL.onnx --name cnn --port 8200
    .venv/bin/python benchmarks/serve_backends.py floor MODEL.onnx --name cnn --port 8300
    .venv/bin/python benchmarks/serve_backends.py protocol MODEL.onnx --name cnn --port 8400

Needs only numpy and onnxruntime, plus nvidia-pytriton or fastapi + uvicorn (the separate
benchmark venv made by benchmarks/setup_bench_env.sh); it never imports onnxferry.

- pytriton: Triton Inference Server (the tritonserver binary pytriton bundles) with dynamic
  batching (``--max-batch``, ``--queue-delay-us``), one model instance whose Python function
  runs one ONNX Runtime session with ``--threads`` intra-op threads.
- fastapi: what a user writes by hand: FastAPI + uvicorn, KServe V2 metadata and infer (JSON
  and the binary-tensor extension, so the same clients work), one request = one
  ``session.run`` in FastAPI's thread pool on one shared session with ``--threads`` threads.
- floor: the HTTP stack ferry serves on (uvicorn with httptools and uvloop) answering V2
  with zeros of the right shapes, without running the model: what any server on that stack
  costs per request before it does any work. It answers perf_analyzer's config and stats
  requests, so the same client measures it.
- protocol: the same answers from a bare asyncio Protocol on httptools' parser and uvloop,
  without uvicorn's ASGI layer (benchmarks/serve_floors.py): what that layer costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

_ORT_TO_NUMPY: dict[str, type[np.generic[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}
_V2: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.bool_): "BOOL",
}
_FROM_V2: dict[str, np.dtype[Any]] = {v: k for k, v in _V2.items()}


def session(path: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def tensors(args: list[Any]) -> list[tuple[str, np.dtype[Any], list[int]]]:
    """(name, numpy dtype, shape with -1 for symbolic dims) of ORT inputs or outputs."""
    out = []
    for a in args:
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in a.shape]
        out.append((a.name, np.dtype(_ORT_TO_NUMPY[a.type]), shape))
    return out


# --- Triton through pytriton -------------------------------------------------------------


def serve_pytriton(args: argparse.Namespace) -> None:
    # pytriton's Python-backend stub links libpython dynamically and picks the system one
    # first; with a venv from another build (pyenv) the stdlib and libpython then disagree
    # and the model fails to load. Put this interpreter's libpython first.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.exists(os.path.join(libdir, f"libpython{sys.version_info[0]}.so")):
        os.environ["LD_LIBRARY_PATH"] = ":".join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
        )
    from pytriton.decorators import batch  # type: ignore[import-not-found, unused-ignore]
    from pytriton.model_config import (  # type: ignore[import-not-found, unused-ignore]
        DynamicBatcher,
        ModelConfig,
        Tensor,
    )
    from pytriton.triton import (  # type: ignore[import-not-found, unused-ignore]
        Triton,
        TritonConfig,
        TritonSecurityConfig,
    )

    sess = session(args.model, args.threads)
    names = [o.name for o in sess.get_outputs()]
    batching = args.max_batch > 0

    def spec(t: tuple[str, np.dtype[Any], list[int]]) -> Any:
        name, dtype, shape = t
        return Tensor(name=name, dtype=dtype.type, shape=tuple(shape[1:] if batching else shape))

    def run(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, feeds), strict=True))

    config = TritonConfig(
        http_address=args.host,
        http_port=args.port,
        grpc_address=args.host,
        grpc_port=args.port + 1,
        metrics_port=args.port + 2,
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    # Keep the statistics endpoint open for perf_analyzer and the load generator.
    security = TritonSecurityConfig(
        restricted_endpoints=["shared-memory", "model-repository", "trace", "logging"]
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=batch(run) if batching else _unbatched(run),
            inputs=[spec(t) for t in tensors(sess.get_inputs())],
            outputs=[spec(t) for t in tensors(sess.get_outputs())],
            config=ModelConfig(max_batch_size=max(args.max_batch, 0), batcher=batcher),
            strict=False,
        )
        print(f"pytriton serving {args.name} on {args.host}:{args.port}", flush=True)
        triton.serve()


def _unbatched(run: Callable[..., dict[str, np.ndarray]]) -> Callable[..., Any]:
    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        return [run(**request.data) for request in requests]

    return infer


# --- plain FastAPI + ONNX Runtime ------------------------------------------------------


def fastapi_app(model: str, name: str, threads: int) -> Any:
    from fastapi import FastAPI, HTTPException, Request, Response  # type: ignore[import-not-found, unused-ignore]
    from starlette.concurrency import run_in_threadpool  # type: ignore[import-not-found, unused-ignore]

    sess = session(model, threads)
    inputs = tensors(sess.get_inputs())
    outputs = tensors(sess.get_outputs())
    metadata = {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": n, "datatype": _V2[d], "shape": s} for n, d, s in inputs],
        "outputs": [{"name": n, "datatype": _V2[d], "shape": s} for n, d, s in outputs],
    }
    app = FastAPI()

    async def health() -> dict[str, bool]:
        return {"live": True}

    async def model_metadata(model_name: str) -> dict[str, Any]:
        if model_name != name:
            raise HTTPException(404, f"unknown model {model_name!r}")
        return metadata

    async def infer(model_name: str, request: Request) -> Response:
        if model_name != name:
            raise HTTPException(404, f"unknown model {model_name!r}")
        body = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        header_end = int(header_length) if header_length else len(body)
        header = json.loads(body[:header_end])
        offset = header_end
        feeds: dict[str, np.ndarray] = {}
        for item in header["inputs"]:
            dtype = _FROM_V2[item["datatype"]]
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(
                    body, dtype=dtype, count=size // dtype.itemsize, offset=offset
                )
                offset += size
            else:
                array = np.asarray(item["data"], dtype=dtype)
            feeds[item["name"]] = array.reshape(item["shape"])
        results = await run_in_threadpool(sess.run, None, feeds)
        binary = bool((header.get("parameters") or {}).get("binary_data_output"))
        wanted = {o["name"]: o for o in header.get("outputs") or []}
        binary = binary or any(
            (o.get("parameters") or {}).get("binary_data") for o in wanted.values()
        )
        out_meta: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for (out_name, _, _), value in zip(outputs, results, strict=True):
            if wanted and out_name not in wanted:
                continue
            entry: dict[str, Any] = {
                "name": out_name,
                "datatype": _V2[value.dtype],
                "shape": list(value.shape),
            }
            if binary:
                data = np.ascontiguousarray(value).tobytes()
                entry["parameters"] = {"binary_data_size": len(data)}
                chunks.append(data)
            else:
                entry["data"] = value.ravel().tolist()
            out_meta.append(entry)
        head = json.dumps({"model_name": name, "model_version": "1", "outputs": out_meta}).encode()
        if not binary:
            return Response(head, media_type="application/json")
        return Response(
            b"".join([head, *chunks]),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    # FastAPI reads annotations at runtime; these names are local, so give it the objects.
    infer.__annotations__.update(request=Request, model_name=str)
    model_metadata.__annotations__.update(model_name=str)
    routes: list[tuple[str, Callable[..., Any], str]] = [
        ("/v2/health/live", health, "GET"),
        ("/v2/health/ready", health, "GET"),
        ("/v2/models/{model_name}", model_metadata, "GET"),
        ("/v2/models/{model_name}/ready", model_metadata, "GET"),
        ("/v2/models/{model_name}/infer", infer, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], response_model=None)
    return app


def serve_fastapi(args: argparse.Namespace) -> None:
    import uvicorn

    app = fastapi_app(args.model, args.name, args.threads)
    print(f"fastapi serving {args.name} on {args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


# --- the HTTP floor: uvicorn + httptools + uvloop, no model run ----------------------------

_TRITON_TYPES = {v: f"TYPE_{v}" for v in _V2.values()}  # TYPE_FP32, TYPE_BOOL, ...


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
_SERVER_DOC = b'{"name": "floor", "version": "0", "extensions": ["binary_tensor_data"]}'


def floor_answers(model: str, name: str, max_batch: int) -> Callable[..., Answer]:
    """``answer(path, body, header_length)`` -> (status, body, extra headers): the V2 routes
    perf_analyzer uses, infer answered with zeros of the right shapes. Shared by every floor."""
    sess = session(model, 1)  # for the signature only; it never runs
    inputs = tensors(sess.get_inputs())
    outputs = tensors(sess.get_outputs())

    def spec(items: list[tuple[str, np.dtype[Any], list[int]]], triton: bool) -> list[Any]:
        if triton:  # Triton's config leaves the batch axis out of dims
            return [
                {"name": n, "data_type": _TRITON_TYPES[_V2[d]], "dims": s[1:]} for n, d, s in items
            ]
        return [{"name": n, "datatype": _V2[d], "shape": s} for n, d, s in items]

    metadata = json.dumps(
        {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
         "inputs": spec(inputs, False), "outputs": spec(outputs, False)}
    ).encode()  # fmt: skip
    config = json.dumps(
        {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": max_batch,
         "input": spec(inputs, True), "output": spec(outputs, True)}
    ).encode()  # fmt: skip
    answered = [0]

    def stats() -> bytes:
        n = answered[0]
        one = {"count": n, "ns": n * 1000}
        phases = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        entry = {"name": name, "version": "1", "last_inference": 0, "inference_count": n,
                 "execution_count": n, "inference_stats": dict.fromkeys(phases, one),
                 "batch_stats": []}  # fmt: skip
        return json.dumps({"model_stats": [entry]}).encode()

    def infer(body: bytes, header_length: int | None) -> tuple[bytes, int]:
        header = json.loads(body[: header_length or len(body)])
        rows = header["inputs"][0]["shape"][0]
        head: list[dict[str, Any]] = []
        data = []
        for out_name, dtype, shape in outputs:
            value = np.zeros([rows, *shape[1:]], dtype)
            data.append(value.tobytes())
            head.append({"name": out_name, "datatype": _V2[dtype], "shape": list(value.shape),
                         "parameters": {"binary_data_size": len(data[-1])}})  # fmt: skip
        text = json.dumps({"model_name": name, "model_version": "1", "outputs": head}).encode()
        answered[0] += 1
        return b"".join([text, *data]), len(text)

    def answer(path: str, body: bytes, header_length: int | None) -> Answer:
        if path.endswith("/infer"):
            payload, head_length = infer(body, header_length)
            return 200, payload, [(b"inference-header-content-length", b"%d" % head_length)]
        if path.endswith("/config"):
            return 200, config, []
        if path.endswith("/stats"):
            return 200, stats(), []
        if path.startswith(f"/v2/models/{name}"):
            return 200, b"" if path.endswith("/ready") else metadata, []
        if path.rstrip("/") == "/v2":
            return (
                200,
                b'{"name": "floor", "version": "0", "extensions": ["binary_tensor_data"]}',
                [],
            )
        return (200 if path.startswith("/v2/health") else 404), b"", []

    return answer


def floor_app(model: str, name: str, max_batch: int) -> Any:
    """A raw ASGI app answering as ``floor_answers`` does."""
    answer = floor_answers(model, name, max_batch)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        length = dict(scope["headers"]).get(b"inference-header-content-length")
        status, body, extra = answer(
            scope["path"], b"".join(chunks), int(length) if length else None
        )
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_protocol_floor(args: argparse.Namespace) -> None:
    """The floor without ASGI: an asyncio Protocol feeding httptools' parser on uvloop, each
    answer written with one ``transport.write`` (keep-alive, no timeouts, no limits: a
    yardstick for what uvicorn's ASGI layer costs, not a server)."""
    import asyncio

    import httptools
    import uvloop

    answer = floor_answers(args.model, args.name, args.max_batch)
    reasons = {200: b"OK", 404: b"Not Found"}

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body: list[bytes] = []
            self.headers: dict[bytes, bytes] = {}

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            length = self.headers.get(b"inference-header-content-length")
            path = httptools.parse_url(self.url).path.decode()
            status, body, extra = answer(path, b"".join(self.body), int(length) if length else None)
            head = [b"HTTP/1.1 %d %s" % (status, reasons[status])]
            head += [b"content-type: application/json", b"content-length: %d" % len(body)]
            head += [k + b": " + v for k, v in extra]
            self.transport.write(b"\r\n".join([*head, b"", body]))
            self.url, self.body, self.headers = b"", [], {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Floor, args.host, args.port)
        print(f"protocol floor for {args.name} on {args.host}:{args.port}", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def serve_floor(args: argparse.Namespace) -> None:
    import uvicorn

    app = floor_app(args.model, args.name, args.max_batch)
    print(f"HTTP floor for {args.name} on {args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, http="httptools", loop="uvloop",
                log_level="warning", access_log=False)  # fmt: skip


def rsgi_floor_app(model: str, name: str, max_batch: int) -> Any:
    """An RSGI app (granian's own interface: one call a request, the body awaited whole, the
    answer handed over in one call) answering as ``floor_answers`` does."""
    answer = floor_answers(model, name, max_batch)

    async def app(scope: Any, protocol: Any) -> None:
        body = await protocol()
        length = scope.headers.get("inference-header-content-length")
        status, payload, extra = answer(scope.path, body, int(length) if length else None)
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        headers += [(k.decode(), v.decode()) for k, v in extra]
        protocol.response_bytes(status, headers, payload)

    return app


def serve_granian_floor(args: argparse.Namespace) -> None:
    """The floor's answers on granian embedded in a uvloop loop (HTTP/1.1, one Rust runtime
    thread), through ASGI (``granian-asgi``: the floor app) or RSGI (``granian-rsgi``)."""
    import asyncio
    import signal

    import uvloop
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    rsgi = args.kind == "granian-rsgi"
    build = rsgi_floor_app if rsgi else floor_app
    server = Server(
        build(args.model, args.name, args.max_batch),
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        log_enabled=False,
    )
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    print(f"{args.kind} floor for {args.name} on {args.host}:{args.port}", flush=True)
    loop.run_until_complete(server.serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "kind", choices=["pytriton", "fastapi", "floor", "protocol", "granian-asgi", "granian-rsgi"]
    )
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("--name", required=True, help="model name on the server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="ORT intra-op threads")
    parser.add_argument("--max-batch", type=int, default=8, help="pytriton: 0 = no batching")
    parser.add_argument("--queue-delay-us", type=int, default=500, help="pytriton batcher")
    args = parser.parse_args()
    serve = {
        "pytriton": serve_pytriton,
        "fastapi": serve_fastapi,
        "floor": serve_floor,
        "protocol": serve_protocol_floor,
        "granian-asgi": serve_granian_floor,
        "granian-rsgi": serve_granian_floor,
    }
    serve[args.kind](args)


if __name__ == "__main__":
    main()

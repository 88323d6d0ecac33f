"""Malformed KServe V2 gRPC calls against a live `ferry serve` gRPC front: a table of what
did not end in a client error code, and a check that the server keeps serving.

    .venv/bin/python benchmarks/grpc_fuzz.py              # every case, about a minute
    .venv/bin/python benchmarks/grpc_fuzz.py --random 2000 --seed 1

One server (REST and gRPC on loopback ports, ``serve.grpc_server.running_grpc``, API keys
on) over a repository of the test suite's models: ``types`` (an Identity per V2 datatype,
inputs ``in_<TYPE>[batch, 3]``), ``typed`` (those with a typed contents field), ``affine``
(x[batch, 4] -> y, z; two versions, batching) and ``bf16``. The calls are made with the
generated stub (``tritonclient.grpc.service_pb2_grpc``), not tritonclient's helpers, so
nothing is checked on the client side:

- ``keys``: a valid request with no key, a wrong one, another scheme, and two;
- ``infer``: a valid ModelInferRequest with one field made wrong at a time: model name and
  version, input names (missing, duplicated, unknown), datatypes, shapes (empty, 0, -1,
  2**62, 64 axes, a wrong element count), raw contents (missing, extra, short, long, empty),
  typed contents (the wrong field, the wrong count, NaN and inf, out of range, non-UTF-8
  BYTES, both raw and typed), request, input and output parameters of every kind
  (``binary_data_size``, ``timeout``, ``priority``, ``classification``, shared memory
  region names and sizes), unknown and duplicated requested outputs;
- ``other``: every other RPC given empty, unknown, over-long and non-ASCII names, unknown
  versions, load parameters of the wrong kind, and the RPCs this server does not have;
- ``--random N``: N requests with several of the ``infer`` changes at once (``--seed``).

A finding is a status outside the client-error codes (INTERNAL, UNKNOWN, or OK for a request
that cannot be right), a call that did not answer within 10 s, or a valid request failing
afterwards. Exit 1 when anything was found.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.test_serve_app

from tests.test_serve_app import V2_TYPES, affine, identity_all_types, write

from machine import cpu_summary

Change = Callable[[Any], object]
"""Makes one thing about a ModelInferRequest wrong, in place."""

CLIENT_ERRORS = {
    "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED",
    "PERMISSION_DENIED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNIMPLEMENTED",
    "FAILED_PRECONDITION", "OUT_OF_RANGE", "ALREADY_EXISTS",
}  # fmt: skip
TYPES = [t for t in V2_TYPES if t != "BF16"]  # ORT cannot feed strings and bfloat16 together
TYPED = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def repository(root: Path) -> Path:
    write(root / "types" / "1" / "model.onnx", identity_all_types(TYPES))
    write(root / "typed" / "1" / "model.onnx", identity_all_types(t for t in TYPES if t in TYPED))
    write(root / "bf16" / "1" / "model.onnx", identity_all_types(["BF16"]))
    write(root / "affine" / "1" / "model.onnx", affine(2.0))
    write(root / "affine" / "2" / "model.onnx", affine(3.0))
    (root / "affine" / "ferry.toml").write_text("max_batch_size = 16\n[versions]\npolicy = 'all'\n")
    return root


def _raw(datatype: str, rows: int = 2) -> bytes:
    if datatype == "BYTES":
        items = [f"w{i}".encode() for i in range(rows * 3)]
        return b"".join(len(b).to_bytes(4, "little") + b for b in items)
    dtype = np.dtype(V2_TYPES[datatype][1]) if datatype != "BF16" else np.dtype(np.uint16)
    return np.ones((rows, 3), dtype).tobytes()


def affine_request(pb: Any, raw: bool = True) -> Any:
    """A valid request to ``affine``: x[2, 4], raw or typed."""
    request = pb.ModelInferRequest(model_name="affine", model_version="1", id="r1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    values = np.arange(8, dtype=np.float32)
    if raw:
        request.raw_input_contents.append(values.tobytes())
    else:
        tensor.contents.fp32_contents.extend(values.tolist())
    return request


def types_request(pb: Any, raw: bool) -> Any:
    """A valid request to ``types`` (raw: every datatype's input, [2, 3]) or ``typed`` (those
    with a typed contents field)."""
    request = pb.ModelInferRequest(model_name="types" if raw else "typed")
    for datatype in TYPES if raw else [t for t in TYPES if t in TYPED]:
        tensor = request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[2, 3])
        if raw:
            request.raw_input_contents.append(_raw(datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(f"w{i}".encode() for i in range(6))
        elif datatype == "BOOL":
            tensor.contents.bool_contents.extend([True, False] * 3)
        else:
            getattr(tensor.contents, TYPED[datatype]).extend([1] * 6)
    return request


def _param(holder: Any, key: str, value: object) -> None:
    p = holder[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int) and value >= 1 << 63:
        p.uint64_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def infer_changes() -> Iterator[tuple[str, str, Change]]:
    """(name, base request: "raw" / "typed" / "types-raw" / "types-typed", change)."""

    def setter(**fields: Any) -> Change:
        def change(r: Any) -> None:
            for k, v in fields.items():
                setattr(r, k, v)

        return change

    for name in ("", "nope", "a" * 5000, "ü/../x", "affine\x00"):
        yield f"model_name={name[:12]!r}", "raw", setter(model_name=name)
    for version in ("0", "-1", "abc", "9" * 40, " 1", "1.0"):
        yield f"model_version={version[:12]!r}", "raw", setter(model_version=version)
    yield "id 100k chars", "raw", setter(id="i" * 100_000)

    def tensor_field(base: str, label: str, fn: Callable[[Any], None]) -> Iterator[Any]:
        yield label, base, lambda r: fn(r.inputs[0])

    for base in ("raw", "typed"):
        for name in ("", "y", "X", "x\x00", "é" * 300):
            yield from tensor_field(base, f"{base}: input name {name[:8]!r}", _set("name", name))
        for datatype in ("", "fp32", "FP8", "STRING", "FP16", "BF16", "INT64", "BYTES", "🙂"):
            yield from tensor_field(
                base, f"{base}: datatype {datatype!r}", _set("datatype", datatype)
            )
        for shape in ([], [0], [0, 4], [-1, 4], [2, -4], [1 << 62, 4], [4, 2], [8], [1] * 64,
                      [2, 4, 1], [(1 << 63) - 1, 2], [3, 4]):  # fmt: skip
            yield from tensor_field(base, f"{base}: shape {str(shape)[:24]}", _shape(shape))
        yield f"{base}: input twice", base, lambda r: r.inputs.append(r.inputs[0])
        yield f"{base}: no inputs", base, lambda r: r.ClearField("inputs")
        yield f"{base}: extra unknown input", base, _extra_input
        for key, value in _parameter_values():
            shown = f"{key}={str(value)[:16]}"
            yield f"{base}: input parameter {shown}", base, _param_on("input", key, value)
            yield f"{base}: request parameter {shown}", base, _param_on("request", key, value)
            yield f"{base}: output parameter {shown}", base, _param_on("output", key, value)
        for out in ("", "nope", "x", "y\x00"):
            yield f"{base}: output {out!r}", base, _output(out)
        yield f"{base}: output y twice", base, lambda r: [r.outputs.add(name="y") for _ in "ab"]
        yield f"{base}: empty parameter", base, lambda r: r.parameters["timeout"].Clear()

    raw_cases: dict[str, Change] = {
        "no raw contents": lambda r: r.ClearField("raw_input_contents"),
        "two raw contents": lambda r: r.raw_input_contents.append(b"\0" * 32),
        "raw short": lambda r: _raw_to(r, r.raw_input_contents[0][:-1]),
        "raw long": lambda r: _raw_to(r, r.raw_input_contents[0] + b"\0"),
        "raw empty": lambda r: _raw_to(r, b""),
        "raw 1 MiB": lambda r: _raw_to(r, b"\0" * (1 << 20)),
        "raw and typed": lambda r: r.inputs[0].contents.fp32_contents.extend([1.0] * 8),
        "raw NaN": lambda r: _raw_to(r, np.full(8, np.nan, np.float32).tobytes()),
    }
    for label, change in raw_cases.items():
        yield f"raw: {label}", "raw", change
    typed_cases: dict[str, Change] = {
        "no contents": lambda r: r.inputs[0].ClearField("contents"),
        "7 values": lambda r: r.inputs[0].contents.fp32_contents.pop(),
        "9 values": lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
        "NaN": lambda r: _fp32_to(r, float("nan")),
        "inf": lambda r: _fp32_to(r, float("inf")),
        "int64 field": lambda r: r.inputs[0].contents.int64_contents.extend([1] * 8),
        "bytes field": lambda r: r.inputs[0].contents.bytes_contents.extend([b"1"] * 8),
        "only a wrong field": lambda r: (
            r.inputs[0].ClearField("contents"),
            r.inputs[0].contents.bool_contents.extend([True] * 8),
        ),
    }
    for label, change in typed_cases.items():
        yield f"typed: {label}", "typed", change

    for base in ("types-raw", "types-typed"):
        for datatype in TYPES:
            if base == "types-typed" and datatype == "FP16":
                continue
            yield from _typed_value_cases(base, datatype)


def _typed_value_cases(base: str, datatype: str) -> Iterator[tuple[str, str, Change]]:
    def pick(r: Any) -> Any:
        return next(t for t in r.inputs if t.datatype == datatype)

    def index(r: Any) -> int:
        return [t.datatype for t in r.inputs].index(datatype)

    if base == "types-raw":
        yield f"{datatype}: raw one byte short", base, lambda r: _raw_at(r, index(r), -1)
        yield f"{datatype}: raw one byte long", base, lambda r: _raw_at(r, index(r), 1)
        if datatype == "BYTES":
            yield (
                "BYTES: a length past the end",
                base,
                lambda r: _raw_set(r, index(r), (1 << 31).to_bytes(4, "little") + b"x"),
            )
            yield (
                "BYTES: non-UTF-8",
                base,
                lambda r: _raw_set(r, index(r), b"".join(b"\x02\0\0\0\xff\xfe" for _ in range(6))),
            )
        return
    field = TYPED[datatype]
    extremes: dict[str, list[object]] = {
        "bool_contents": [],
        "int_contents": [-(1 << 31), (1 << 31) - 1, 1000, -1000],
        "int64_contents": [-(1 << 63), (1 << 63) - 1],
        "uint_contents": [(1 << 32) - 1, 70000],
        "uint64_contents": [(1 << 64) - 1],
        "fp32_contents": [float("nan"), float("inf"), 3.4e38],
        "fp64_contents": [float("nan"), float("-inf"), 1e308],
        "bytes_contents": [b"\xff\xfe", b"\0", b"x" * 100_000],
    }
    for value in extremes[field]:

        def change(r: Any, v: object = value) -> None:
            _set_all(getattr(pick(r).contents, field), v)

        yield f"{datatype}: typed {str(value)[:16]}", base, change
    yield f"{datatype}: typed 5 values", base, lambda r: getattr(pick(r).contents, field).pop()


def _param_on(where: str, key: str, value: object) -> Change:
    """Sets parameter ``key`` on the request, its first input, or a requested output y."""

    def change(r: Any) -> None:
        if where == "output":
            holder = r.outputs.add(name="y")
        else:
            holder = r.inputs[0] if where == "input" else r
        _param(holder.parameters, key, value)

    return change


def _output(name: str) -> Change:
    return lambda r: r.outputs.add(name=name)


def _set(attr: str, value: Any) -> Callable[[Any], None]:
    return lambda t: setattr(t, attr, value)


def _shape(shape: list[int]) -> Callable[[Any], None]:
    def change(t: Any) -> None:
        t.ClearField("shape")
        t.shape.extend(shape)

    return change


def _extra_input(r: Any) -> None:
    extra = r.inputs.add(name="w", datatype="FP32", shape=[2, 4])
    if r.raw_input_contents:
        r.raw_input_contents.append(b"\0" * 32)
    else:
        extra.contents.fp32_contents.extend([0.0] * 8)


def _raw_to(r: Any, data: bytes) -> None:
    r.raw_input_contents[0] = data


def _raw_at(r: Any, i: int, delta: int) -> None:
    data = r.raw_input_contents[i]
    r.raw_input_contents[i] = data[:delta] if delta < 0 else data + b"\0" * delta


def _raw_set(r: Any, i: int, data: bytes) -> None:
    r.raw_input_contents[i] = data


def _fp32_to(r: Any, value: float) -> None:
    _set_all(r.inputs[0].contents.fp32_contents, value)


def _set_all(values: Any, value: Any) -> None:
    for i in range(len(values)):
        values[i] = value


def _parameter_values() -> Iterator[tuple[str, object]]:
    keys = (
        "binary_data_size", "binary_data", "binary_data_output", "timeout", "priority",
        "classification", "sequence_id", "sequence_start", "shared_memory_region",
        "shared_memory_byte_size", "shared_memory_offset", "explain", "headers", "",
    )  # fmt: skip
    for key in keys:
        for value in (True, -1, 0, 1 << 40, (1 << 64) - 1, float("nan"), -0.5, "x", "", "ü"):
            yield key, value


def other_calls(pb: Any) -> Iterator[tuple[str, str, Any]]:
    """(label, RPC name, request) for the RPCs other than ModelInfer."""
    names = ("", "nope", "a" * 5000, "ü", "affine\x00", "../types")
    for name in names:
        for version in ("", "1", "0", "-1", "x" * 300):
            label = f"{name[:8]!r} v{version[:8]!r}"
            yield (
                f"ModelReady {label}",
                "ModelReady",
                pb.ModelReadyRequest(name=name, version=version),
            )
            yield (
                f"ModelMetadata {label}", "ModelMetadata",
                pb.ModelMetadataRequest(name=name, version=version),
            )  # fmt: skip
            yield (
                f"ModelConfig {label}", "ModelConfig",
                pb.ModelConfigRequest(name=name, version=version),
            )  # fmt: skip
            yield (
                f"ModelStatistics {label}", "ModelStatistics",
                pb.ModelStatisticsRequest(name=name, version=version),
            )  # fmt: skip
        yield (
            f"Unload {name[:8]!r}",
            "RepositoryModelUnload",
            pb.RepositoryModelUnloadRequest(model_name=name),
        )
        yield (
            f"Load {name[:8]!r}",
            "RepositoryModelLoad",
            pb.RepositoryModelLoadRequest(model_name=name),
        )
    for key, value in (
        ("config", "{"), ("config", "[]"), ("config", '{"max_batch_size": -5}'), ("config", 5),
        ("file:1/model.onnx", "junk"), ("file:../../x", "x"), ("config", True), ("", ""),
    ):  # fmt: skip
        request = pb.RepositoryModelLoadRequest(model_name="affine")
        p = request.parameters[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        else:
            p.string_param = value
        yield f"Load affine {key}={str(value)[:12]}", "RepositoryModelLoad", request
    yield "RepositoryIndex", "RepositoryIndex", pb.RepositoryIndexRequest(repository_name="x")
    yield "ShmStatus", "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest(name="x")
    yield (
        "ShmRegister",
        "SystemSharedMemoryRegister",
        pb.SystemSharedMemoryRegisterRequest(
            name="r", key="/nope", offset=1 << 62, byte_size=1 << 62
        ),
    )
    yield (
        "ShmUnregister",
        "SystemSharedMemoryUnregister",
        (pb.SystemSharedMemoryUnregisterRequest(name="r")),
    )
    yield "CudaShmStatus", "CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()
    yield "TraceSetting", "TraceSetting", pb.TraceSettingRequest(model_name="x")
    yield "LogSettings", "LogSettings", pb.LogSettingsRequest()


KEY = "fuzz-key-0123456789abcdef"
AUTH = (("authorization", f"Bearer {KEY}"),)
BAD_AUTH = (
    (), (("authorization", ""),), (("authorization", "Bearer"),),
    (("authorization", "Bearer wrong"),), (("authorization", f"Basic {KEY}"),),
    (("authorization", f"bearer  {KEY} "),), (("authorization", "Bearer " + "k" * 8000),),
    (("authorization", f"Bearer {KEY}"), ("authorization", "Bearer wrong")),
)  # fmt: skip


class Fuzz:
    """Calls on one live server; a finding is remembered with its label."""

    def __init__(self, stub: Any, pb: Any, verbose: bool = False) -> None:
        self.stub, self.pb, self.verbose = stub, pb, verbose
        self.findings: list[tuple[str, str]] = []
        self.codes: dict[str, int] = {}
        self.calls = 0

    def call(
        self,
        label: str,
        rpc: str,
        request: Any,
        metadata: tuple[tuple[str, str], ...] = AUTH,
        expect_refusal: bool = False,
    ) -> None:
        import grpc

        self.calls += 1
        try:
            getattr(self.stub, rpc)(request, timeout=10, metadata=metadata)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
            if code not in CLIENT_ERRORS:
                self.findings.append((label, f"{code}: {e.details()[:160]}"))
        self.codes[code] = self.codes.get(code, 0) + 1
        if code == "OK" and expect_refusal:
            self.findings.append((label, "OK for a call that must be refused"))
        if self.verbose:
            print(f"{code:18s} {label[:100]}")

    def still_serves(self, label: str) -> None:
        reply = self.stub.ModelInfer(affine_request(self.pb), timeout=10, metadata=AUTH)
        got = np.frombuffer(reply.raw_output_contents[0], np.float32)
        if not np.allclose(got, np.arange(8, dtype=np.float32) * 2 + 1):
            self.findings.append((label, "a valid request then gave other outputs"))


def bases(pb: Any) -> dict[str, Callable[[], Any]]:
    return {
        "raw": lambda: affine_request(pb, raw=True),
        "typed": lambda: affine_request(pb, raw=False),
        "types-raw": lambda: types_request(pb, raw=True),
        "types-typed": lambda: types_request(pb, raw=False),
    }


def run_fuzz(random_calls: int = 0, seed: int = 0, verbose: bool = False) -> Fuzz:
    """Every fixed case, then ``random_calls`` requests with several changes at once, on a
    server of its own (API keys on: the calls carry one, but for the key cases)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    from onnxferry.serve.app import ServeApp, ServeSettings
    from onnxferry.serve.grpc_server import running_grpc
    from onnxferry.serve.repository import Repository

    with tempfile.TemporaryDirectory() as tmp:
        repo = repository(Path(tmp) / "repo")
        settings = ServeSettings(api_keys=(KEY,), repository_api=True, body_limit=4 << 20)
        app = ServeApp(Repository.open(repo), settings)
        with running_grpc(app) as (_, target), grpc.insecure_channel(target) as channel:
            fuzz = Fuzz(service_pb2_grpc.GRPCInferenceServiceStub(channel), pb, verbose)
            _drive(fuzz, random_calls, seed)
    return fuzz


def _drive(fuzz: Fuzz, random_calls: int, seed: int) -> None:
    made = bases(fuzz.pb)
    for name, base in made.items():
        fuzz.call(f"valid {name}", "ModelInfer", base())
        if fuzz.codes.pop("OK", 0) == 0:
            fuzz.findings.append((f"valid {name}", "was refused"))
    for metadata in BAD_AUTH:
        label = f"key {str(metadata)[:40]}"
        fuzz.call(label, "ModelInfer", made["raw"](), metadata, expect_refusal=True)
    changes = list(infer_changes())
    for label, base_name, change in changes:
        request = made[base_name]()
        change(request)
        fuzz.call(label, "ModelInfer", request)
    fuzz.still_serves("after the infer cases")
    for label, rpc, request in other_calls(fuzz.pb):
        fuzz.call(label, rpc, request)
    fuzz.still_serves("after the other RPCs")
    rng = random.Random(seed)
    for i in range(random_calls):
        picked = rng.sample(changes, rng.randint(2, 4))
        base_name = picked[0][1]
        request = made[base_name]()
        applied = []
        for label, b, change in picked:
            if b == base_name:
                try:
                    change(request)
                    applied.append(label)
                except (IndexError, StopIteration, ValueError):
                    pass  # an earlier change left nothing for this one
        fuzz.call(f"random {i}: " + " + ".join(applied), "ModelInfer", request)
    fuzz.still_serves("at the end")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=0, help="random multi-change requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print every call's code")
    args = parser.parse_args(argv)
    print(cpu_summary())
    start = time.perf_counter()
    fuzz = run_fuzz(args.random, args.seed, args.verbose)
    wall = time.perf_counter() - start
    print(f"{fuzz.calls} calls in {wall:.0f} s; status codes: {dict(sorted(fuzz.codes.items()))}")
    if not fuzz.findings:
        print("0 findings")
        return 0
    print("\n| call | finding |\n|---|---|")
    for label, finding in fuzz.findings:
        print(f"| {label[:80]} | {finding} |")
    return 1


if __name__ == "__main__":
    sys.exit(main())

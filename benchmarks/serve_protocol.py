"""Cost of the V2 codec on the serve hot path (run by hand, not a test).

    .venv/bin/python benchmarks/serve_protocol.py [--repeat 2000]

A 1x3x224x224 FP32 request as tritonclient sends it (binary, then JSON for scale), decoded
against the model's signature, and a 1x1000 FP32 answer encoded back: median microseconds per
call. The binary decode + encode round trip should stay well under 100 µs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.http as triton

from onnxferry.serve.protocol import body_buffer, decode_infer_request
from onnxferry.serve.responses import encode_infer_response
from onnxferry.signature import Signature, TensorSpec, dtype_from_v2

FP32 = dtype_from_v2("FP32")
SIGNATURE = Signature(
    (TensorSpec("x", FP32, ("batch", 3, 224, 224)),), (TensorSpec("y", FP32, ("batch", 1000)),)
)


def median_us(call: Callable[[], Any], repeat: int) -> float:
    for _ in range(min(50, repeat)):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def request(binary: bool) -> tuple[bytes, int | None]:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    item = triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("y", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [item], outputs=outputs
    )
    return body, header_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    repeat = parser.parse_args().repeat

    body, header_length = request(binary=True)
    assert header_length is not None
    aligned = body_buffer(len(body), header_length)
    aligned[:] = body
    misaligned_raw = np.empty(len(body) + 8, np.uint8)
    shift = next(i for i in range(8) if (misaligned_raw.ctypes.data + i + header_length) % 4)
    misaligned = misaligned_raw[shift : shift + len(body)].data
    misaligned[:] = body
    logits = {"y": np.random.default_rng(1).standard_normal((1, 1000)).astype(np.float32)}
    decoded = decode_infer_request(aligned, header_length, SIGNATURE)

    def encode() -> Any:
        return encode_infer_response(
            model_name="cnn",
            model_version="1",
            request_id=decoded.id,
            outputs=logits,
            requested=decoded.outputs,
            binary_default=decoded.binary_output,
        )

    def round_trip(view: Any) -> Callable[[], Any]:
        def call() -> Any:
            got = decode_infer_request(view, header_length, SIGNATURE)
            return got, encode()

        return call

    json_body, _ = request(binary=False)
    rows = [
        (
            "decode binary, aligned (zero-copy)",
            lambda: decode_infer_request(aligned, header_length, SIGNATURE),
        ),
        (
            "decode binary, misaligned (one copy)",
            lambda: decode_infer_request(misaligned, header_length, SIGNATURE),
        ),
        ("encode 1x1000 FP32, binary", encode),
        ("decode + encode, aligned", round_trip(aligned)),
        ("decode + encode, misaligned", round_trip(misaligned)),
        ("decode + encode, tritonclient's bytes", round_trip(body)),
        ("decode JSON (for scale)", lambda: decode_infer_request(json_body, None, SIGNATURE)),
    ]
    print(f"request body {len(body)} bytes (header {header_length}); median of {repeat} calls")
    for label, call in rows:
        n = repeat if "JSON" not in label else max(5, repeat // 200)
        print(f"  {label:40s} {median_us(call, n):9.1f} µs")


if __name__ == "__main__":
    main()

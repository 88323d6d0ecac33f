"""What the server says about a model: its V2 metadata and Triton's model configuration.

    model_metadata("resnet", ["1", "2"], signature)           # GET /v2/models/{m}
    triton_config("resnet", signature, config, batching=True)  # GET /v2/models/{m}/config

Symbolic or unknown dims are -1 in both; with batching, the configuration's dims leave out the
batch axis, as Triton's do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..runtime import usable_cores
from ..signature import Signature, TensorSpec
from .config import ModelConfig


def model_metadata(
    name: str, versions: list[str], signature: Signature, platform: str = "onnxruntime_onnx"
) -> dict[str, Any]:
    """The V2 model metadata object; symbolic or unknown dims (and an unknown rank) are -1."""

    def describe(spec: TensorSpec) -> dict[str, Any]:
        shape = (
            [-1] if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
        )
        return {"name": spec.name, "datatype": v2_name(spec), "shape": shape}

    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [describe(spec) for spec in signature.inputs],
        "outputs": [describe(spec) for spec in signature.outputs],
    }


def v2_name(spec: TensorSpec) -> str:
    """The V2 datatype a tensor is declared with. Sequence and map outputs (not tensors in
    ONNX) are BYTES, each element one JSON document (see ``tensors``)."""
    if spec.dtype.v2 is not None:
        return spec.dtype.v2
    return "BYTES" if spec.dtype.onnx == 0 else spec.dtype.onnx_name


def triton_type(spec: TensorSpec) -> str:
    """Triton's model-config data type for a tensor ("TYPE_FP32"; BYTES is "TYPE_STRING", and
    so are sequence and map outputs, sent as JSON text)."""
    v2 = spec.dtype.v2 or ("BYTES" if spec.dtype.onnx == 0 else None)
    if v2 is None:
        return "TYPE_INVALID"
    return "TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}"


def triton_config(
    name: str,
    signature: Signature,
    config: ModelConfig,
    batching: bool,
    *,
    parallelism: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The model configuration as Triton returns it at GET /v2/models/{m}/config (its
    model_config.proto in JSON), enough for perf_analyzer and tritonclient.

    ``parallelism`` = (instances, threads) actually used; default ``config.parallelism`` on
    the usable cores. With ``batching`` the dims leave out the batch axis, as Triton's do.
    """
    instances, threads = parallelism or config.parallelism(usable_cores())

    def tensors(specs: Iterable[TensorSpec]) -> list[dict[str, Any]]:
        out = []
        for spec in specs:
            shape = list(spec.shape) if spec.shape is not None else [None]
            dims = shape[1:] if batching else shape
            out.append(
                {
                    "name": spec.name,
                    "data_type": triton_type(spec),
                    "dims": [d if isinstance(d, int) else -1 for d in dims],
                }
            )
        return out

    result: dict[str, Any] = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": config.version_policy.to_triton(),
        "max_batch_size": config.max_batch_size if batching else 0,
        "input": tensors(signature.inputs),
        "output": tensors(signature.outputs),
        "instance_group": [_instance_group(name, config, instances)],
        "parameters": {
            "intra_op_thread_count": {"string_value": str(threads)},
            "inter_op_thread_count": {"string_value": "1"},
        },
        "model_transaction_policy": {"decoupled": False},
    }
    if batching:
        queue_policy: dict[str, Any] = {"max_queue_size": config.max_queue_size}
        if config.timeout_ms is not None:
            queue_policy["default_timeout_microseconds"] = round(config.timeout_ms * 1000)
        result["dynamic_batching"] = {
            "max_queue_delay_microseconds": round(config.max_queue_delay_ms * 1000),
            "default_queue_policy": queue_policy,
        }
    return result


def _instance_group(name: str, config: ModelConfig, instances: int) -> dict[str, Any]:
    """Triton's instance group: ``instances`` on the CPU, or a device pool's sessions (Triton
    counts instances per GPU and lists the GPUs)."""
    pool = config.device_pool
    gpus = [device.index for device in pool if device.provider != "cpu"]
    if gpus:
        return {"name": name, "count": config.instances or 1, "kind": "KIND_GPU", "gpus": gpus}
    count = len(pool) * (config.instances or 1) if pool else instances
    return {"name": name, "count": count, "kind": "KIND_CPU"}

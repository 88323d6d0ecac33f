"""What a provider computes in (fp32, fp16, int8), and the provider options that say so.

    check_precision("tensorrt", "fp16")                     # UsageError for cpu/cuda + fp16
    options = precision_options(model, "tensorrt", "fp16")  # trt_fp16_enable, engine cache
    options["trt_engine_cache_path"]                        # .../tensorrt/<digest>-fp16
    precision_options(model, "openvino", "fp16")            # {..., "precision": "FP16"}

Precision is a property of two providers only; every other one computes the model as written
(fp32 for an fp32 model) and takes ``fp32`` alone:

- ``tensorrt`` (ONNX Runtime's TensorRT execution provider): ``fp16`` sets
  ``trt_fp16_enable``; ``int8`` sets ``trt_int8_enable``. TensorRT takes int8 scales from a
  QDQ model's QuantizeLinear / DequantizeLinear nodes (what `ferry optimize`'s static int8
  writes) or from a calibration table (``calibration_table``: a TensorRT-native table, told by
  its ``TRT-`` first line, or ONNX Runtime's ``calibration.flatbuffers``); int8 on a model with
  neither is refused. A QDQ model always gets ``trt_int8_enable``, whatever the precision:
  TensorRT refuses to build int8 layers without it ("Int8 precision has been set for a layer
  ... but int8 is not configured in the builder", onnxruntime issue 13381), and a table is
  never passed with one (TensorRT rejects a table when the model has Q/DQ nodes).
- ``openvino``: the ``precision`` option of ONNX Runtime's OpenVINO execution provider
  (``FP32`` / ``FP16``), which ``ovsession`` maps to OpenVINO's ``INFERENCE_PRECISION_HINT``
  (f32 / f16). int8 on OpenVINO comes from a QDQ model, not from a setting, so it is not
  offered.

The TensorRT engine cache is on by default, under ``engine_cache_root()``
(``$XDG_CACHE_HOME/onnxferry/tensorrt``, else ``~/.cache/onnxferry/tensorrt``), one
directory per model digest and precision: the execution provider names an engine by a hash of
the model's file name, input names and node output names plus the ORT / CUDA / TensorRT
versions, and adds ``_fp16`` / ``_int8`` to it, but never hashes the weights, so two models
that differ only in weights would share a file if they shared a directory. The timing cache
(TensorRT's kernel timings, valid across models on one GPU) is shared under ``timing/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError
from .model import Model

PRECISIONS = ("fp32", "fp16", "int8")
OFFERED: Mapping[str, tuple[str, ...]] = {
    "tensorrt": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16"),
}
"""The precisions each provider takes; a provider not named here takes fp32 only."""

CALIBRATION_TABLE = "calibration.table"
"""The name a calibration table is copied under, in the model's engine cache directory (the
execution provider reads the table from there)."""


def check_precision(provider: str, precision: str) -> None:
    """UsageError (one line) unless ``provider`` (a short name) takes ``precision``."""
    if precision not in PRECISIONS:
        raise UsageError(
            f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    offered = OFFERED.get(provider, ("fp32",))
    if precision in offered:
        return
    if provider == "openvino":
        raise UsageError(
            "openvino takes no int8 precision setting: int8 on OpenVINO comes from a QDQ model",
            hint="quantize the model (ferry optimize with a static int8 recipe) and run it at "
            "--precision fp32",
        )
    raise UsageError(
        f"provider {provider!r} computes the model as written (fp32), not {precision}",
        hint="--precision fp16/int8 is for --provider tensorrt (and fp16 for openvino); "
        "for fp16 on other providers convert the model (ferry optimize with an fp16 recipe)",
    )


def engine_cache_root() -> Path:
    """Where TensorRT engines are cached by default: ``$XDG_CACHE_HOME/onnxferry/tensorrt``,
    else ``~/.cache/onnxferry/tensorrt``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnxferry" / "tensorrt"


def has_qdq(model: Model) -> bool:
    """True when the main graph holds QuantizeLinear or DequantizeLinear nodes (a QDQ model)."""
    return any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in ("", "ai.onnx")
        for n in model.proto.graph.node
    )


def precision_options(
    model: Model,
    provider: str,
    precision: str = "fp32",
    *,
    engine_cache: str | Path | None = None,
    calibration_table: str | Path | None = None,
) -> dict[str, Any]:
    """The provider options that make ``provider`` compute ``model`` at ``precision`` (see the
    module docstring); {} for a provider without any. UsageError for a precision the provider
    does not take, int8 on a TensorRT model without Q/DQ nodes or a calibration table, or a
    table given with a QDQ model or without int8. Pure: ``prepare_engine_cache`` makes the
    directories and copies the table."""
    check_precision(provider, precision)
    if calibration_table is not None and (provider != "tensorrt" or precision != "int8"):
        raise UsageError(
            "a calibration table is for --provider tensorrt --precision int8",
            hint="drop --calibration-table, or run int8 on tensorrt",
        )
    if provider == "openvino":
        return {"device_type": "CPU", "precision": precision.upper()}
    if provider != "tensorrt":
        return {}
    qdq = has_qdq(model)
    if precision == "int8" and not qdq and calibration_table is None:
        raise UsageError(
            f"int8 on tensorrt needs scales, and {model.name} has no Q/DQ nodes",
            hint="quantize it (ferry optimize with a static int8 recipe) or give "
            "--calibration-table FILE",
        )
    if qdq and calibration_table is not None:
        raise UsageError(
            f"{model.name} has Q/DQ nodes, which carry its int8 scales; TensorRT takes no "
            "calibration table with them",
            hint="drop --calibration-table",
        )
    root = Path(engine_cache) if engine_cache is not None else engine_cache_root()
    engines = root / f"{model.digest[:16]}-{precision}"
    options: dict[str, Any] = {
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": precision == "int8" or qdq,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(root / "timing"),
    }
    if calibration_table is not None:
        table = Path(calibration_table)
        options["trt_int8_calibration_table_name"] = CALIBRATION_TABLE
        options["trt_int8_use_native_calibration_table"] = _native_table(table)
    return options


def prepare_engine_cache(
    options: Mapping[str, Any], calibration_table: str | Path | None = None
) -> None:
    """Make the cache directories ``options`` name and copy ``calibration_table`` into the
    engine directory (atomically), where the execution provider reads it; UsageError when a
    directory cannot be made or the table cannot be read."""
    from .atomic import write_bytes_atomic

    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if key in options:
            where = Path(options[key])
            try:
                where.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UsageError(
                    f"cannot make the engine cache {where}: {e.strerror or e}",
                    hint="give a writable directory with --engine-cache DIR",
                ) from None
    if calibration_table is not None and "trt_engine_cache_path" in options:
        data = _read_table(Path(calibration_table))
        write_bytes_atomic(Path(options["trt_engine_cache_path"]) / CALIBRATION_TABLE, data)


def _native_table(table: Path) -> bool:
    """True for a TensorRT-native calibration table (text whose first line is ``TRT-...``),
    False for ONNX Runtime's (flatbuffers, from its quantization tools)."""
    return _read_table(table)[:4] == b"TRT-"


def _read_table(table: Path) -> bytes:
    try:
        return table.read_bytes()
    except OSError as e:
        raise UsageError(
            f"cannot read the calibration table {table}: {e.strerror or e}",
            hint="give a TensorRT calibration cache or ONNX Runtime's calibration.flatbuffers",
        ) from None

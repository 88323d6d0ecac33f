"""ONNX Runtime's quantizer, called safely: the model prepared and staged for it, the names it
gives nodes mapped back, its failures as PassErrors and its chatter kept quiet.

    notes = []
    refuse_quantized("int8_static", model)               # PassError if it is int8 already
    prepared = prepare_for_quantizer("int8_static", model, workdir / "prep", True, notes)
    with stage_directory(ctx.scratch("int8_static")) as stage:
        source = stage_model("int8_static", prepared, stage, True, True, notes)
        with ort_errors("int8_static"), quiet_ort():
            ...                                          # quantize_static(str(source.path), ...)

Preparing moves tensors held in Constant nodes to initializers (Paddle2ONNX keeps its weights
there, and ORT quantizes initializers only) and raises the opset with onnx's version converter
where the quantized model would be invalid at its own. Staging runs ORT's ``quant_pre_process``
(with, then without, its symbolic shape inference) in a private directory, as ORT writes
scratch files beside its input and into the working directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import FerryError, UsageError, one_line
from ..graphs import PROTO_LIMIT, constants_to_initializers, inlined
from ..model import Model
from .base import PassError
from .output import convert_opset, default_opset, lifted_weights, save_output

_INTEGER_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    | {"QLinearMatMul", "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeMatMul"}
)

_PER_CHANNEL_OPSET = 13
"""DequantizeLinear takes an ``axis`` (one scale per channel) from this opset on."""


def refuse_quantized(name: str, model: Model) -> None:
    ops = {op.split("::")[-1] for op in model.ops_histogram}
    found = sorted(ops & _INTEGER_OPS)
    if found:
        raise PassError(
            f"{name}: the model is already quantized (it has {', '.join(found)})",
            hint="quantize the float model",
        )


def prepare_for_quantizer(
    name: str, model: Model, directory: Path, per_channel_qdq: bool, notes: list[str]
) -> Model:
    """``model`` as ORT's quantizer needs it, saved in ``directory`` (``model`` itself when it
    needs nothing): tensors held in Constant nodes moved to initializers (Paddle2ONNX exports
    weights so, and ORT quantizes initializers only), and the opset raised with onnx's version
    converter where the quantized model would not be valid at the model's own (``notes`` say
    what was done)."""
    opset = default_opset(model.proto)
    wanted, why = _quantizer_opset(opset, per_channel_qdq)
    if wanted == opset and not any(n.op_type == "Constant" for n in model.proto.graph.node):
        return model
    proto = inlined(model)
    moved = constants_to_initializers(proto.graph)
    notes += lifted_weights(moved)
    if wanted != opset:
        proto = convert_opset(name, proto, wanted)
        notes.append(
            f"raised the opset from {opset} to {wanted} with onnx's version converter: {why}"
        )
    elif not moved:
        return model
    return save_output(name, proto, model, directory / "model.onnx")


def _quantizer_opset(opset: int, per_channel_qdq: bool) -> tuple[int, str]:
    """The opset to quantize at, and why when it is not ``opset``: 13 for per-channel Q/DQ
    (DequantizeLinear's ``axis``), 11 below 10 (ORT's quantizer raises such models to 11
    itself, unreported). Dynamic int8 writes no per-channel DequantizeLinear: it keeps 10+."""
    if per_channel_qdq and opset < _PER_CHANNEL_OPSET:
        why = "per-channel DequantizeLinear (its axis attribute) needs opset 13"
        return _PER_CHANNEL_OPSET, why
    if opset < 10:
        return 11, "onnxruntime's quantizer needs opset 10 or later"
    return opset, ""


@contextlib.contextmanager
def stage_directory(target: Path) -> Iterator[Path]:
    """A private directory next to ``target`` for ORT's files, removed afterwards (ORT writes
    scratch files beside its input, so it must never read the user's model in place)."""
    stage = target.parent / ".stage"
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def stage_model(
    name: str, model: Model, directory: Path, preprocess: bool, optimize: bool, notes: list[str]
) -> Model:
    """The model ORT will quantize, written to ``directory/model.onnx``: pre-processed by
    ``quant_pre_process`` when asked and when it works (again without its symbolic shape
    inference, which gives up on many exported transformers), else a plain copy."""
    target = directory / "model.onnx"
    if not preprocess:
        return model.save(target)
    problems: list[str] = []
    for skip_symbolic in (False, True):
        try:
            failures = pre_process(model, target, optimize, skip_symbolic)
            staged = Model.load(target)
        except Exception as e:  # symbolic shape inference raises anything
            problems.append(one_line(e, line="first"))
            for stale in directory.iterdir():
                if stale.is_file():
                    stale.unlink()
            continue
        done = [
            "symbolic and ONNX shape inference" if not skip_symbolic else "ONNX shape inference"
        ]
        if optimize:
            done.append("no graph optimization (it failed)" if failures else "basic graph fusions")
        else:
            done.append(
                "no graph optimization: ORT's MatMul+Add fusion would leave Gemm unquantized"
            )
        if problems:
            done.append(f"symbolic shape inference failed: {problems[0]}")
        notes.append(f"pre-processed with ORT's quant_pre_process ({'; '.join(done)})")
        return staged
    notes.append(f"ORT's quant_pre_process failed ({problems[-1]}); quantized without it")
    return model.save(target)


def pre_process(model: Model, target: Path, optimize: bool, skip_symbolic: bool) -> list[str]:
    """Run ``quant_pre_process``; the errors it only logs (a failed graph optimization)."""
    import logging

    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    collect = Collect()
    logger.addHandler(collect)
    external = needs_external(model)
    try:
        # On failure ORT's symbolic shape inference dumps "sym_shape_infer_temp.onnx" and
        # uuid-named data files into the working directory; keep them in the stage folder.
        with quiet_ort(), _working_directory(target.resolve().parent):
            quant_pre_process(
                str(Path(model.path).resolve()) if model.path is not None else model.proto,
                str(target.resolve()),
                skip_optimization=not optimize,
                skip_symbolic_shape=skip_symbolic,
                save_as_external_data=external,
                all_tensors_to_one_file=True,
                external_data_location="model.onnx.data" if external else None,
            )
    finally:
        logger.removeHandler(collect)
    return collect.messages


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11+) for 3.10 too."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def map_nodes(
    name: str, nodes: Sequence[str], original: Model, staged: Model, notes: list[str]
) -> list[str]:
    """The names in the staged model of the user's ``nodes`` (ORT names a fused node after
    its first part, "fc1/MatMulAddFusion")."""
    before = {n.name for n in original.proto.graph.node}
    after = [n.name for n in staged.proto.graph.node]
    mapped: list[str] = []
    for node in nodes:
        if node not in before and node not in after:
            raise UsageError(
                f"{name}: nodes_to_exclude names {node!r}, which is not a node of the model",
                hint="take node names from `ferry inspect` or Netron",
            )
        found = [n for n in after if n == node or n.startswith(node + "/")]
        if not found:
            notes.append(f"node {node!r} was optimized away before quantization")
        mapped.extend(found)
    return list(dict.fromkeys(mapped))


def with_gemm_rewrites(nodes: list[str], source: Model) -> list[str]:
    """ORT's dynamic quantizer rewrites a Gemm into "<name>_MatMul" + Add before it reads
    ``nodes_to_exclude``, so an excluded Gemm must be named both ways."""
    gemms = {n.name for n in source.proto.graph.node if n.op_type == "Gemm"}
    extra = [f"{n}_MatMul" for n in nodes if n in gemms]
    return list(dict.fromkeys([*nodes, *extra]))


def needs_external(model: Model) -> bool:
    """Whether ORT's quantizer gets the model with external data: it has some, or it is past
    three quarters of protobuf's limit (the quantizer's working copies grow)."""
    return bool(model.external_files) or model.proto.ByteSize() > PROTO_LIMIT // 4 * 3


@contextlib.contextmanager
def ort_errors(name: str, hint: str | None = None) -> Iterator[None]:
    """ORT quantizer failures (any exception type) as one-line PassErrors."""
    try:
        yield
    except FerryError:
        raise
    except Exception as e:
        raise PassError(
            f"{name}: onnxruntime cannot quantize this model: {one_line(e, line='first')}",
            hint=hint or "exclude the failing nodes (nodes_to_exclude) or restrict op_types",
        ) from e


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """Drop ORT's advice to pre-process, which its quantizer logs on the root logger (the
    passes pre-process by default and say so in their notes when they do not), the progress
    its calibrators print to stdout (which carries ``--json`` output), and numpy's warnings
    about its range arithmetic on infinite ranges (the nodes around those stay in float)."""
    import io
    import logging

    def advice(record: logging.LogRecord) -> bool:
        return "consider" not in str(record.msg) or "pre-process" not in str(record.msg)

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            yield
    finally:
        root.removeFilter(advice)

"""`openvino`: the model as OpenVINO IR (``.xml`` + ``.bin``), verified against ONNX Runtime.

    ferry package model.onnx --target openvino -o out/openvino
    ferry package model.onnx --target openvino -o out/openvino-fp16 --set fp16=true

``openvino.convert_model`` reads the ``.onnx``; ``openvino.save_model`` writes
``<name>.xml`` and ``<name>.bin`` with weights kept in fp32 unless ``fp16=true`` (then
``compress_to_fp16``: half the weight bytes, computed in fp32 on CPU).

Check ``openvino parity``: the written IR is read back, compiled on OpenVINO's CPU plugin and
run on the feed sets of ``inputs`` (a file), else ``samples`` generated ones
(``package.checking``); its outputs are compared with ONNX Runtime's (CPU) on the same
``.onnx``, and a mismatch fails the report. Tolerance: parity's defaults (atol 1e-4, rtol
1e-3) for fp32 weights, atol 1e-2 and rtol 1e-2 with fp16 weights (``fp16=true``, or a model
whose weights are float16 already: ``parity.tolerance.between_runtimes``); ``atol``/``rtol``
override either. The IR is compiled with ``INFERENCE_PRECISION_HINT=f32``:
the CPU plugin otherwise computes in bf16 on CPUs that have it (the report says whether this
one does), which is a deployment choice, not the IR's accuracy.

An IR the CPU plugin cannot run on those feeds fails the check (exit 1), naming the shapes.

Options (``--set KEY=VALUE``): ``fp16`` (false), ``inputs``, ``samples`` (3), ``atol``,
``rtol``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..feeds import describe_shapes
from ..graphs import listed, loop_outputs_not_inputs
from ..model import Model
from ..native import spawned_worker
from ..ovsession import ov_error_message
from ..qdq import QDQ_NOTE, with_qdq
from ..stft import STFT_NOTE, with_stft_as_conv
from .base import Check, Options, Packaged, PackageSource, write_tree
from .checking import CHECK_KEYS, check_feeds, check_options, note_unfinite, reference_noise

KEYS = (*CHECK_KEYS, "fp16", "atol", "rtol")


def build(source: PackageSource, outdir: Path, options: Mapping[str, Any]) -> Packaged:
    """Convert ``source`` to OpenVINO IR in ``outdir`` and verify it (module docstring)."""
    from ..parity import Tolerance, compare_within_noise
    from ..parity.tolerance import low_precision_note
    from ..runtime import OrtRunner

    model = Model.load(source.model.resolve())
    opts = _options(options, model)
    result = Packaged("openvino", source.name, str(outdir))
    if not {"atol", "rtol", "fp16"} & set(options) and (note := low_precision_note(model)):
        result.notes.append(note)
    xml_name = f"{source.name}.xml"
    feeds = check_feeds(model, opts["inputs"], opts["samples"], result)
    names = model.signature.output_names
    loops = loop_outputs_not_inputs(model)
    readable, stfts = with_stft_as_conv(loops)
    if stfts:
        result.notes.append(STFT_NOTE.format(count=stfts, tool="OpenVINO's ONNX frontend"))
    readable, quantized = with_qdq(readable)
    if quantized:
        result.notes.append(QDQ_NOTE.format(ops=listed(quantized), tool="OpenVINO's ONNX frontend"))
    with tempfile.TemporaryDirectory(prefix="ferry-openvino-") as work:
        given = model if readable is model else readable.save(Path(work) / source.model.name)
        done = _in_child(str(given.path), source.name, opts["fp16"], feeds, names)
    if loops is not model:
        result.notes.append(
            "a Loop body hands inputs straight back as outputs (loop-invariant values carried "
            "along); an Identity stands between each pair, which OpenVINO's frontend needs"
        )
    if isinstance(done, str):
        raise InputError(
            f"openvino cannot convert {source.model.name}: {done}",
            hint="check the model's ops against OpenVINO's ONNX frontend; `ferry check` it first",
        )
    files, candidate, version, bf16 = done
    write_tree(outdir, files, result)
    tool = f"openvino {version}"
    tolerance = Tolerance(atol=opts["atol"], rtol=opts["rtol"])
    if isinstance(candidate, str):  # the CPU plugin cannot run the IR on these feeds
        result.checks.append(Check("openvino parity", False, f"{xml_name}: {candidate}", tool=tool))
    else:
        reference = [OrtRunner(model).run(f) for f in feeds]
        note_unfinite(reference, opts["inputs"], result)
        noise = reference_noise(model, feeds)
        parity = compare_within_noise(
            reference,
            candidate,
            tolerance,
            second=noise.second,
            steps=noise.steps,
            reference_name=f"{source.model.name}@onnxruntime",
            candidate_name=f"{xml_name}@openvino-cpu",
        )
        result.checks.append(Check("openvino parity", parity.ok, parity.summary(), tool=tool))
    result.notes.append(
        f"verified at f32 precision (tolerance atol {tolerance.atol}, rtol {tolerance.rtol}); "
        f"this CPU {'has' if bf16 else 'lacks'} bf16, which OpenVINO's CPU "
        "plugin uses by default where present: set INFERENCE_PRECISION_HINT=f32 for these "
        "numbers"
    )
    return result


Converted = tuple[dict[str, bytes], list[dict[str, Any]] | str, str, bool]
"""The IR's files, its outputs on each feed set (or why the CPU plugin could not run it),
OpenVINO's version, whether the CPU has bf16."""


def _in_child(
    model: str, name: str, fp16: bool, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> Converted | str:
    """``_convert_and_run`` in a fresh (spawned) process: OpenVINO's native runtime stays out
    of this one (its threads and handles outlive the call, and it has disturbed the standard
    streams of the process that imported it). A conversion error comes back as one line."""
    _openvino_installed()
    with spawned_worker(
        f"OpenVINO crashed the process converting {Path(model).name}",
        hint="check the model's ops against OpenVINO's ONNX frontend; `ferry check` it first",
    ) as pool:
        return pool.submit(_convert_and_run, model, name, fp16, feeds, names).result()


def _convert_and_run(
    model: str, name: str, fp16: bool, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> Converted | str:
    """Convert, save, read back, compile at f32 on CPU and run every feed set (in the child)."""
    import openvino as ov

    xml_name, bin_name = f"{name}.xml", f"{name}.bin"
    with tempfile.TemporaryDirectory(prefix="ferry-openvino-") as work:
        try:
            converted = ov.convert_model(model)
            ov.save_model(converted, str(Path(work) / xml_name), compress_to_fp16=fp16)
        except Exception as e:
            return ov_error_message(e)
        files = {n: (Path(work) / n).read_bytes() for n in (xml_name, bin_name)}
        core = ov.Core()
        outputs: list[dict[str, Any]] | str
        try:
            compiled = core.compile_model(
                core.read_model(str(Path(work) / xml_name)),
                "CPU",
                {"INFERENCE_PRECISION_HINT": "f32"},
            )
            outputs = [_infer(compiled, f, names) for f in feeds]
        except RuntimeError as e:  # OpenVINO raises RuntimeError for what its plugin refuses
            shapes = describe_shapes({k: np.shape(v) for k, v in feeds[0].items()})
            outputs = f"OpenVINO's CPU plugin cannot run it on {shapes}: {ov_error_message(e)}"
    bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return files, outputs, str(ov.get_version()).split("-")[0], bf16


def _openvino_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        raise InputError(
            "the openvino target needs the openvino package",
            hint="pip install 'onnxferry[openvino]'",
        )


def _infer(compiled: Any, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    """One inference; outputs under the ONNX names (a port can carry several tensor names).
    OpenVINO's Python API shows bfloat16 data as float16: bfloat16 goes in and out by its
    bits."""
    import ml_dtypes
    import openvino as ov

    def tensor(array: np.ndarray) -> Any:
        if array.dtype.name != "bfloat16":
            return array
        value = ov.Tensor(ov.Type.bf16, ov.Shape(list(array.shape)))
        value.data.view(np.uint16)[...] = array.view(np.uint16)
        return value

    answer = compiled.create_infer_request().infer({k: tensor(v) for k, v in feeds.items()})
    outputs: dict[str, Any] = {}
    for port, value in answer.items():
        known = port.get_names()
        name = next((n for n in names if n in known), port.get_any_name())
        outputs[name] = np.array(value, copy=True)
        if port.get_element_type() == ov.Type.bf16:
            outputs[name] = outputs[name].view(np.uint16).view(ml_dtypes.bfloat16)
    return outputs


def _options(given: Mapping[str, Any], model: Model) -> dict[str, Any]:
    from ..parity.tolerance import FLOAT16, between_runtimes

    opts = Options("openvino", given, KEYS)
    fp16 = opts.flag("fp16", False)
    default = between_runtimes(model)
    atol, rtol = FLOAT16 if fp16 else (default.atol, default.rtol)
    return {
        "fp16": fp16,
        **check_options(opts),
        "atol": opts.number("atol", atol),
        "rtol": opts.number("rtol", rtol),
    }

"""`--provider openvino` through the OpenVINO runtime: a session with the slice of
onnxruntime.InferenceSession that ferry uses.

    session = OpenVinoSession(model, {"precision": "FP16"}, threads=2)
    session.run(None, {"x": x})                  # [array, ...] in the model's output order
    session.get_outputs()[0].name, session.get_providers()   # [..., "OpenVINOExecutionProvider"]
    session.precision                            # what OpenVINO computes in, e.g. "f32"

Why not onnxruntime's own OpenVINO execution provider: it ships only as the
``onnxruntime-openvino`` wheel, a whole onnxruntime build of its own (newest 1.24.1 on PyPI,
bundling OpenVINO 2025.4.1 under ``onnxruntime/capi``), which installs the same
``onnxruntime`` package as the pinned ``onnxruntime`` 1.32.0: one overwrites the other. The
``openvino`` package installs beside it, so ``runtime.create_session`` builds this session
for ``provider="openvino"`` when the installed onnxruntime lacks OpenVINOExecutionProvider
(logged at debug level), and onnxruntime's provider when a build has it. Both take the same
provider options (``device_type``, ``precision``, ``num_of_threads``), so a config works on
either.

The model is read from its ``.onnx`` file (external data next to it) or from bytes, compiled
for OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT`` f32 (``precision`` FP32, the
default: the plugin would otherwise compute in bf16 on CPUs that have it) or f16 (FP16: a CPU
without native fp16 gets another low precision, bf16 on one with avx512_bf16; the session's
``precision`` says which), ``PERFORMANCE_HINT`` LATENCY and ``threads`` inference threads.
Open dims stay open (OpenVINO compiles dynamic shapes). Inputs are handed over without a copy,
outputs copied out. Runs are thread-safe: each concurrent ``run`` takes an InferRequest from a
pool. ``run_options`` are accepted and ignored: a run cannot be stopped part-way. Tensor
inputs and outputs only, and no bfloat16 or strings: such models are refused when the session
is made. The CPU plugin computes int64 in int32 (a value past int32's range wraps), which
``ferry compare --provider-b openvino`` shows.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import FeedError, InputError, ModelLoadError, RunError, one_line
from .graphs import loop_outputs_not_inputs
from .model import Model
from .signature import TensorSpec, dtype_from_numpy
from .stft import STFT_NOTE, with_stft_as_conv

log = logging.getLogger("onnxferry")

PROVIDER = "OpenVINOExecutionProvider"
"""The name ``get_providers`` reports, onnxruntime's name for the provider."""

_HINTS = {"FP32": "f32", "FP16": "f16"}
_OV_NOISE = re.compile(r"Exception from \S+:\d+:\s*|Check '[^']*' failed at \S+:\d+:\s*")
"""OpenVINO's C++ source locations, which its error messages repeat per stack frame."""


def ov_error_message(error: BaseException) -> str:
    """OpenVINO's error text without its C++ source locations, on one line, e.g. "[CPU]
    AvgPool node with name 'pool' While validating node ... Kernel after dilation has size"."""
    return one_line(error, limit=300, drop=_OV_NOISE)


@dataclass(frozen=True)
class NodeArg:
    """An input or output as ``InferenceSession.get_inputs`` describes it."""

    name: str
    shape: list[int | str | None]
    type: str  # "tensor(float)"


_SURVIVED: set[str] = set()
"""Digests of models OpenVINO has read and compiled in a worker without crashing."""


def _survives(
    content: bytes | None, path: str | None, device: str, config: Mapping[str, Any], where: object
) -> None:
    """Read and compile the model once in a spawned worker first: OpenVINO's frontend
    segfaults on some models (onnx-asr's wespeaker preprocessor, a Scan), which in this
    process would end it. ModelLoadError when the worker dies; its own errors are left for
    the real load to raise."""
    import hashlib

    key = hashlib.sha256(content if content is not None else str(path).encode()).hexdigest()
    key += f"/{device}/{sorted(config.items())}"
    if key in _SURVIVED:
        return
    from .native import spawned_worker

    try:
        with spawned_worker(
            f"OpenVINO crashed reading or compiling {where}",
            hint="run it on --provider cpu, or check its ops against OpenVINO's ONNX frontend",
        ) as pool:
            pool.submit(_read_and_compile, content, path, device, dict(config)).result()
    except InputError as e:
        raise ModelLoadError(e.message, hint=e.hint) from e
    _SURVIVED.add(key)


def _read_and_compile(
    content: bytes | None, path: str | None, device: str, config: dict[str, Any]
) -> None:
    """(In the worker.) What ``OpenVinoSession`` does; an exception is fine, a crash is not."""
    import openvino as ov

    core = ov.Core()
    with contextlib.suppress(Exception):
        read = core.read_model(content, b"") if content is not None else core.read_model(path)
        core.compile_model(read, device, config)


def openvino_installed() -> bool:
    """True when the openvino package can be imported (found without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


class OpenVinoSession:
    """``model`` compiled by OpenVINO's CPU plugin; see the module docstring."""

    def __init__(
        self,
        model: Model,
        provider_options: Mapping[str, Any] | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        import openvino as ov

        options = dict(provider_options or {})
        device = str(options.get("device_type", "CPU"))
        wanted = str(options.get("precision", "FP32")).upper()
        if wanted not in _HINTS:
            raise ModelLoadError(
                f"openvino precision {wanted!r} is not offered here",
                hint=f"use one of {', '.join(_HINTS)}",
            )
        threads = options.get("num_of_threads", threads)
        self.model = model
        self._check_types()
        where = model.path or model.name
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[wanted],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        # what OpenVINO's frontend reads: no Loop output that is an input, no STFT
        readable, stfts = with_stft_as_conv(loop_outputs_not_inputs(model))
        if stfts:
            log.info(STFT_NOTE.format(count=stfts, tool="OpenVINO's ONNX frontend"))
        path = str(model.path) if model.path is not None and model.path.is_file() else None
        content = None if readable is model and path else readable.proto.SerializeToString()
        _survives(content, path, device, config, where)
        try:
            read = core.read_model(path) if content is None else core.read_model(content, b"")
            self._compiled = core.compile_model(read, device, config)
        except Exception as e:  # OpenVINO raises RuntimeError / OpConversionFailure
            raise ModelLoadError(
                f"openvino cannot load {where}: {ov_error_message(e)}",
                hint="check the model's ops against OpenVINO's ONNX frontend, or run it on "
                "--provider cpu",
            ) from e
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(hint.get_type_name())  # "f32", "f16", "bf16"
        self.version = str(ov.get_version()).split("-")[0]
        self._inputs = [_arg(s) for s in model.signature.inputs]
        self._index = self._port_indices(where)
        self._outputs = [
            _arg(s, self._compiled.outputs[self._index[s.name]]) for s in model.signature.outputs
        ]
        self._pool: list[Any] = []
        self._lock = threading.Lock()
        self._tensor = ov.Tensor

    def _check_types(self) -> None:
        for spec in (*self.model.signature.inputs, *self.model.signature.outputs):
            name = spec.dtype.onnx_name
            if name in ("BFLOAT16", "STRING") or name.startswith("FLOAT8"):
                raise ModelLoadError(
                    f"--provider openvino cannot pass {name} ({spec.name!r} of "
                    f"{self.model.name}) through numpy",
                    hint="run it on --provider cpu, or cast it to float32 in the model",
                )

    def _port_indices(self, where: object) -> dict[str, int]:
        """The compiled model's output index of each ONNX output name."""
        index: dict[str, int] = {}
        for i, port in enumerate(self._compiled.outputs):
            for name in port.get_names():
                index.setdefault(name, i)
        lost = [name for name in self.model.signature.output_names if name not in index]
        if lost:
            raise ModelLoadError(
                f"openvino compiled {where} without the outputs {', '.join(lost)}",
                hint="run it on --provider cpu",
            )
        return index

    # --- the InferenceSession slice ------------------------------------------------------

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {PROVIDER: {"device_type": "CPU", "precision": self.precision}}

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        run_options: Any = None,
    ) -> list[np.ndarray]:
        """The outputs named (all, in the model's order, for None) on ``input_feed``."""
        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise RunError(
                f"{self.model.name} has no output {unknown[0]!r}",
                hint=f"outputs: {', '.join(o.name for o in self._outputs)}",
            )
        request = self._take()
        try:
            for name, value in input_feed.items():
                array = np.require(value, requirements="C")  # keeps 0-d arrays 0-d
                request.set_tensor(name, self._tensor(array, shared_memory=True))
            request.infer()
            return [request.get_output_tensor(self._index[n]).data.copy() for n in names]
        except Exception as e:
            shapes = ", ".join(
                f"{k}[{','.join(str(d) for d in np.shape(v))}]" for k, v in input_feed.items()
            )
            raise RunError(
                f"openvino cannot run {self.model.name} on inputs {shapes or '(none)'}: "
                f"{ov_error_message(e)}",
                hint="give inputs the model takes (--inputs FILE, or --input-shape NAME=DxD...)",
            ) from e
        finally:
            self._give(request)

    def run_with_ort_values(self, *args: Any) -> list[Any]:
        """Not offered: onnxferry calls it only for bfloat16 outputs, refused at creation."""
        raise RunError("--provider openvino runs numpy arrays only (no OrtValues)")

    def _take(self) -> Any:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return self._compiled.create_infer_request()

    def _give(self, request: Any) -> None:
        with self._lock:
            self._pool.append(request)


def _arg(spec: TensorSpec, port: Any = None) -> NodeArg:
    """``spec`` as a NodeArg; an output the model leaves untyped (a probe of an inner tensor)
    takes the element type OpenVINO gives its ``port``."""
    written = spec.as_written
    shape: list[int | str | None] = [] if written is None else list(written)
    dtype = spec.dtype
    if dtype.onnx_name == "UNDEFINED" and port is not None:
        with contextlib.suppress(FeedError):  # a type numpy cannot name stays undefined
            dtype = dtype_from_numpy(port.get_element_type().to_dtype())
    return NodeArg(spec.name, shape, f"tensor({dtype.onnx_name.lower()})")

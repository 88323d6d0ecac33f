"""ONNX Runtime sessions and the Runner protocol.

    runner = OrtRunner(model, provider="cuda", threads=4)   # falls back to cpu, logged
    outputs = runner.run(plan_feeds(model).feeds())        # {output name: array}
    runner.provider                                         # "cpu" if cuda was unavailable
    OrtRunner(model, config=SessionConfig(provider="openvino", precision="fp16"))  # ovsession
    usable_cores()                                          # affinity capped by the cgroup quota

A ``Runner`` maps feeds to named outputs: ``OrtRunner`` here, the source frameworks' in
``convert``; ``parity`` compares any two.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from . import denormals
from .customops import register_extensions, unknown_operator
from .errors import (
    FeedError,
    FerryError,
    ModelLoadError,
    ProviderError,
    RunError,
    UsageError,
    one_line,
)
from .graphs import external_file_contents
from .locales import locale_error
from .model import Model
from .ort_crashes import known_crashes
from .report import human_size
from .safety import iter_tensors, uses_external_data
from .signature import Signature

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger("onnxferry")

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "azure": "AzureExecutionProvider",
}
_SHORT = {v: k for k, v in PROVIDERS.items()}

GRAPH_LEVELS = ("disable", "basic", "extended", "layout", "all")


@runtime_checkable
class Runner(Protocol):
    """Anything that maps feeds to outputs: ONNX Runtime or a source-framework reference."""

    name: str

    @property
    def signature(self) -> Signature: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def provider_name(short: str) -> str:
    """ONNX Runtime's name for a short provider name ("cuda" -> "CUDAExecutionProvider")."""
    key = short.lower().removesuffix("executionprovider")
    if short in _SHORT:
        return short
    if key in PROVIDERS:
        return PROVIDERS[key]
    raise UsageError(
        f"unknown execution provider {short!r}", hint=f"use one of {', '.join(PROVIDERS)}"
    )


def short_provider_name(name: str) -> str:
    return _SHORT.get(name, name)


def available_providers() -> list[str]:
    """Short names of the providers this onnxruntime build offers, cpu last."""
    import onnxruntime as ort

    return [short_provider_name(p) for p in ort.get_available_providers()]


def session_providers() -> list[str]:
    """Short names ``create_session`` runs on: ``available_providers()``, plus openvino when
    the openvino package is installed and the build lacks it (``ovsession``)."""
    from .ovsession import openvino_installed

    names = available_providers()
    if "openvino" not in names and openvino_installed():
        names.insert(names.index("cpu") if "cpu" in names else len(names), "openvino")
    return names


@dataclass(frozen=True)
class SessionConfig:
    """How to build a session: provider, threads and graph optimization level.

    ``threads`` is the intra-op thread count (None: ONNX Runtime's default, one per core).
    ``fallback`` lets a missing or failing provider fall back to cpu (logged with the reason).
    ``precision`` (fp32, fp16, int8), ``engine_cache`` and ``calibration_table`` become the
    provider's options (``precision.precision_options``: tensorrt and openvino take fp16,
    tensorrt int8; every other provider fp32 only), under those in ``provider_options``.
    """

    provider: str = "cpu"
    threads: int | None = None
    inter_threads: int | None = None
    graph_optimization: str = "all"
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    fallback: bool = True
    precision: str = "fp32"
    engine_cache: Path | None = None
    """tensorrt: the engine cache's root (default: ``precision.engine_cache_root()``)."""
    calibration_table: Path | None = None
    """tensorrt int8 on a model without Q/DQ nodes: TensorRT's calibration table."""
    log_severity: int = field(default_factory=lambda: _ort_log_severity())
    """ONNX Runtime's log level: errors (3) with debug logging (``ferry -v``), else fatal
    only (4), since every error it logs comes back as an exception said in one line."""
    entries: Mapping[str, str] = field(default_factory=dict)
    """Session config entries, e.g. {"session.intra_op.allow_spinning": "0"}."""
    cpu_arena: bool = True
    """ONNX Runtime's CPU memory arena (``SessionOptions.enable_cpu_mem_arena``)."""
    flush_denormals: bool | None = None
    """Run with denormal floats flushed to zero (``denormals``): None as the model is marked
    (``optimize``'s flush_denormals pass marks it where that was faster), True or False
    whatever the model says."""
    own_weights: bool = False
    """Give ONNX Runtime the model's external data files in memory, to copy, rather than their
    paths, which it maps: a long-lived session (a server's) then cannot be killed (SIGBUS on
    a page past the end of a file truncated in place) or see its weights change when someone
    copies new files over the ones it loaded. The files are held twice while the session is
    made; past half the available memory they are mapped as before, with a warning. On the
    CPU provider only: the others (TensorRT builds engines from the model's path) load from
    the path as before."""

    def flushes(self, model: Model | None) -> bool:
        """Whether sessions of ``model`` under this config flush denormals."""
        if self.flush_denormals is not None:
            return self.flush_denormals
        return model is not None and denormals.flushes(model)


def _ort_log_severity() -> int:
    return 3 if log.isEnabledFor(logging.DEBUG) else 4


def session_options(config: SessionConfig, model: Model | None = None) -> ort.SessionOptions:
    """ONNX Runtime's options for ``config``; with ``model``, also the custom-operator
    libraries it needs (``customops.register_extensions``)."""
    import onnxruntime as ort

    if config.graph_optimization not in GRAPH_LEVELS:
        raise UsageError(
            f"unknown graph optimization level {config.graph_optimization!r}",
            hint=f"use one of {', '.join(GRAPH_LEVELS)}",
        )
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "layout": ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[config.graph_optimization]
    if config.threads is not None:
        opts.intra_op_num_threads = check_threads(config.threads)
    if config.inter_threads is not None:
        opts.inter_op_num_threads = check_threads(config.inter_threads, "inter-op threads")
    opts.log_severity_level = config.log_severity
    opts.enable_cpu_mem_arena = config.cpu_arena
    for key, value in config.entries.items():
        opts.add_session_config_entry(key, value)
    if config.flushes(model):
        opts.add_session_config_entry(denormals.SESSION_ENTRY, "1")
    if model is not None:
        register_extensions(opts, model)
    return opts


def create_session(model: Model, config: SessionConfig | None = None) -> ort.InferenceSession:
    """An InferenceSession for ``model`` on the configured provider.

    A provider this build lacks, or one that fails to initialise, falls back to cpu (at fp32)
    with a logged reason unless ``config.fallback`` is False (then ProviderError).
    ``config.precision`` becomes provider options (UsageError for one the provider does not
    take); tensorrt runs before cuda and cpu, with its engine cache made on disk. openvino on
    a build without OpenVINOExecutionProvider gives an ``ovsession.OpenVinoSession`` (the
    OpenVINO runtime, the same slice of the session API) when the openvino package is there.
    """
    import onnxruntime as ort

    from .precision import precision_options, prepare_engine_cache

    config = config or SessionConfig()
    wanted = provider_name(config.provider)
    short = short_provider_name(wanted)
    options = {
        **precision_options(
            model,
            short,
            config.precision,
            engine_cache=config.engine_cache,
            calibration_table=config.calibration_table,
        ),
        **config.provider_options,
    }
    built = ort.get_available_providers()
    if short == "openvino" and wanted not in built:
        from .ovsession import openvino_installed

        if openvino_installed():
            log.debug(
                "onnxruntime %s has no %s: running the OpenVINO runtime directly",
                ort.__version__,
                wanted,
            )
            return _openvino_session(model, config, options)
    opts = session_options(config, model)
    providers: list[Any] = [(wanted, options)]
    if wanted not in built:
        reason = f"provider {config.provider!r} is not in this onnxruntime build"
        hint = f"available: {', '.join(available_providers())}"
        if short == "openvino":
            reason += " and the openvino package is not installed"
            hint = "pip install openvino"
        elif short in ("cuda", "tensorrt"):
            extra = " and tensorrt-cu12" if short == "tensorrt" else ""
            hint += f"; {short} needs onnxruntime-gpu{extra} and an NVIDIA GPU"
        if not config.fallback:
            raise ProviderError(reason, hint=hint)
        log.warning("%s; falling back to cpu", reason)
        providers = ["CPUExecutionProvider"]
    elif wanted != "CPUExecutionProvider":
        if short == "tensorrt":
            prepare_engine_cache(options, config.calibration_table)
            if "CUDAExecutionProvider" in built:
                providers.append("CUDAExecutionProvider")
        providers.append("CPUExecutionProvider")
    own = config.own_weights and wanted == "CPUExecutionProvider"
    source, held = _session_source(model, opts if own else None)
    crashes = known_crashes(model, config.graph_optimization)
    for crash in crashes:
        log.debug("turned off onnxruntime's %s: %s", crash.optimizer, crash.why)
    try:
        with denormals.kept():  # ORT flushes on the thread creating its first session
            session = ort.InferenceSession(
                source,
                sess_options=opts,
                providers=providers,
                disabled_optimizers=[crash.optimizer for crash in crashes],
            )
    except Exception as e:
        del held
        where = model.path or model.name
        too_new = version_problem(model.proto.ir_version, model.opset_imports)
        if too_new:
            raise ModelLoadError(
                f"onnxruntime cannot load {where}: {too_new}",
                hint="re-export with an older opset, or upgrade onnxruntime",
            ) from e
        message = ort_error_message(e)
        explained = unknown_operator(model, message) or locale_error(model, message)
        if explained is not None:
            raise explained from e
        if wanted != "CPUExecutionProvider" and config.fallback:
            log.warning("provider %r failed (%s); falling back to cpu", config.provider, message)
            return create_session(model, _on_cpu(config))
        raise ModelLoadError(
            f"onnxruntime cannot load {where}: {message}",
            hint="run `ferry check` on the model for details",
        ) from e
    del held  # ONNX Runtime has copied them
    active = session.get_providers()[0]
    if active != wanted:
        log.warning("provider %r was not used; session runs on %s", config.provider, active)
    if config.flushes(model):
        _flush_runs(session)
    return session


def _flush_runs(session: ort.InferenceSession) -> None:
    """Every run of ``session`` inside ``denormals.flushed()`` (the caller's thread does part
    of each run; the session entry covers only ONNX Runtime's pool threads)."""
    for name in ("run", "run_with_ort_values", "run_with_iobinding"):
        if hasattr(session, name):
            setattr(session, name, denormals.flushing(getattr(session, name)))


def _on_cpu(config: SessionConfig) -> SessionConfig:
    """``config`` on cpu, at fp32 without the other provider's options (a fallback)."""
    return dataclasses.replace(
        config, provider="cpu", precision="fp32", calibration_table=None, provider_options={}
    )


def _openvino_session(
    model: Model, config: SessionConfig, options: Mapping[str, Any]
) -> ort.InferenceSession:
    """An ``ovsession.OpenVinoSession``; a model OpenVINO cannot load falls back to cpu when
    ``config.fallback`` allows (logged), else its ModelLoadError stands."""
    from .ovsession import OpenVinoSession

    try:
        return OpenVinoSession(model, options, threads=config.threads)
    except ModelLoadError as e:
        if not config.fallback:
            raise
        log.warning("provider 'openvino' failed (%s); falling back to cpu", e.message)
        return create_session(model, _on_cpu(config))


def _session_source(
    model: Model, own_weights: ort.SessionOptions | None = None
) -> tuple[str | bytes, list[bytes]]:
    """What ONNX Runtime loads ``model`` from (its file, else its bytes), and the buffers to
    keep alive until the session is made. With ``own_weights`` (the session's options), a
    model with external data comes as its bytes and the files' contents go into those options
    (``SessionConfig.own_weights``); ONNX Runtime copies them while it makes the session."""
    if model.path is None or not model.path.is_file():
        return bytes(model.proto.SerializeToString()), []
    if own_weights is not None and model.external_files:
        contents = _weights_in_memory(model)
        if contents:
            buffers = list(contents.values())
            own_weights.add_external_initializers_from_files_in_memory(
                list(contents), buffers, [len(b) for b in buffers]
            )
            return bytes(model.proto.SerializeToString()), buffers
    return str(model.path), []


def _weights_in_memory(model: Model) -> dict[str, bytes] | None:
    """``graphs.external_file_contents``, or None where ONNX Runtime would not take them
    (external data outside the main graph's initializers: in a subgraph, a Constant) or,
    with a warning, where holding them twice would take more than half the memory
    available."""
    proto = model.proto
    if sum(uses_external_data(site.tensor) for site in iter_tensors(proto)) != sum(
        uses_external_data(t) for t in proto.graph.initializer
    ):
        return None
    size = sum(p.stat().st_size for p in model.external_files)
    room = available_memory()
    if room is not None and 2 * size > room:
        log.warning(
            "%s: its external data (%s) is mapped from its files, not copied (%s of memory "
            "available): copying other files over them while it runs would stop the process; "
            "write a new version instead",
            model.path,
            human_size(size),
            human_size(room),
        )
        return None
    return external_file_contents(model)


_ORT_NOISE = re.compile(
    r"\[ONNXRuntimeError\]\s+:\s+\d+\s+:\s+\w+\s+:\s+"  # status prefix
    r"|Load\s+model\s+from\s+\S+\s+failed:"  # the path, which the caller names anyway
    r"|\S*onnxruntime_src/\S+:\d+\s[^(]*\([^)]*\)\s*"  # C++ source location and signature
)


def ort_error_message(error: BaseException) -> str:
    """ONNX Runtime's error text without its status prefix and C++ source locations, on one
    line, e.g. "Could not find an implementation for NoSuchOp(1) node with name ''"."""
    return one_line(error, limit=400, drop=_ORT_NOISE)


def version_problem(ir_version: int, opsets: Mapping[str, int]) -> str | None:
    """Why the installed onnxruntime cannot load this IR version / ai.onnx opset, or None."""
    import onnxruntime as ort

    max_ir, max_opset = runtime_limits()
    problems = []
    if ir_version > max_ir:
        problems.append(f"IR version {ir_version} > {max_ir}")
    opset = max((v for d, v in opsets.items() if d in ("", "ai.onnx")), default=0)
    if opset > max_opset:
        problems.append(f"ai.onnx opset {opset} > {max_opset}")
    if not problems:
        return None
    return (
        f"{'; '.join(problems)} (onnxruntime {ort.__version__} loads at most IR {max_ir}, "
        f"opset {max_opset})"
    )


class OrtRunner:
    """Runs a Model in ONNX Runtime; implements Runner."""

    def __init__(
        self,
        model: Model,
        provider: str = "cpu",
        threads: int | None = None,
        *,
        config: SessionConfig | None = None,
        validate: bool = True,
    ) -> None:
        self.model = model
        self.config = config or SessionConfig(provider=provider, threads=threads)
        self.session = create_session(model, self.config)
        self.provider = short_provider_name(self.session.get_providers()[0])
        self.name = f"{model.name}@{self.provider}"
        self.validate = validate
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._through_ortvalues = needs_ortvalue_outputs(model.signature)
        self._quiet = quiet_run_options()

    @property
    def signature(self) -> Signature:
        return self.model.signature

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs by name; feeds are checked against the signature first (FeedError)."""
        if self.validate:
            self.signature.validate(feeds)
        names = list(output_names) if output_names is not None else self._output_names
        inputs = ort_inputs(feeds, all_ortvalues=self._through_ortvalues)
        with run_errors(self.model.name, feeds):
            if self._through_ortvalues:
                values = self.session.run_with_ort_values(names, inputs, self._quiet)
                return {n: from_ortvalue(v) for n, v in zip(names, values, strict=True)}
            results = self.session.run(names, inputs, self._quiet)
        return {n: _as_array(r) for n, r in zip(names, results, strict=True)}


def unoptimized_runner(model: Model) -> OrtRunner:
    """ONNX Runtime on ``model`` with every graph optimization off (no fused or re-laid-out
    kernels): the second opinion on its own numerical noise (``parity.compare_within_noise``).

        unoptimized_runner(model).name      # "model@cpu (no graph optimization)"
    """
    runner = OrtRunner(model, config=SessionConfig(graph_optimization="disable"))
    runner.name += " (no graph optimization)"
    return runner


def quiet_run_options() -> ort.RunOptions:
    """RunOptions under which a failing run does not log to stderr: the error it raises says
    the same, and becomes one line (``run_errors``)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


@contextmanager
def run_errors(model: str, feeds: Mapping[str, Any]) -> Iterator[None]:
    """Turn an error ONNX Runtime raises while running into a RunError (one line, exit 2)
    naming the input shapes.

        with run_errors(model.name, feeds):
            session.run(None, feeds)
    """
    try:
        yield
    except FerryError:
        raise
    except Exception as e:  # onnxruntime's errors are untyped (RuntimeException, Fail, ...)
        shapes = ", ".join(
            f"{k}[{','.join(str(d) for d in getattr(v, 'shape', ()))}]" for k, v in feeds.items()
        )
        raise RunError(
            f"onnxruntime cannot run {model} on inputs {shapes or '(none)'}: "
            f"{ort_error_message(e)}",
            hint="give inputs the model takes (--inputs FILE, or --input-shape NAME=DxD...)",
        ) from e


def needs_ortvalue_outputs(signature: Signature) -> bool:
    """True when a model returns bfloat16, which ``session.run`` cannot hand to numpy; such
    models must run with ``session.run_with_ort_values``."""
    return any(t.dtype.onnx_name == "BFLOAT16" for t in signature.outputs)


def ort_inputs(feeds: Mapping[str, np.ndarray], *, all_ortvalues: bool = False) -> dict[str, Any]:
    """Feeds ONNX Runtime accepts: bfloat16 arrays (which numpy cannot name to ORT) become
    OrtValues; with ``all_ortvalues`` every array does, for ``run_with_ort_values``."""
    return {
        name: _to_ortvalue(array) if all_ortvalues or array.dtype.name == "bfloat16" else array
        for name, array in feeds.items()
    }


def _to_ortvalue(array: np.ndarray) -> Any:
    import onnxruntime as ort

    if array.dtype.name == "bfloat16":
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            np.ascontiguousarray(array).view(np.uint16), 16
        )
    if array.dtype.kind in "OUS":
        raise FeedError(
            "onnxruntime's Python API cannot feed strings to a model with bfloat16 outputs",
            hint="cast the bfloat16 outputs to float32 in the model",
        )
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


def run_session(
    session: Any, names: Sequence[str] | None, feeds: Mapping[str, Any], options: Any = None
) -> list[Any]:
    """``session.run(names, feeds, options)`` for any model: bfloat16 (ml_dtypes) arrays in
    and out go through OrtValues, as numpy cannot name them to ONNX Runtime. A session-like
    object that is no ONNX Runtime session (the server's executor, for a served explain)
    takes them as they are."""
    if not hasattr(session, "get_outputs"):
        return list(session.run(names, feeds, options))
    wanted = [o for o in session.get_outputs() if names is None or o.name in names]
    if any(o.type == "tensor(bfloat16)" for o in wanted):
        values = session.run_with_ort_values(
            None if names is None else list(names), ort_inputs(feeds, all_ortvalues=True), options
        )
        return [from_ortvalue(v) for v in values]
    return list(session.run(None if names is None else list(names), ort_inputs(feeds), options))


def from_ortvalue(value: Any) -> np.ndarray:
    if value.data_type() == "tensor(bfloat16)":
        import ctypes

        import ml_dtypes

        shape = tuple(value.shape())
        raw = (ctypes.c_uint16 * int(np.prod(shape))).from_address(value.data_ptr())
        array: np.ndarray = np.ctypeslib.as_array(raw).copy().view(ml_dtypes.bfloat16)
        return array.reshape(shape)
    return _as_array(value.numpy())


def _as_array(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)


def map_keys(array: np.ndarray) -> frozenset[Any] | None:
    """The keys shared by every element of a 1-D array of maps with numeric values (what ONNX
    Runtime returns for a ``seq(map(K, V))`` output such as scikit-learn's ZipMap), else None.

        map_keys(np.array([{0: 0.9, 1: 0.1}, {0: 0.2, 1: 0.8}]))   # frozenset({0, 1})
    """
    if array.dtype != object or array.ndim != 1 or not array.size:
        return None
    items = array.tolist()
    if not all(isinstance(m, dict) for m in items):
        return None
    keys = frozenset(items[0])
    if any(frozenset(m) != keys for m in items):
        return None
    numeric = all(isinstance(v, (int, float, np.number)) for m in items for v in m.values())
    return keys if numeric else None


def map_order(keys: frozenset[Any]) -> list[Any]:
    """Map keys in table column order: numbers by value (class 10 after class 9), else by text."""
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=str)


def map_table(array: np.ndarray) -> np.ndarray:
    """An array of maps that ``map_keys`` accepts as a table: one row per map, one column per
    key in ``map_order``, float64 (so integer labels stay exact).

        map_table(np.array([{1: 0.1, 0: 0.9}]))   # array([[0.9, 0.1]])
    """
    items = array.tolist()
    order = map_order(frozenset(items[0]))
    return np.array([[m[k] for k in order] for m in items], dtype=np.float64)


@cache
def runtime_limits() -> tuple[int, int]:
    """(highest IR version, highest ai.onnx opset) the installed onnxruntime loads.

    Measured by loading one-node models, so it is right for whatever build is installed.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def loads(ir: int, opset: int) -> bool:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        proto = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir
        )
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        try:
            ort.InferenceSession(
                proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception:
            return False
        return True

    max_ir = _highest(lambda ir: loads(ir, 13), low=7, high=64)
    max_opset = _highest(lambda op: loads(max_ir, op), low=13, high=256)
    return max_ir, max_opset


def _highest(ok: Any, low: int, high: int) -> int:
    """Largest v in [low, high) with ok(v), assuming ok is monotone and ok(low) holds."""
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            low = mid
        else:
            high = mid
    return low


# --- thread counts -----------------------------------------------------------------------


MAX_THREADS = 1024
"""The most threads a thread pool may be asked for: more than any CPU ONNX Runtime runs on has
(ONNX Runtime takes a 32-bit count, and tries to start every thread asked for)."""


def check_threads(threads: int, what: str = "threads") -> int:
    """``threads`` when it is a count of threads (or of workers) from 1 to MAX_THREADS, else a
    one-line UsageError (``what`` names it).

    >>> check_threads(2)
    2
    """
    if not 1 <= threads <= MAX_THREADS:
        raise UsageError(
            f"{what} must be from 1 to {MAX_THREADS}, got {threads}",
            hint=f"this machine has {usable_cores()} usable cores; give at most that many",
        )
    return threads


# --- seeds -------------------------------------------------------------------------------


MAX_SEED = 2**32 - 1
"""The largest seed: numpy's ``RandomState`` (what shap, lime and scikit-learn seed) takes
0 to 2**32 - 1."""


def check_seed(seed: int) -> int:
    """``seed`` when it is one (0 to MAX_SEED), else a one-line UsageError.

    >>> check_seed(7)
    7
    """
    if isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be from 0 to {MAX_SEED}, got {seed}", hint="e.g. seed 0")
    return seed


# --- the cores and the memory this process may use ---------------------------------------


def usable_cores(
    cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The cores this process may keep busy: its CPU affinity, capped by a cgroup CPU quota
    (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded down, >= 1.

    The quota of the process's own cgroup and of each ancestor counts (the tightest wins).
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root, _cgroup_paths(self_cgroup))
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


@contextmanager
def blas_on_one_thread() -> Iterator[None]:
    """numpy's and scipy's BLAS (OpenBLAS, MKL) on one thread for the block: for Python code
    that calls it between session runs (an explainer's regression). Left to itself, BLAS's
    idle threads spin on the cores ONNX Runtime's threads run on and each slows the other:
    on 2 cores shap's solve took 3x as long and the model's runs beside it as much. The
    libraries are those loaded at the first call; without threadpoolctl (it comes with
    scikit-learn) the block runs as it would."""
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn's dependency, with every explainer
        return None
    return ThreadpoolController()


def memory_limit(
    cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The tightest cgroup memory limit in bytes over the process's cgroup and its ancestors
    (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), None when unlimited."""
    paths = _cgroup_paths(self_cgroup)
    found: list[int] = []
    files = [d / "memory.max" for d in _candidates(cgroup_root, paths.get("", "/"))]
    files += [
        d / "memory.limit_in_bytes"
        for d in _candidates(cgroup_root / "memory", paths.get("memory", "/"))
    ]
    for file in files:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 62:  # v1 writes "unlimited" as ~2**63
            found.append(int(text))
    return min(found) if found else None


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes by field (``MemTotal``, ``MemAvailable``); empty where unreadable."""
    info: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return info


def available_memory() -> int | None:
    """Bytes this process may still allocate, about: the machine's available memory, capped by
    the cgroup's limit; None where neither can be read."""
    found = [v for v in (meminfo().get("MemAvailable"), memory_limit()) if v is not None]
    return min(found) if found else None


def _cgroup_paths(self_cgroup: Path) -> dict[str, str]:
    """The process's cgroup path per hierarchy: "" for v2, controller names for v1."""
    paths: dict[str, str] = {}
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, where = parts
        if controllers == "":
            paths[""] = where
        for controller in controllers.split(","):
            if controller in ("cpu", "memory"):
                paths[controller] = where
    return paths


def _cgroup_quota(root: Path, paths: Mapping[str, str]) -> float | None:
    """The tightest CPU quota in cores over the cgroup and its ancestors, None if unlimited."""
    found: list[float] = []
    for directory in _candidates(root, paths.get("", "/")):
        found.extend(_v2_quota(directory / "cpu.max"))
    for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        for directory in _candidates(base, paths.get("cpu", "/")):
            found.extend(_v1_quota(directory))
    return min(found) if found else None


def _candidates(base: Path, where: str) -> list[Path]:
    """``base/where`` and each ancestor up to ``base`` (a container sees its cgroup as /)."""
    parts = [p for p in where.split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(file: Path) -> list[float]:
    try:
        fields_ = file.read_text().split()
    except OSError:
        return []
    if len(fields_) != 2 or fields_[0] == "max":
        return []
    try:
        quota, period = int(fields_[0]), int(fields_[1])
    except ValueError:
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def _v1_quota(directory: Path) -> list[float]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []

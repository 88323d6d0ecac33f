"""`ferry check`: can this model be deployed? Every check that blocks deployment, in order.

    report = onnxferry.check("model.onnx")
    report.ok                      # False if anything blocks deployment
    [f.check for f in report.result.findings if f.status == "fail"]

The checks: safe load (external data stays inside the model directory, size limit), the
onnx checker (full; an operator ONNX defines only at other opsets than the model's, as the
LayerNormalization ONNX Runtime's transformers optimizer writes at opset 14, is a warning
and the rest is checked past it), strict shape inference, IR version and opsets the installed ONNX
Runtime can load, operators the CPU provider has no kernel for, the C library locales its
``StringNormalizer`` nodes build (``locales``), ONNX Runtime's machine-specific NCHWc
operators (a warning), loading on each
available provider, and one run on the CPU whose outputs must have the shapes the model
declares (a warning, not a blocker: ONNX Runtime runs the model, but a server advertises the
declared shapes); a model that draws random numbers is run again on the same inputs, and
answers that vary are a warning. A file that is not an ONNX model at all is an input error (exit 2),
not a finding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .customops import EXTENSION_DOMAINS, extensions_installed
from .errors import FerryError, UnsafeModelError, one_line
from .graphs import PROTO_LIMIT, densify_sparse_initializers, inlined, random_ops
from .locales import PORTABLE_LOCALE, missing_locales, needed_locales, same_case_mapping
from .model import (
    DEFAULT_MAX_SIZE,
    Model,
    checker_findings,
    iter_graphs,
    iter_nodes,
    resolve_model_path,
)
from .report import Report, Table
from .runtime import (
    SessionConfig,
    available_providers,
    create_session,
    ort_error_message,
    quiet_run_options,
    run_session,
    session_providers,
    version_problem,
)

if TYPE_CHECKING:
    import onnx

Status = Literal["pass", "fail", "warn", "skip"]

# Providers that do not run a model on this machine's hardware (remote endpoints).
_NOT_LOCAL = {"azure"}


@dataclass(frozen=True)
class Finding:
    """One check's outcome; ``blocking`` failures make the whole check fail."""

    check: str
    status: Status
    detail: str
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "detail": self.detail,
            "blocking": self.blocking,
        }


@dataclass
class CheckResult:
    """All findings for one model (ReportBody)."""

    model: str
    digest: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blockers

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail" and f.blocking]

    def add(self, check: str, status: Status, detail: str, blocking: bool = True) -> None:
        self.findings.append(Finding(check, status, detail, blocking))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "digest": self.digest,
            "blocking_failures": len(self.blockers),
            "findings": [f.to_dict() for f in self.findings],
        }

    def tables(self) -> list[Table]:
        rows = [(f.check, f.status.upper(), f.detail) for f in self.findings]
        return [Table(f"check {self.model}", ("check", "status", "detail"), rows)]


def check(
    path: str | Path,
    *,
    providers: Sequence[str] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Report[CheckResult]:
    """Run every deployment check on the model at ``path``.

    ``providers`` limits the load test to these short names (default: all available).
    Raises ModelLoadError (exit 2) only when ``path`` holds no parseable model at all.
    """

    file = resolve_model_path(Path(path))
    result = CheckResult(model=str(file), digest=None)
    model: Model | None = None
    try:
        model = Model.load(file, max_size=max_size)
    except UnsafeModelError as e:
        result.add("safe load", "fail", str(e))
        return Report("check", result)
    result.add("safe load", "pass", "external data stays inside the model directory")
    result.digest = model.digest
    problem, unknown = checker_findings(file)
    dense = _densified(model)
    if problem:
        result.add("onnx checker", "fail", f"the onnx checker rejects the model: {problem}")
    else:
        result.add("onnx checker", "pass", "the model is structurally valid")
        _full_checker(file, result, dense)
    if unknown:
        result.add(
            "operators outside ONNX",
            "warn",
            f"ONNX defines no {', '.join(unknown)} (operator@opset) in its own domain: ONNX "
            "Runtime keeps kernels for some (its transformers optimizer writes "
            "LayerNormalization at opset 14; the load checks below say whether it runs), "
            "other runtimes may refuse the model",
        )
    _shape_inference(file, result, dense)
    _runtime_versions(model.proto, result)
    _cpu_kernels(model.proto, result)
    _locales(model.proto, result)
    _machine_specific(model.proto, result)
    cpu = _load_on_providers(model, providers, result)
    if cpu is not None:
        _declared_outputs(model, cpu, result)
    return Report("check", result)


@dataclass(frozen=True)
class _Dense:
    """The model with its sparse initializers made dense, for onnx's inference."""

    proto: onnx.ModelProto
    count: int

    @property
    def note(self) -> str:
        if self.count == 1:
            return " (its sparse initializer read as the dense tensor ONNX Runtime makes of it)"
        return f" ({self.count} sparse initializers read as the dense tensors ONNX Runtime makes)"


def _densified(model: Model) -> _Dense | None:
    """A copy of the model whose sparse initializers are dense, or None when it has none (or
    it would pass protobuf's limit): onnx's checker and shape inference type a sparse
    initializer as a sparse tensor and fail on the dense operator it feeds."""
    if not any(graph.sparse_initializer for graph in iter_graphs(model.proto)):
        return None
    proto = inlined(model)
    count = densify_sparse_initializers(proto)
    return _Dense(proto, count) if proto.ByteSize() <= PROTO_LIMIT else None


def _full_checker(file: Path, result: CheckResult, dense: _Dense | None) -> None:
    data = None if dense is None else dense.proto.SerializeToString()
    problem, _ = checker_findings(file, data, full=True)
    note = "" if dense is None else dense.note
    if problem:
        result.add("onnx checker (full)", "fail", problem[:400] + note)
    else:
        result.add("onnx checker (full)", "pass", "types and shapes consistent" + note)


def _shape_inference(file: Path, result: CheckResult, dense: _Dense | None) -> None:
    import onnx

    note = "" if dense is None else dense.note
    try:
        proto = onnx.load(str(file), load_external_data=False) if dense is None else dense.proto
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as e:
        result.add("shape inference (strict)", "fail", one_line(e, 400) + note)
        return
    unknown = [v.name for v in inferred.graph.output if not v.type.tensor_type.HasField("shape")]
    if unknown:
        result.add(
            "shape inference (strict)",
            "warn",
            f"output shapes not inferred: {', '.join(unknown)}",
            blocking=False,
        )
    else:
        result.add("shape inference (strict)", "pass", "every output shape inferred" + note)


def _runtime_versions(proto: onnx.ModelProto, result: CheckResult) -> None:
    import onnxruntime as ort

    opsets = {o.domain: o.version for o in proto.opset_import}
    problem = version_problem(proto.ir_version, opsets)
    if problem:
        result.add(
            "runtime versions",
            "fail",
            f"{problem}; re-export with an older opset or upgrade onnxruntime",
        )
    else:
        result.add(
            "runtime versions", "pass", f"IR and opsets load in onnxruntime {ort.__version__}"
        )


def _cpu_kernels(proto: onnx.ModelProto, result: CheckResult) -> None:
    missing = sorted(unsupported_cpu_ops(proto))
    if missing:
        result.add(
            "cpu operators",
            "fail",
            f"no CPU kernel for {', '.join(missing)}; use another opset (`ferry convert "
            "MODEL -o NEW.onnx` raises one older than ONNX Runtime runs, verified), a provider "
            "that has them, or register a custom op library",
        )
    else:
        result.add("cpu operators", "pass", "every operator has a CPU kernel")


def unsupported_cpu_ops(proto: onnx.ModelProto) -> set[str]:
    """Operators (as "domain::Op@opset") that ONNX Runtime's CPU provider cannot run.

    An op is runnable when the CPU provider registers a kernel for its version, when the
    model defines it as a local function, when its ONNX schema has a function body that
    ONNX Runtime expands, or when onnxruntime-extensions provides its domain (each session
    registers it; the load checks then try it).
    """
    import onnx

    provided = EXTENSION_DOMAINS if extensions_installed() else frozenset()
    kernels = _cpu_kernel_table()
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
    local = {(f.domain, f.name) for f in proto.functions}
    missing: set[str] = set()
    for graph in iter_graphs(proto):
        for node in graph.node:
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            if (node.op_type == "Constant" and domain == "") or (domain, node.op_type) in local:
                continue
            if domain in provided:
                continue
            version = opsets.get(domain, 1)
            since = version
            try:
                schema = onnx.defs.get_schema(node.op_type, version, domain)
            except Exception:
                schema = None
            if schema is not None:
                # ONNX Runtime expands ops whose schema has a function body.
                if getattr(schema, "has_function", False) or getattr(
                    schema, "has_context_dependent_function", False
                ):
                    continue
                since = schema.since_version
            ranges = kernels.get((domain, node.op_type), [])
            if not any(lo <= since <= hi for lo, hi in ranges):
                missing.add(f"{domain or 'ai.onnx'}::{node.op_type}@{version}")
    return missing


@cache
def _cpu_kernel_table() -> dict[tuple[str, str], list[tuple[int, int]]]:
    from onnxruntime.capi import _pybind_state

    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            table.setdefault((k.domain, k.op_name), []).append(tuple(k.version_range))
    return table


def _machine_specific(proto: onnx.ModelProto, result: CheckResult) -> None:
    """ONNX Runtime's NCHWc layout operators: a model saved after its optimizations at level
    "all" on one CPU, which ONNX Runtime says is for that machine only (a warning)."""
    nchwc = sorted({n.op_type for n in iter_nodes(proto) if n.domain == "com.microsoft.nchwc"})
    if nchwc:
        result.add(
            "machine-specific operators",
            "warn",
            f"com.microsoft.nchwc {', '.join(nchwc)}: ONNX Runtime wrote this model after its "
            "level-all optimizations, in a channel-block layout of the CPU it ran on, and says "
            "to run it only there; deploy the model from before that optimization (or saved at "
            "level extended)",
            blocking=False,
        )


def _locales(proto: onnx.ModelProto, result: CheckResult) -> None:
    """The locales StringNormalizer nodes build when the model loads: a failure where this
    machine lacks one, a warning for one that slim container images lack."""
    needed = needed_locales(proto)
    if not needed:
        return
    missing = missing_locales(proto)
    shown = "; ".join(f"{node}: {name}" for node, name in needed.items())
    convert = f"`ferry convert` sets {PORTABLE_LOCALE} (the same case mapping)"
    portable = all(same_case_mapping(name) for name in needed.values())
    fix = convert if portable else "install the locale where the model runs"
    if missing:
        result.add(
            "locales",
            "fail",
            f"StringNormalizer locales not on this machine ({'; '.join(missing.values())}): "
            f"the model does not load here; {fix}",
        )
    elif any(name not in ("C", PORTABLE_LOCALE, "POSIX") for name in needed.values()):
        result.add(
            "locales",
            "warn",
            f"StringNormalizer locales ({shown}) are here, not in slim container images "
            f"(only C.UTF-8); {fix}, and `ferry package` installs them",
            blocking=False,
        )
    else:
        result.add("locales", "pass", f"{shown}: in every C library")


def _load_on_providers(
    model: Model, wanted: Sequence[str] | None, result: CheckResult
) -> Any | None:
    """Load on each provider; the CPU session when it loaded (for one run), else None."""
    # Named providers may include openvino's own runtime (ovsession); by default only the
    # onnxruntime build's, so a plain check never imports openvino.
    available = session_providers() if wanted else available_providers()
    names = list(wanted) if wanted else [p for p in available if p not in _NOT_LOCAL]
    cpu = None
    for name in names:
        check_name = f"load on {name}"
        if name not in available:
            result.add(check_name, "skip", f"{name} is not in this onnxruntime build", False)
            continue
        start = time.perf_counter()
        try:
            session = create_session(model, SessionConfig(provider=name, fallback=False))
        except Exception as e:
            result.add(check_name, "fail", one_line(e, 400))
            continue
        ms = (time.perf_counter() - start) * 1000
        used = session.get_providers()
        result.add(check_name, "pass", f"session created in {ms:.0f} ms ({', '.join(used)})")
        if name == "cpu":
            cpu = session
    return cpu


def _declared_outputs(model: Model, session: Any, result: CheckResult) -> None:
    """One run on the CPU at sizes that run (``feeds.plan_feeds``): each output's shape
    against the shape the model declares for it (rank, fixed dims, dims named like an
    input's), which servers advertise as the model's metadata."""
    from .feeds import plan_feeds

    name = "declared output shapes"
    try:
        plan = plan_feeds(model, session=session)
    except FerryError as e:
        result.add(name, "skip", f"not run: {e}", False)
        return
    feeds = plan.feeds(seed=0)
    try:
        values = run_session(session, None, feeds, quiet_run_options())
    except Exception as e:  # onnxruntime raises untyped errors for a run it cannot do
        # generated values may be ones the model refuses (an id past a table): not a blocker
        result.add(name, "warn", f"onnxruntime cannot run it on {plan.describe()} with "
                   f"generated values: {one_line(ort_error_message(e), 300)}", False)  # fmt: skip
        return
    wrong = [
        f"{spec.name!r} is declared {spec.shape_text()} but gives {list(np.shape(value))}"
        for spec, value in zip(model.signature.outputs, values, strict=True)
        if not spec.fits(np.shape(value), plan.sizes)
    ]
    if wrong:
        result.add(
            name, "warn",
            f"on {plan.describe()}, output {'; '.join(wrong)}: clients that read the model's "
            "metadata (a V2 server's) are told a wrong shape; fix the graph's output shapes",
            False,
        )  # fmt: skip
    else:
        result.add(name, "pass", f"every output as declared on {plan.describe()}")
    if drawn := random_ops(model.proto):
        _same_twice(model, session, [feeds, plan.feeds(seed=1)], drawn, result)


def _same_twice(
    model: Model, session: Any, feed_sets: Sequence[Any], drawn: list[str], result: CheckResult
) -> None:
    """A model that draws random numbers (``graphs.random_ops``) run ``_RUNS`` times on each
    feed set (two sets: a generated scalar may turn a dropout all on or all off): outputs
    that differ are a warning (every answer, cached answer and parity check sees other
    values); the same outputs say the draws did not reach them in those runs. ONNX Runtime
    seeds an unseeded draw from the clock: runs close together may draw alike."""
    name, ops = "same answer each run", ", ".join(drawn)
    differ: dict[str, None] = {}
    for feeds in feed_sets:
        first = run_session(session, None, feeds, quiet_run_options())
        for _ in range(_RUNS - 1):
            again = run_session(session, None, feeds, quiet_run_options())
            for spec, a, b in zip(model.signature.outputs, first, again, strict=True):
                if not np.array_equal(np.asarray(a), np.asarray(b)):
                    differ[spec.name] = None
    if differ:
        result.add(
            name, "warn",
            f"outputs {', '.join(differ)} differ from run to run on the same inputs: the "
            f"graph draws random numbers ({ops}); export it with them off (a dropout's "
            "keep probability at 1: ferry convert fixes a TF1 keep_prob)",
            False,
        )  # fmt: skip
    else:
        result.add(
            name, "pass",
            f"the graph draws random numbers ({ops}); its outputs did not vary over "
            f"{_RUNS} runs on each of {len(feed_sets)} inputs",
            False,
        )  # fmt: skip


_RUNS = 4

"""An existing ONNX model as a conversion source: re-target it to an opset and IR version the
installed ONNX Runtime loads.

    source = load_onnx("model.onnx", ConvertOptions(opset=17))

The reference is ONNX Runtime on the original when it can load it, else the ONNX reference
implementation (``onnx.reference``), so a model stamped with an opset too new for the runtime
is still verified after it is lowered.

A ``StringNormalizer`` whose locale this machine lacks (skl2onnx's text pipelines name none,
and ONNX Runtime then builds ``en_US.UTF-8``, which slim images lack) is set to ``C.UTF-8``
where that case-maps the same (``locales.portable_locales``), in the output and in the
reference alike: the model then loads here and anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelLoadError, one_line
from ..graphs import copy_model, inlined
from ..locales import PORTABLE_LOCALE, portable_locales
from ..model import Model
from ..runtime import OrtRunner, runtime_limits, unoptimized_runner
from ..signature import Signature
from .base import Candidate, ConversionError, ConvertOptions, Source

if TYPE_CHECKING:
    import onnx


class ReferenceRunner:
    """Runs a model with onnx's reference implementation (slow, but needs no runtime)."""

    def __init__(self, model: Model) -> None:
        from onnx.reference import ReferenceEvaluator

        self.model = model
        self.name = f"{model.name}@onnx.reference"
        self._evaluator = ReferenceEvaluator(model.proto)

    @property
    def signature(self) -> Signature:
        return self.model.signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        outputs = self._evaluator.run(None, dict(feeds))
        names = self.signature.output_names
        return {n: np.asarray(v) for n, v in zip(names, outputs, strict=True)}


def load_onnx(source: str | Path | Model, options: ConvertOptions) -> Source:
    """The model, to be re-targeted to ``options.opset`` (default: the highest the runtime
    loads, if the model's is higher) and an IR version the runtime loads."""
    model = source if isinstance(source, Model) else Model.load(source)
    name = model.name
    max_ir, max_opset = runtime_limits()
    current = model.opset_imports.get("ai.onnx", 0)
    target = options.opset or min(current, max_opset)
    details: dict[str, object] = {"opset_from": current, "opset_to": target}
    portable = copy_model(model.proto)
    if changed := portable_locales(portable):
        model = Model.from_proto(inlined(model, portable))
        details["locales"] = {node: f"{was} -> {PORTABLE_LOCALE}" for node, was in changed.items()}
    try:
        reference: OrtRunner | ReferenceRunner = OrtRunner(model)
    except ModelLoadError as e:
        reference = _reference_implementation(model, e)
    if changed:
        reference.name = f"{name} in {PORTABLE_LOCALE}@{reference.name.split('@')[-1]}"

    def export(path: Path) -> None:
        import onnx

        proto = _retarget(model.proto, target, max_ir)
        onnx.save(proto, str(path))

    return Source(
        framework="onnx",
        description=f"ONNX model {name} (opset {current}, IR {model.ir_version})",
        reference=reference,
        candidates=[Candidate(f"onnx version converter (opset {target})", export)],
        second_reference=(
            (lambda: unoptimized_runner(model)) if isinstance(reference, OrtRunner) else None
        ),
        details={**details, "reference": reference.name},
    )


def _reference_implementation(model: Model, load_error: ModelLoadError) -> ReferenceRunner:
    """onnx's reference implementation of a model ONNX Runtime cannot load; the load error
    when that cannot run it either (an operator outside the ONNX standard)."""
    try:
        return ReferenceRunner(model)
    except Exception as e:
        raise ModelLoadError(
            f"{load_error.message}; onnx's reference implementation cannot run it either "
            f"({one_line(e, 120)})",
            hint=load_error.hint,
        ) from e


def _retarget(proto: onnx.ModelProto, opset: int, max_ir: int) -> onnx.ModelProto:
    import onnx
    from onnx import helper, version_converter

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    out = proto
    if current != opset:
        try:
            out = version_converter.convert_version(proto, opset)
        except Exception as e:
            raise ConversionError(
                f"onnx cannot convert the model from opset {current} to {opset}: {one_line(e)}",
                hint="pick another --opset, or re-export the model from its framework",
            ) from e
    else:
        out = onnx.ModelProto()
        out.CopyFrom(proto)
    needed = helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    if needed > max_ir:
        raise ConversionError(
            f"opset {opset} needs IR version {needed}, newer than onnxruntime loads ({max_ir})",
            hint="pick a lower --opset",
        )
    out.ir_version = min(out.ir_version, max_ir) if out.ir_version > max_ir else out.ir_version
    out.ir_version = max(out.ir_version, needed)
    return out

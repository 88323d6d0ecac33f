"""A pass's output: saved, kept valid for the input's IR version and opset, and compared.

    proto = copy_model(model.proto)                      # a pass's rewritten graph
    result = save_output("my_pass", proto, model, ctx)   # conformed, saved, loaded back
    output_problem(result, model)                        # None: the onnx checker accepts it
    graph_key(result.proto) == graph_key(model.proto)    # True: the same ops and weights
    ops_past_opset(result.proto)                         # {}: every op is in the opset
    lifted_weights(2)                                    # ["moved 2 tensor(s) held in ..."]

Shared by every pass. Below IR 4 every initializer is listed as a graph input (``conform``);
``convert_opset`` raises an opset with onnx's version converter where a pass writes ops the
model's opset lacks; ``output_problem`` is the chain's check that a pass did not make a valid
model invalid. Passes that read weights move tensors held in Constant nodes to initializers
first (``graphs.constants_to_initializers``: Paddle2ONNX writes its weights so) and say so with
``lifted_weights``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, one_line
from ..graphs import copy_model, iter_initializers, iter_nodes
from ..model import Model, checker_problem
from .base import PassContext, PassError

if TYPE_CHECKING:
    import onnx

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The names of ONNX's default operator domain."""


def save_output(
    pass_name: str, proto: onnx.ModelProto, source: Model, ctx: PassContext | Path
) -> Model:
    """``proto`` made valid for its IR version (``conform``), saved under
    ``ctx.scratch(pass_name)`` (or at the path given) and loaded back; weights go to external
    data when ``source`` had external data (or the model is past protobuf's limit). A model
    that does not load is the pass's failure (PassError)."""
    conform(proto, source)
    target = ctx if isinstance(ctx, Path) else ctx.scratch(pass_name)
    return _save(pass_name, Model.from_proto(proto), target, bool(source.external_files) or None)


def _save(pass_name: str, model: Model, target: Path, external: bool | None) -> Model:
    try:
        return model.save(target, external_data=external)
    except ModelLoadError as e:
        raise PassError(
            f"{pass_name}: the pass produced a model that does not load: {e.message}",
            hint=f"leave {pass_name} out of the recipe for this model",
        ) from e


def lifted_weights(moved: int) -> list[str]:
    """The note for ``moved`` tensors taken out of Constant nodes (none for 0)."""
    if not moved:
        return []
    return [
        f"moved {moved} tensor(s) held in Constant nodes to initializers (where Paddle2ONNX "
        "writes weights): the pass reads and writes initializers"
    ]


def graph_key(proto: onnx.ModelProto) -> tuple[Counter[tuple[str, str]], Counter[Any]]:
    """What a pass must change to count as a change: the operators (domain, op type) of every
    node, subgraphs included, and the initializers' types and shapes."""
    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in iter_nodes(proto))
    inits: Counter[Any] = Counter((t.data_type, tuple(t.dims)) for t in iter_initializers(proto))
    return ops, inits


# --- valid for the input's IR version and opset ------------------------------------------------


def conform(proto: onnx.ModelProto, source: Model) -> int:
    """Make a pass's output valid for its IR version, in place; how many inputs it changed.

        conform(proto, source)      # IR < 4: every initializer is listed in graph.input

    Before IR version 4 every initializer must also be a graph input, and libraries (onnxslim,
    ORT's quantizer, converters) write new initializers without one. Each initializer of the
    main graph gets an input of its own type and shape (fixed when a pass changed it); inputs
    that only named an initializer of ``source`` that is gone are dropped. ONNX Runtime treats
    initializers as constants below IR 4, so this costs nothing at run time. Later IR versions
    are left as they are.
    """
    from onnx import helper

    if proto.ir_version >= 4:
        return 0
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    gone = {t.name for t in source.proto.graph.initializer} - set(initializers)
    inputs = [i for i in graph.input if i.name not in gone]
    changed = len(graph.input) - len(inputs)
    listed = {i.name: i for i in inputs}
    for name, tensor in initializers.items():
        wanted = helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
        if name not in listed:
            inputs.append(wanted)
            changed += 1
        elif listed[name].type != wanted.type:
            listed[name].type.CopyFrom(wanted.type)
            changed += 1
    if changed:
        del graph.input[:]
        graph.input.extend(inputs)
    return changed


def conformed(pass_name: str, result: Model, source: Model, ctx: PassContext) -> Model:
    """``result`` (a pass's output on disk) made valid for its IR version (``conform``): itself
    when nothing needs fixing, else a fixed copy under ``ctx.scratch``."""
    if result.ir_version >= 4:
        return result
    proto = copy_model(result.proto)
    if not conform(proto, source):
        return result
    fixed = Model(proto, result.path, result.external_files)
    return _save(pass_name, fixed, ctx.scratch(pass_name), bool(result.external_files) or None)


def output_problem(result: Model, source: Model) -> str | None:
    """What the onnx checker rejects in ``result``, a pass's output, when it accepts ``source``
    (one line), else None: a pass must not make a valid model invalid. A source the checker
    rejects already (some models in the wild) leaves the judgement to ONNX Runtime."""
    problem = _checker_problem(result)
    if problem is None or _checker_problem(source) is not None:
        return None
    return problem


def _checker_problem(model: Model) -> str | None:
    if model.path is not None:
        return checker_problem(model.path)
    return checker_problem(Path(model.name), model.proto.SerializeToString())


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's opset of the default (ai.onnx) domain."""
    return next((int(o.version) for o in proto.opset_import if o.domain in DEFAULT_DOMAINS), 1)


def ops_past_opset(proto: onnx.ModelProto) -> dict[str, int | None]:
    """Default-domain operators ``proto``'s opset does not have, each with the first opset that
    has it (None: none has it, an onnxruntime op written to the default domain).

        ops_past_opset(proto)        # {"LayerNormalization": 17} in an opset-11 model
    """
    import onnx

    version = default_opset(proto)
    missing: dict[str, int | None] = {}
    for node in iter_nodes(proto):
        if node.domain not in DEFAULT_DOMAINS or node.op_type in missing:
            continue
        try:
            onnx.defs.get_schema(node.op_type, version, "")
        except onnx.defs.SchemaError:
            missing[node.op_type] = _first_opset(node.op_type)
    return missing


def _first_opset(op_type: str) -> int | None:
    import onnx

    versions = [
        s.since_version
        for s in onnx.defs.get_all_schemas_with_history()
        if s.name == op_type and s.domain in DEFAULT_DOMAINS
    ]
    return min(versions) if versions else None


def convert_opset(pass_name: str, proto: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``proto`` converted to opset ``version`` by onnx's version converter (a new model; tensor
    data must be inline, see ``graphs.inlined``); PassError when the converter cannot."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, version)
    except Exception as e:
        raise PassError(
            f"{pass_name}: onnx's version converter cannot raise the opset from "
            f"{default_opset(proto)} to {version}: {one_line(e)}",
            hint=f"convert the model to opset {version} first (ferry convert --opset {version})",
        ) from e


def node_count(proto: onnx.ModelProto) -> int:
    return sum(1 for _ in iter_nodes(proto))

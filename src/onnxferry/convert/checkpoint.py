"""TensorFlow 1 training checkpoints as conversion sources: the ``.meta`` graph a
``tf.compat.v1.train.Saver`` writes beside its weights (``model.ckpt.index`` and
``.data-*``), as research code of that era (musicnn, CRNN, DeepSpeech) ships its models.

    source = load_checkpoint("model.ckpt.meta", ConvertOptions())  # or the folder
    source.reference.signature   # inputs: the placeholders the outputs read
    source.reference.run(feeds)  # the frozen graph in TensorFlow, {name: array}

The graph is frozen as ``freeze_graph`` does it (imported, its variables restored from the
checkpoint and turned into constants) and then converted as a frozen graph
(``convert.graphdef``). A training graph holds more than the model: gradients, the
optimizer, the saver, the loss and its labels. The outputs are the graph's ends once those
are set aside (the ends that read a placeholder, feed no training op and are not shape
bookkeeping), or the tensors ``--graph-outputs`` names; the labels placeholder drops out
with the loss, and an ``is_training`` switch is fixed to False.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, one_line
from .base import ConvertOptions, Source
from .graphdef import GraphDefRunner, closure, graph_ends, node_name, parse_file
from .tf_common import import_tf, quiet_tf, resolve_opset

_TRAINING_OPS = ("Apply", "ResourceApply", "Assign", "Scatter", "SaveV2", "RestoreV2")
"""Op-name prefixes of what only training runs: optimizer updates, variable writes, saving."""
_TRAINING_SCOPES = ("gradients", "save")
"""Top-level name scopes (``gradients_1``, ``save_2`` too) that only training builds."""
_TRAINING_COLLECTIONS = ("losses", "train_op", "summaries", "update_ops")
_BOOKKEEPING = {"Shape", "Size", "Rank"}


def is_checkpoint(path: Path) -> bool:
    """A ``.meta`` file, or a folder holding one (and no SavedModel)."""
    if path.is_dir():
        return not (path / "saved_model.pb").is_file() and any(path.glob("*.meta"))
    return path.name.endswith(".meta")  # musicnn's is named ".meta" alone


def load_checkpoint(path: str | Path, options: ConvertOptions) -> Source:
    """A TF1 checkpoint (its ``.meta`` file, or its folder) to convert, frozen. InputError
    (exit 2) for a file that is not a MetaGraphDef, missing weights, or a training graph
    whose outputs cannot be told (name them with ``--graph-outputs``)."""
    opset = resolve_opset(options)
    meta_path = _meta_file(Path(path))
    tf = import_tf()
    meta = _read(meta_path, tf)
    outputs = list(options.graph_outputs) or inference_ends(meta)
    frozen = _freeze(meta, meta_path, [node_name(name) for name in outputs], tf)
    given = "given with --graph-outputs" if options.graph_outputs else None
    runner = GraphDefRunner(
        frozen,
        options,
        meta_path.name.removesuffix(".meta") or meta_path.parent.name,
        outputs=outputs,
        ends=given or "the training graph's ends, gradients, optimizer and loss set aside",
    )
    what = f"{meta_path}: TensorFlow checkpoint, {len(frozen.node)} nodes frozen"
    return runner.source(what, opset, notes=runner.notes)


def inference_ends(meta: Any) -> list[str]:
    """The ends of a training graph's model: nodes nothing reads once gradients, optimizer,
    saver, losses, summaries and update ops are set aside, that read a placeholder and feed
    none of those. InputError when none is left."""
    graph_def = meta.graph_def
    nodes = {n.name: n for n in graph_def.node}
    readers: dict[str, list[str]] = {}
    for node in graph_def.node:
        for reference in node.input:
            readers.setdefault(node_name(reference), []).append(node.name)
    seeds = [
        n.name
        for n in graph_def.node
        if n.name.split("/")[0].rstrip("_0123456789") in _TRAINING_SCOPES
        or n.op.startswith(_TRAINING_OPS)
        or n.op.endswith("Summary")
    ]
    for key in _TRAINING_COLLECTIONS:
        if key in meta.collection_def:
            listed = meta.collection_def[key].node_list.value
            seeds += [node_name(v) for v in listed if node_name(v) in nodes]
    training = closure(seeds, lambda name: readers.get(name, []))
    feeds_training = closure(seeds, lambda name: [node_name(i) for i in nodes[name].input])
    model = type(graph_def)()
    model.node.extend(n for n in graph_def.node if n.name not in training)
    ends = [
        name
        for name in graph_ends(model)
        if name not in feeds_training
        and nodes[name].op not in _BOOKKEEPING
        and any(
            nodes[a].op == "Placeholder"
            for a in closure([name], lambda n: [node_name(i) for i in nodes[n].input])
        )
    ]
    if not ends:
        endings = [n.name for n in model.node if n.op in ("Softmax", "Sigmoid", "ArgMax")]
        raise InputError(
            "cannot tell the model's outputs in this training graph: each of its ends feeds "
            "the loss or the optimizer",
            hint="name them with --graph-outputs NAME[,NAME]"
            + (f", e.g. {', '.join(endings[:4])}" if endings else ""),
        )
    return ends


def _meta_file(path: Path) -> Path:
    """The ``.meta`` file: ``path`` itself, or its folder's one (the one the folder's
    ``checkpoint`` file names, where it holds several)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory", hint="check the path")
    if not path.is_dir():
        return path
    metas = sorted(path.glob("*.meta"))
    if len(metas) > 1:
        latest = _latest(path)
        chosen = [m for m in metas if latest is not None and m.name == f"{latest}.meta"]
        if not chosen:
            raise InputError(
                f"{path}: holds {len(metas)} checkpoints ({', '.join(m.name for m in metas[:4])})",
                hint="give the .meta file of the one to convert",
            )
        metas = chosen
    return metas[0]


def _latest(folder: Path) -> str | None:
    """The checkpoint a folder's ``checkpoint`` file names (its base name: the path in it
    is where training ran, often another machine)."""
    state = folder / "checkpoint"
    if not state.is_file():
        return None
    for line in state.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model_checkpoint_path":
            return Path(value.strip().strip('"')).name
    return None


def _read(path: Path, tf: Any) -> Any:
    """The MetaGraphDef in ``path``, shape hints dropped (a TF 1.x graph's ``_output_shapes``
    can disagree with today's kernels, e.g. FusedBatchNorm's reserve space)."""
    what = "a TensorFlow checkpoint's graph"
    hint = "give the .meta file tf.compat.v1.train.Saver wrote beside the weights"
    meta = parse_file(path, tf.compat.v1.MetaGraphDef(), what, hint)
    if not meta.graph_def.node:
        raise InputError(f"{path}: not {what} (it holds no nodes)", hint=hint)
    for node in meta.graph_def.node:
        node.attr.pop("_output_shapes", None)
    return meta


def _freeze(meta: Any, meta_path: Path, outputs: list[str], tf: Any) -> Any:
    """The graph pruned to ``outputs`` with its variables restored from the checkpoint
    beside ``meta_path`` as constants."""
    prefix = str(meta_path).removesuffix(".meta")
    missing = [n for n in outputs if n not in {node.name for node in meta.graph_def.node}]
    if missing:
        raise InputError(
            f"--graph-outputs {missing[0]}: the graph has no node {missing[0]!r}",
            hint=f"name one of its ends: {', '.join(inference_ends(meta)[:8])}",
        )
    graph = tf.Graph()
    with quiet_tf(), graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        try:
            saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
        except (ValueError, tf.errors.OpError) as e:
            raise InputError(
                f"{meta_path}: TensorFlow cannot import this graph ({one_line(e)})",
                hint="export it again with this TensorFlow, or as a SavedModel",
            ) from e
        if saver is not None:
            if not Path(f"{prefix}.index").is_file():
                raise InputError(
                    f"{meta_path}: its weights ({Path(prefix).name}.index and .data-*) are "
                    "not beside it",
                    hint="put the whole checkpoint (.meta, .index, .data-*) in one folder",
                )
            try:
                saver.restore(session, prefix)
            except tf.errors.OpError as e:
                raise InputError(
                    f"{meta_path}: its weights cannot be restored ({one_line(e)})",
                    hint="give the .meta file written with these weights",
                ) from e
        return tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), outputs
        )

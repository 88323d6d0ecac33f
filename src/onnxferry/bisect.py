"""Bisection: the first intermediate tensor where two ONNX models (or one model on two
providers) part ways.

    divergence = bisect(reference, candidate, feeds)          # None if nothing shared diverges
    divergence.tensor, divergence.node, divergence.op_type

Every node output of the reference's main graph that the candidate also produces (same name)
is exposed as an extra graph output of a copy of each model; both run once and the shared
tensors are judged in the reference's topological order with the same tolerance as outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import FerryError, one_line
from .graphs import exposing
from .model import Model
from .parity import Divergence, Tolerance, judge_output
from .runtime import OrtRunner, SessionConfig


def bisect(
    reference: Model,
    candidate: Model,
    feeds: Mapping[str, np.ndarray],
    tolerance: Tolerance = Tolerance(),
    *,
    reference_config: SessionConfig | None = None,
    candidate_config: SessionConfig | None = None,
) -> Divergence | None:
    """The first tensor both models compute (same name) that fails the tolerance, in the
    reference's topological order; None if no shared tensor diverges.

        bisect(model, model, feeds, reference_config=SessionConfig("cpu"),
               candidate_config=SessionConfig("cuda"))       # one model, two providers
    """
    return bisect_samples(
        reference, candidate, [feeds], tolerance, reference_config, candidate_config
    )


def shared_tensors(reference: Model, candidate: Model) -> list[tuple[int, str, str, str]]:
    """(position, node name, op_type, tensor) for every node output of the reference's main
    graph that a node of the candidate's main graph also produces, in topological order."""
    produced = {out for node in candidate.proto.graph.node for out in node.output if out}
    return [
        (position, node.name, node.op_type, out)
        for position, node in enumerate(reference.proto.graph.node)
        for out in node.output
        if out and out in produced
    ]


def bisect_samples(
    reference: Model,
    candidate: Model,
    samples: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance,
    reference_config: SessionConfig | None,
    candidate_config: SessionConfig | None,
) -> Divergence | None:
    shared = shared_tensors(reference, candidate)
    if not shared:
        return None
    names = [tensor for *_, tensor in shared]
    with contextlib.ExitStack() as stack:
        ref_probe = stack.enter_context(exposing(reference, names))
        cand_probe = stack.enter_context(exposing(candidate, names))
        ref_runner = OrtRunner(ref_probe, config=reference_config)
        cand_runner = OrtRunner(cand_probe, config=candidate_config)
        first: Divergence | None = None
        for feeds in samples:
            ref_values = _run_tensors(ref_runner, feeds)
            cand_values = _run_tensors(cand_runner, feeds)
            for position, node, op_type, tensor in shared:
                if first is not None and position >= first.position:
                    break
                if tensor not in ref_values or tensor not in cand_values:
                    continue
                atol, rtol = tolerance.for_output(tensor)
                result = judge_output(
                    tensor, [ref_values[tensor]], [cand_values[tensor]], atol, rtol
                )
                if not result.passed:
                    first = Divergence(
                        tensor,
                        node,
                        op_type,
                        position,
                        result.max_abs,
                        result.max_rel,
                        result.required_atol,
                        result.problem,
                    )
                    break
        return first


def _run_tensors(runner: OrtRunner, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in runner.session.get_outputs() if str(o.type).startswith("tensor(")]
    try:
        return runner.run(feeds, output_names=names)
    except FerryError:
        raise
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise FerryError(
            f"onnxruntime cannot run {runner.name} with its intermediate tensors exposed: "
            f"{one_line(e, line='first')}",
            hint="compare the outputs only (bisect_on_failure=False, or --no-bisect)",
        ) from e

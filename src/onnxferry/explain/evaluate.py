"""The model as a function of one input, evaluated in batches through one ONNX Runtime session.

    evaluator = Evaluator(session, model.signature, "x", layout, {}, rows=1, batch_size=1024)
    f = evaluator.function(0, Target("probs", 2, "probs[2]"))
    f(np.zeros((5000, 4), np.float32))           # 5000 scores from 5 session.run
    evaluator.evaluations, evaluator.runs          # 5000, 5

An explainer's perturbations arrive as one array of rows; the evaluator splits them into
chunks of ``batch_size`` rows (the fixed batch size for a batch-1 export, padded; one row a
run for a model without a batch axis), optionally builds each chunk's model inputs from
feature rows (``transform``: masks to images), feeds the other inputs held at the explained
sample's values, and keeps the target's value. Every chunk is charged to a ``Budget``
(``max_evals`` rows, a ``deadline`` in seconds) before it runs: past either, ``BudgetExceeded``.
A ``progress`` callback hears of each chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import FeedError, InputError, RunError, UsageError
from ..graphs import sequence_outputs, sized_by_data
from ..runtime import (
    map_keys,
    map_order,
    map_table,
    quiet_run_options,
    run_errors,
    run_session,
)
from ..signature import Signature
from .kinds import Layout

if TYPE_CHECKING:
    import onnx

Transform = Callable[[np.ndarray], np.ndarray]
Decode = Callable[[np.ndarray], np.ndarray | Mapping[str, np.ndarray]]
DEFAULT_CHUNK_BYTES = 1024**2
"""Input bytes per run by default: past a few hundred images a batch gets slower per image on
CPU (activations leave the cache), while small rows batch by the thousand."""
MAX_BATCH = 8192


class Session(Protocol):
    """What the evaluator calls on a session: ONNX Runtime's ``InferenceSession.run``, or
    anything that answers it the same way (a server's batching executor)."""

    def run(self, output_names: list[str], input_feed: dict[str, Any], run_options: Any) -> Any:
        """One array per name in ``output_names``, for the feeds given."""


class BudgetExceeded(InputError):
    """An explanation would take more model evaluations than ``max_evals``, or ran past its
    ``deadline``."""


@dataclass(frozen=True)
class Budget:
    """What an explanation may cost: rows evaluated, and seconds from its start."""

    max_evals: int | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.max_evals is not None and self.max_evals < 1:
            raise UsageError(f"max_evals must be at least 1, got {self.max_evals}")
        if self.deadline is not None and self.deadline <= 0:
            raise UsageError(f"deadline must be a positive number of seconds, got {self.deadline}")


@dataclass(frozen=True)
class Target:
    """The value explained: ``index`` into one sample's flattened ``output``."""

    output: str
    index: int
    label: str


@dataclass(frozen=True)
class Progress:
    """Where an explanation stands: rows evaluated of about ``planned``, on input
    ``input_index`` of ``inputs``."""

    evaluations: int
    planned: int
    input_index: int
    inputs: int


class Evaluator:
    """Rows of the explained input -> model outputs, in batches, charged to a budget."""

    def __init__(
        self,
        session: Session,
        signature: Signature,
        input_name: str,
        layout: Layout,
        others: Mapping[str, np.ndarray],
        rows: int,
        *,
        batch_size: int | None = None,
        budget: Budget | None = None,
        progress: Callable[[Progress], None] | None = None,
        model_name: str = "model",
        decode: Decode | None = None,
    ) -> None:
        self.session = session
        self.decode = decode
        """Rows as the methods see them -> the model's input (a text's word ids -> strings),
        or every input (a table's row of numbers -> its columns)."""
        self.input_name = input_name
        self.layout = layout
        self.signature = signature
        self.dtype = signature.input(input_name).dtype.numpy
        self.rows = rows
        self.budget = budget or Budget()
        self.progress = progress
        self.model_name = model_name
        self.batch_size = batch_size or default_batch_size(layout, self.dtype)
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        self._axes = {k: _sample_axis(signature, k, v, layout) for k, v in others.items()}
        self._others = {k: _per_sample(k, v, self._axes[k], rows) for k, v in others.items()}
        self._options = quiet_run_options()
        self.started = time.monotonic()
        self.evaluations = 0
        self.runs = 0
        self.map_columns: dict[str, list[Any]] = {}
        """Per output that is a sequence of maps (scikit-learn's ZipMap): its keys, one per
        column of the table the evaluator makes of it."""
        self._row_widths: dict[tuple[str, int], int] = {}
        self.planned = 0
        self.input_index = 0
        self.independent = True
        """Whether rows run together give what each gives alone (``probe_rows``)."""

    @property
    def chunk(self) -> int:
        """Rows per ``session.run``."""
        if not self.layout.batch_axis or not self.independent:
            return 1
        return self.layout.fixed_batch or self.batch_size

    def probe_rows(self, sample: np.ndarray, output: str) -> str | None:
        """Run ``sample`` alone and after another row (its own values rolled by one); when the
        two differ, or ONNX Runtime refuses the two rows at once, the model's rows are not
        independent and every evaluation runs alone from now on (a note says so). Two runs,
        for a model with an open batch axis.

        Such a model runs its rows as the steps of one stream, as faster-whisper's Silero VAD
        does with an LSTM state ``h: [1, 1, 128]`` given for the whole call: batched, each
        perturbation of a row would start from what the ones before it left. A GRU given
        ``h0: [4, 1, 64]`` refuses two rows outright (its state holds one), and an output that
        folds its rows into another axis (torch's ``view(-1)``: ``[batch*chars]``) cannot be
        split by row."""
        if not self.layout.batch_axis or self.layout.fixed_batch:
            return None
        runs = self.runs
        alone = self._run(sample[None], 0, output)[0]
        refused: str | None = None
        try:
            after = self._after_another_row(sample, output)
        except (RunError, UsageError) as e:
            refused = e.message
        if self.progress is not None:  # it hears of every run
            for _ in range(self.runs - runs):
                self.progress(Progress(self.evaluations, self.planned, self.input_index, self.rows))
        if refused is not None:
            self.independent = False
            return f"rows do not run together ({refused}), so every evaluation runs alone"
        scale = max(1.0, float(np.abs(alone).max(initial=0.0)))
        if np.allclose(after, alone, rtol=1e-3, atol=1e-5 * scale):
            return None
        self.independent = False
        return (
            f"rows are not independent: input 0 gives {output} {alone.ravel()[0]:.4g} alone "
            f"and {after.ravel()[0]:.4g} after another row (the model carries something from "
            "row to row, as a stream's state), so every evaluation runs alone"
        )

    def _after_another_row(self, sample: np.ndarray, output: str) -> np.ndarray:
        """``sample``'s values run as the second of two rows, after its own values rolled by
        one; where the model refuses those (a rolled value out of the table it indexes, as in
        AttaCut's ``[batch, 2, chars]`` of character and syllable ids), after itself."""
        try:
            values = self._run(np.stack([np.roll(sample, 1), sample]), 0, output)
        except RunError:
            values = self._run(np.stack([sample, sample]), 0, output)
        second: np.ndarray = values[1]
        return second

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def function(
        self, sample: int, target: Target, transform: Transform | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``f(rows) -> scores``: the target's value (float64) for each row, the other inputs
        held at ``sample``'s values; ``transform`` builds model inputs from each chunk."""

        def f(rows: np.ndarray) -> np.ndarray:
            scores = self.outputs(rows, sample, target.output, transform)[:, target.index]
            if not np.isfinite(scores).all():
                raise NotFinite(
                    target.label, scores, f"rows the explainer made from input {sample}"
                )
            return scores

        return f

    def scorer(self, sample: int, target: Target) -> Callable[..., np.ndarray]:
        """``score(rows, transform)``: ``function`` with the transform given per call."""

        def score(rows: np.ndarray, transform: Transform | None) -> np.ndarray:
            return self.function(sample, target, transform)(rows)

        return score

    def share(self, left: int) -> int | None:
        """The evaluations one of the ``left`` inputs still to explain may take: an even share
        of what the budget has left (None: no limit)."""
        if self.budget.max_evals is None:
            return None
        return max(0, self.budget.max_evals - self.evaluations) // max(left, 1)

    def planner(self, left: int) -> Callable[[int], None]:
        """What a method calls with the evaluations it plans for one input, so that
        ``progress`` reports hear of the total for the ``left`` inputs still to explain."""

        def plan(evaluations: int) -> None:
            self.planned = self.evaluations + evaluations * left

        return plan

    def outputs(
        self,
        rows: np.ndarray,
        sample: int,
        output: str,
        transform: Transform | None = None,
    ) -> np.ndarray:
        """One flattened ``output`` per row, ``(len(rows), values)`` float64."""
        rows = np.asarray(rows)
        results = []
        for start in range(0, len(rows), self.chunk):
            part = rows[start : start + self.chunk]
            self.charge(len(part))
            inputs = part if transform is None else transform(part)
            results.append(self._run(np.asarray(inputs), sample, output))
            self.count(len(part))
        if not results:
            return np.zeros((0, self._width(output)))
        return np.concatenate(results)

    def count(self, rows: int) -> None:
        """Record ``rows`` evaluations done (after ``charge``), and tell ``progress``."""
        self.evaluations += rows
        if self.progress is not None:
            self.progress(Progress(self.evaluations, self.planned, self.input_index, self.rows))

    def _width(self, output: str) -> int:
        """Values per row of ``output`` as the signature gives them (1 when unknown)."""
        for spec in self.signature.outputs:
            if spec.name == output and spec.shape is not None:
                given = spec.shape[1:] if self.layout.batch_axis else spec.shape
                dims = [d for d in given if isinstance(d, int)]
                if len(dims) == len(given):
                    return int(np.prod(dims, dtype=np.int64))
        return 1

    def charge(self, rows: int) -> None:
        """Raise BudgetExceeded when ``rows`` more evaluations would pass the budget."""
        budget = self.budget
        if budget.max_evals is not None and self.evaluations + rows > budget.max_evals:
            raise BudgetExceeded(
                f"the explanation needs more than max_evals={budget.max_evals} model "
                f"evaluations ({self.evaluations} done)",
                hint="raise --max-evals, or ask for fewer samples (--samples) or inputs",
            )
        if budget.deadline is not None and self.elapsed() > budget.deadline:
            raise BudgetExceeded(
                f"the explanation ran past its deadline of {budget.deadline:g} s after "
                f"{self.evaluations} model evaluations",
                hint="raise --deadline, or ask for fewer samples (--samples) or inputs",
            )

    def feeds(self, inputs: np.ndarray, sample: int) -> dict[str, np.ndarray]:
        """The model's feeds for rows of the explained input (one row without a batch axis;
        padded with the last row to a fixed batch), the others at ``sample``'s values."""
        decoded = self.decode(inputs) if self.decode is not None else inputs
        if isinstance(decoded, Mapping):  # a table's columns, every input (``table``)
            return dict(decoded)
        batch = np.ascontiguousarray(decoded, dtype=self.dtype)
        if not self.layout.batch_axis:
            return {self.input_name: batch[0], **self.fixed_inputs(sample, None)}
        rows = len(batch)
        size = self.layout.fixed_batch or rows
        if rows < size:  # a fixed batch: pad with the last row, dropped by _run
            batch = np.concatenate([batch, np.repeat(batch[-1:], size - rows, axis=0)])
        if self.layout.row_axis:  # the model takes them along another axis
            batch = np.moveaxis(batch, 0, self.layout.row_axis)
        return {self.input_name: batch, **self.fixed_inputs(sample, size)}

    def _run(self, inputs: np.ndarray, sample: int, output: str) -> np.ndarray:
        rows = len(inputs)
        feeds = self.feeds(inputs, sample)
        batch = feeds[self.input_name]
        if self.layout.row_axis:
            batch = np.moveaxis(batch, self.layout.row_axis, 0)
        with run_errors(self.model_name, feeds):
            (result,) = run_session(self.session, [output], feeds, self._options)
        self.runs += 1
        value = self._numbers(result, output)
        if self.layout.row_axis and value.ndim:  # rows first, as the input's were given
            value = np.moveaxis(value, self.signature.output_row_axis(output, value.shape), 0)
        # one row run alone may come back without its batch axis; a row padded to a fixed
        # batch comes back with the padding's rows
        if not self.layout.batch_axis or (len(batch) == 1 and value.shape[:1] != (1,)):
            return self._same_width(value.reshape(1, -1), output, sample)
        if value.shape[:1] != (len(batch),):
            raise UsageError(
                f"output {output!r} has shape {list(value.shape)} for {len(batch)} rows: it "
                "does not keep the batch axis, so rows cannot be told apart",
                hint="explain with --batch-size 1, or another output (--target OUTPUT)",
            )
        return self._same_width(value.reshape(len(batch), -1)[:rows], output, sample)

    def _same_width(self, values: np.ndarray, output: str, sample: int) -> np.ndarray:
        """``values`` when each row holds as many as ``sample``'s first run did; a size that
        follows the input (a detector's boxes after NMS) is a UsageError: no value can be
        followed from one perturbed input to the next."""
        width = self._row_widths.setdefault((output, sample), values.shape[1])
        if values.shape[1] != width:
            raise UsageError(
                f"output {output!r} gives {width} values for one input and {values.shape[1]} "
                "for another: its size follows the input (as a detector's boxes after "
                "non-max suppression do), so no value of it can be followed across inputs",
                hint="explain an output of fixed size (--target OUTPUT), or the model "
                "exported before its non-max suppression",
            )
        return values

    def _numbers(self, result: Any, output: str) -> np.ndarray:
        """One run's ``output`` as float64; a sequence of maps as its table of values."""
        if isinstance(result, np.ndarray) and result.dtype != object:
            return result.astype(np.float64, copy=False)
        maps = np.empty(len(result), dtype=object)
        maps[:] = list(result)
        keys = map_keys(maps)
        if keys is None:
            raise UsageError(
                f"output {output!r} is a sequence, not of maps to numbers: nothing to explain",
                hint="explain another output (--target OUTPUT)",
            )
        self.map_columns[output] = map_order(keys)
        return map_table(maps)

    def fixed_inputs(self, sample: int, rows: int | None) -> dict[str, np.ndarray]:
        """The other inputs at ``sample``'s values, ``rows`` times (None: as one sample)."""
        fixed = {}
        for name, values in self._others.items():
            axis = self._axes[name]
            if axis is None:
                fixed[name] = values
                continue
            one = values[sample] if len(values) > 1 else values[0]
            fixed[name] = (
                one if rows is None else np.moveaxis(np.repeat(one[None], rows, axis=0), 0, axis)
            )
        return fixed


def resolve_targets(
    evaluator: Evaluator,
    samples: np.ndarray,
    signature: Signature,
    target: int | str | None,
    unfit: Mapping[str, str] | None = None,
) -> tuple[list[Target], np.ndarray]:
    """The value to explain for each sample, and its value at the sample.

    ``target``: None (the first float output, else the first numeric one; its argmax for a
    vector of class scores), a class index into that output, an output's name, or
    ``OUTPUT:INDEX``. UsageError when it names no output or is out of range, or an output in
    ``unfit`` (``unfit_targets``: why each such output has no value to follow from one
    perturbed input to the next), which the default passes over.
    """
    output, index = _parse_target(signature, target, unfit or {})
    targets, scores = [], []
    for i in range(len(samples)):
        values = evaluator.outputs(samples[i : i + 1], i, output)[0]
        if index is not None and not 0 <= index < len(values):
            raise UsageError(
                f"target {index} is out of range: output {output!r} has {len(values)} "
                "value(s) per input",
                hint=f"give a class index from 0 to {len(values) - 1}",
            )
        chosen = index if index is not None else int(np.argmax(values)) if len(values) > 1 else 0
        keys = evaluator.map_columns.get(output)
        label = f"{output}[{keys[chosen] if keys else chosen}]" if len(values) > 1 else output
        targets.append(Target(output, chosen, label))
        scores.append(float(values[chosen]))
    broken = [i for i, score in enumerate(scores) if not np.isfinite(score)]
    if broken:
        which = ", ".join(str(i) for i in broken[:5]) + (", ..." if len(broken) > 5 else "")
        raise InputError(
            f"{targets[broken[0]].label} is {scores[broken[0]]} on input {which}: a value "
            "that is not a number has no explanation",
            hint="give inputs the model computes finite values on, or explain another output "
            "with --target",
        )
    return targets, np.asarray(scores)


class NotFinite(InputError):
    """The explained value is NaN or infinite on some of an explainer's perturbations (a log
    of a feature set to a negative background value): an explanation built on them would be
    NaN, or an explainer's fit would fail on them.

    >>> print(NotFinite("y[0]", np.array([1.0, np.nan, -np.inf]), "rows made from input 0"))
    y[0] is nan on 2 of 3 rows made from input 0 (-inf among them): no explanation can be ...
    """

    def __init__(self, label: str, scores: np.ndarray, rows: str) -> None:
        bad = scores[~np.isfinite(scores)]
        others = sorted({str(v) for v in bad} - {str(bad[0])})
        among = f" ({', '.join(others)} among them)" if others else ""
        super().__init__(
            f"{label} is {bad[0]} on {len(bad)} of {len(scores)} {rows}{among}: no "
            "explanation can be built on values that are not finite numbers",
            hint="give background rows (--background) the model computes finite values on, "
            "or explain another output (--target)",
        )


def unfit_targets(model: onnx.ModelProto) -> dict[str, str]:
    """The outputs no explanation can follow, each with what it is: those sized by the data
    (``graphs.sized_by_data``: a detector's boxes after non-max suppression) and sequences of
    tensors (one tensor per split, not a value per row)."""
    unfit = dict.fromkeys(sized_by_data(model), SIZED_BY_DATA)
    for name in sequence_outputs(model):
        unfit.setdefault(name, "a sequence of tensors, not a value per input")
    return unfit


SIZED_BY_DATA = (
    "sized by the data (non-max suppression, a mask): what it holds for one input has no "
    "counterpart in the next"
)


def _parse_target(
    signature: Signature, target: int | str | None, unfit: Mapping[str, str]
) -> tuple[str, int | None]:
    outputs = signature.output_names
    kinds = {s.name: s.dtype.kind for s in signature.outputs}
    # Scores before labels: a classifier's first output is often its int64 label.
    numeric = [n for n in outputs if kinds[n] == "float"]
    numeric += [n for n in outputs if kinds[n] in ("int", "bool")]
    if not numeric:
        raise UsageError("the model has no numeric output to explain")
    if target is None or isinstance(target, int) or target.lstrip("-").isdigit():
        first = next((n for n in numeric if n not in unfit), None)
        if first is None:
            groups: dict[str, list[str]] = {}
            for n in numeric:
                groups.setdefault(unfit[n], []).append(repr(n))
            why = "; ".join(
                f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {what}"
                for what, names in groups.items()
            )
            raise UsageError(
                f"no output of the model can be explained: {why}",
                hint="explain the model as exported before the step that sizes its outputs "
                "(its non-max suppression)",
            )
        return first, None if target is None else int(target)
    if target in outputs:
        name, index = target, None
    else:
        name, _, position = target.rpartition(":")
        if name not in outputs or not position.lstrip("-").isdigit():
            raise UsageError(
                f"target {target!r} is neither a class index nor an output of the model",
                hint=f"give a class index, an output ({', '.join(outputs)}) or OUTPUT:INDEX",
            )
        index = int(position)
    if name not in numeric:
        raise UsageError(f"output {name!r} holds no numbers to explain", hint="pick another")
    if name in unfit:
        raise UsageError(
            f"output {name!r} is {unfit[name]}, so it cannot be explained",
            hint="explain another output (--target OUTPUT)",
        )
    return name, index


def default_batch_size(layout: Layout, dtype: np.dtype[Any]) -> int:
    """Rows per run that keep one chunk's input near 1 MiB, between 1 and 8192."""
    sample_bytes = max(1, int(np.prod(layout.sample_shape, dtype=np.int64)) * dtype.itemsize)
    return int(min(MAX_BATCH, max(1, DEFAULT_CHUNK_BYTES // sample_bytes)))


def _sample_axis(signature: Signature, name: str, array: np.ndarray, layout: Layout) -> int | None:
    """Which axis of another input holds one value per sample (``Signature.row_axes``), or
    None when it is one value for all: a scalar such as a sample rate, an input whose shape is
    fixed where rows would be (an LSTM's ``h: [1, 1, 128]``), or any input of a model without
    a batch axis."""
    if not layout.batch_axis or np.ndim(array) == 0:
        return None
    return signature.row_axes().get(name)


def _per_sample(name: str, array: np.ndarray, axis: int | None, rows: int) -> np.ndarray:
    """Another input as one value per explained sample (or one for all): ``(1 or rows, ...)``
    with the sample axis first; the whole array when ``axis`` is None."""
    if axis is None:
        return np.asarray(array)
    if array.shape[axis] not in (1, rows):
        raise FeedError(
            f"input {name!r} has shape {list(np.shape(array))}: its axis {axis} must be 1 or "
            f"the {rows} rows explained",
            hint="give the other inputs one row per explained input",
        )
    return np.moveaxis(np.asarray(array), axis, 0)

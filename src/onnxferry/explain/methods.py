"""One function per attribution method, each calling its library's explainer on one sample.

    attribution = METHODS["kernelshap"](task)     # a Task: the sample, the batched model, ...
    attribution.values, attribution.base         # shaped like the sample; E[f] for SHAP

- ``kernelshap``: ``shap.KernelExplainer`` (``l1_reg=False``; its samples written a run at
  a time: ``vectorized``), on the raw features with the background for tabular rows, on
  superpixels / signal blocks / token positions (kept or set to the baseline) otherwise. Its
  attributions add up to f(x) - E[f(background)] (SHAP's efficiency).
- ``permutation``: ``shap.PermutationExplainer`` with an ``Independent`` masker, the same way.
- ``lime``: ``lime_tabular.LimeTabularExplainer`` (regression on the target's value, the
  background as training data, continuous features: a weight is the slope per standard
  deviation, where quartile bins would hide a feature near its mean);
  ``lime_image.LimeImageExplainer`` over the same superpixels (its perturbed images made
  a batch at a time: ``vectorized``); ``lime_base.LimeBase`` the same way over a signal's
  blocks; or
  ``lime_text.LimeTextExplainer`` over token positions (``bow=False``).
- ``occlusion``: a window slid over the image or along every axis of a signal (tabular
  features and tokens one at a time) set to the baseline; an element's attribution is the mean
  drop of the score over the windows that cover it.
- ``integrated-gradients``: ``captum.attr.IntegratedGradients`` (Gauss-Legendre steps from the
  baseline) on the model as a torch module (``gradients``: ONNX Runtime computes no gradient;
  token ids along their embeddings, each token's values summed); its attributions add up to
  f(x) - f(baseline) (completeness), and a note gives how closely. Where the graph has no
  faithful torch translation, ``MethodUnavailable`` says which operator or output.

Every library call runs inside ``quiet``: its warnings, log lines and prints become notes. The
number of perturbations is sized to the budget (``Task.evals``) before the library runs; a
budget too small for one explanation raises ``BudgetExceeded`` up front.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from ..runtime import blas_on_one_thread
from .evaluate import BudgetExceeded, Transform
from .kinds import Layout
from .masking import Groups, from_hwc, spatial_labels, to_hwc
from .vectorized import kernel_explainer, lime_image_explainer

Score = Callable[[np.ndarray, Transform | None], np.ndarray]


class MethodUnavailable(InputError):
    """The method cannot run on this model here (no gradient for integrated gradients)."""


@dataclass(frozen=True)
class Task:
    """One sample to explain and the model as a function of it."""

    sample: np.ndarray
    layout: Layout
    score: Score
    """``score(rows, transform)``: the target's value per row, evaluated in batches."""
    baseline: np.ndarray
    background: np.ndarray | None
    """Rows shaped like ``sample`` (tabular: SHAP's background, LIME's training data)."""
    groups: Groups | None
    """Superpixels or token positions (None for tabular rows)."""
    evals: int | None
    """The most model evaluations this sample may take."""
    samples: int | None
    """The method's sample count (None: its default)."""
    batch_size: int
    seed: int
    window: int | None
    plan: Callable[[int], None] = lambda evaluations: None
    gradient: Callable[[Any], Any] | None = None
    """Integrated gradients: torch rows -> the target's value per row, differentiable."""
    embed: Callable[[np.ndarray], Any] | None = None
    """Integrated gradients on token ids: ids -> their embeddings, the rows ``gradient``
    takes."""
    categorical: tuple[int, ...] = ()
    """Tabular: the features that are category codes (a table's string columns)."""

    def masked(self) -> Callable[[np.ndarray], np.ndarray]:
        """The score of 0/1 masks over ``groups`` (hidden groups take the baseline)."""
        groups = self.groups
        assert groups is not None

        def compose(masks: np.ndarray) -> np.ndarray:
            return groups.compose(self.sample, self.baseline, masks)

        return lambda masks: self.score(masks, compose)

    def flat(self) -> Callable[[np.ndarray], np.ndarray]:
        """The score of tabular rows given flat (features as columns)."""
        shape = self.sample.shape
        return lambda rows: self.score(np.asarray(rows).reshape(len(rows), *shape), None)


@dataclass
class Attribution:
    """One sample's attributions (shaped like it) and the method's base value."""

    values: np.ndarray
    base: float
    notes: list[str] = field(default_factory=list)


def kernelshap(task: Task) -> Attribution:
    KernelExplainer = kernel_explainer()

    f, background, x, count = _shap_space(task)
    rows = len(background)
    nsamples = task.samples or 2 * count + 2048
    if count <= 30:
        nsamples = min(nsamples, 2**count - 2) if count > 1 else 1
    least = min(nsamples, count + 1)
    nsamples = _fit("kernelshap", task, nsamples, least, per=rows, extra=rows + 1)
    task.plan(rows + 1 + nsamples * rows)
    notes: list[str] = []
    # shap formats arrays into its debug lines whether or not they are logged: kept short
    with quiet(notes), _seeded(task.seed), np.printoptions(threshold=1, edgeitems=1):
        explainer = KernelExplainer(f, background)
        phi = explainer.shap_values(x[None], nsamples=nsamples, l1_reg=False, silent=True)
    values = np.asarray(phi, np.float64).reshape(-1)[:count]
    return Attribution(_back(task, values), float(np.ravel(explainer.expected_value)[0]), notes)


def permutation(task: Task) -> Attribution:
    shap = _library("shap")

    f, background, x, count = _shap_space(task)
    rows = len(background)
    least = 2 * count + 1
    wanted = task.samples or 10 * least
    masks = _fit("permutation", task, wanted, least, per=rows, extra=0)
    masks = max(least, masks // least * least)
    task.plan(masks * rows)
    notes: list[str] = []
    with quiet(notes), _seeded(task.seed):
        masker = shap.maskers.Independent(background, max_samples=rows)
        explainer = shap.PermutationExplainer(f, masker, seed=task.seed)
        result = explainer(x[None], max_evals=masks, silent=True, batch_size=masks)
    values = np.asarray(result.values, np.float64).reshape(-1)[:count]
    return Attribution(_back(task, values), float(np.ravel(result.base_values)[0]), notes)


def lime(task: Task) -> Attribution:
    if task.layout.kind == "image":
        return _lime_image(task)
    if task.layout.kind in ("tokens", "text"):
        return _lime_tokens(task)
    if task.layout.kind in ("signal", "volume"):
        return _lime_groups(task)
    LimeTabularExplainer = _library("lime.lime_tabular").LimeTabularExplainer

    x = task.sample.reshape(-1).astype(np.float64)
    background = _tabular_background(task, "lime").reshape(-1, x.size).astype(np.float64)
    samples = _fit("lime", task, task.samples or 5000, 10, per=1, extra=0)
    task.plan(samples)
    notes: list[str] = []
    with quiet(notes):
        explainer = LimeTabularExplainer(
            background,
            mode="regression",
            discretize_continuous=False,
            feature_selection="none",
            categorical_features=list(task.categorical),
            random_state=task.seed,
        )
        explanation = explainer.explain_instance(
            x, task.flat(), num_features=x.size, num_samples=samples
        )
    values = np.zeros(x.size)
    for feature, weight in explanation.local_exp[1]:
        values[feature] = weight
    return Attribution(values.reshape(task.sample.shape), float(explanation.intercept[1]), notes)


def occlusion(task: Task) -> Attribution:
    layout = task.layout
    if layout.kind == "image":
        height, width = layout.image_size
        window = min(task.window or max(1, round(min(height, width) / 8)), height, width)
        spatial = (0, 1) if layout.channels_last else (1, 2)
        return _occlude_windows(task, spatial, window)
    if layout.kind == "signal":
        longest = max(task.sample.shape)
        window = task.window or max(1, round(longest / 16))
        return _occlude_windows(task, tuple(range(task.sample.ndim)), window)
    if layout.kind == "volume":  # a cube a quarter of the shortest side: 7 places along it
        sides = [task.sample.shape[a] for a in layout.spatial_axes]
        window = min(task.window or max(1, round(min(sides) / 4)), *sides)
        return _occlude_windows(task, layout.spatial_axes, window)
    if layout.kind == "tokens" and task.window:  # spans of neighbouring tokens, as n-grams
        return _occlude_windows(task, (0,), task.window)
    return _occlude_features(task)


def _occlude_windows(task: Task, axes: tuple[int, ...], window: int) -> Attribution:
    """A window of ``window`` along each of ``axes`` (the whole axis where it is shorter),
    slid by half its side; the sample's other axes (an image's channels) are hidden whole.
    An element's attribution is the mean drop over the windows that cover it, shared
    evenly over those other axes."""
    shape = task.sample.shape
    sizes = tuple(shape[a] for a in axes)
    sides = tuple(min(window, n) for n in sizes)
    strides = tuple(max(1, side // 2) for side in sides)
    starts = [_starts(*axis) for axis in zip(sizes, sides, strides, strict=True)]
    corners = np.array(list(itertools.product(*starts)), dtype=np.int64)
    _fit("occlusion", task, len(corners) + 2, len(corners) + 2, per=1, extra=0, exact=True)
    task.plan(len(corners) + 2)
    base_score, full = task.score(np.stack([task.sample, task.baseline]), None)
    positions = np.indices(sizes)
    whole = [1 if a in axes else n for a, n in enumerate(shape)]
    spread = [n if a in axes else 1 for a, n in enumerate(shape)]

    def occlude(chosen: np.ndarray) -> np.ndarray:
        hidden = np.ones((len(chosen), *sizes), dtype=bool)
        for k, side in enumerate(sides):
            start = chosen[:, k].reshape(-1, *([1] * len(sizes)))
            hidden &= (positions[k] >= start) & (positions[k] < start + side)
        hidden = hidden.reshape(len(chosen), *spread)
        return np.where(hidden, task.baseline, task.sample)

    drops = base_score - task.score(corners, occlude)
    total = np.zeros(sizes)
    covered = np.zeros(sizes)
    for corner, drop in zip(corners, drops, strict=True):
        window_slice = tuple(slice(c, c + side) for c, side in zip(corner, sides, strict=True))
        total[window_slice] += drop
        covered[window_slice] += 1
    values = (total / np.maximum(covered, 1) / math.prod(whole)).reshape(spread)
    moved = sorted({s for s, n in zip(strides, sizes, strict=True) if n > 1} or {1})
    stride = "x".join(map(str, strides)) if len(moved) > 1 else str(moved[0])
    note = (
        f"occlusion: a {'x'.join(map(str, sides))} window, stride {stride}, "
        f"{len(corners)} positions"
    )
    return Attribution(np.broadcast_to(values, shape).copy(), float(full), [note])


IG_STEPS = 50
"""Integrated gradients' steps by default (Captum's own default)."""
IG_GAP = 0.05
"""A gap in completeness past this share of f(x) - f(baseline) is noted."""


def integrated_gradients(task: Task) -> Attribution:
    if task.gradient is None:
        raise MethodUnavailable(
            "integrated-gradients needs the model as a differentiable function, and this "
            "task carries none",
            hint="call onnxferry.explain(), which builds it from the model",
        )
    attr = _library("captum.attr")
    torch = _library("torch")
    steps = _fit("integrated-gradients", task, task.samples or IG_STEPS, 2, per=1, extra=2)
    task.plan(steps + 2)
    if task.embed is not None:  # token ids: along their embeddings
        x, start = task.embed(task.sample[None]), task.embed(task.baseline[None])
    else:
        x = torch.from_numpy(np.array(task.sample[None], copy=True))
        start = torch.from_numpy(np.array(task.baseline[None], copy=True))
    with torch.no_grad():
        ends = task.gradient(torch.cat([x, start])).numpy()
    notes: list[str] = []
    with quiet(notes, one_blas_thread=False):  # torch's own threads do the work here
        explainer = attr.IntegratedGradients(task.gradient)
        try:
            found = explainer.attribute(
                x, baselines=start, n_steps=steps, internal_batch_size=task.batch_size
            )
        except RuntimeError as e:  # autograd on an operation it cannot differentiate
            raise MethodUnavailable(
                "integrated-gradients: torch could not take the gradient: "
                + one_line(e, 200, line="first"),
                hint="use occlusion, kernelshap, permutation or lime",
            ) from e
    values = found[0].detach().numpy().astype(np.float64)
    if task.embed is not None:  # one value per token: its embedding's, summed
        values = values.reshape(*task.sample.shape, -1).sum(axis=-1)
    notes.append(
        f"integrated gradients: {steps} steps (Gauss-Legendre) from the baseline; the "
        "attributions add up to f(x) - f(baseline), within each row's additivity_gap"
    )
    change = float(ends[0] - ends[1])
    gap = abs(change - float(values.sum()))
    if gap > IG_GAP * max(abs(change), 1e-12):
        notes.append(
            f"integrated gradients: an input's attributions miss f(x) - f(baseline) = "
            f"{change:.3g} by {gap:.2g}; more steps (samples) follow the path more closely"
        )
    return Attribution(values, float(ends[1]), notes)


METHODS: dict[str, Callable[[Task], Attribution]] = {
    "kernelshap": kernelshap,
    "permutation": permutation,
    "lime": lime,
    "occlusion": occlusion,
    "integrated-gradients": integrated_gradients,
}
"""Every method by name, in the order the CLI lists them."""


LIBRARIES: dict[str, tuple[str, ...]] = {
    "integrated-gradients": ("torch", "captum"),
    "kernelshap": ("shap",),
    "permutation": ("shap",),
    "lime": ("lime", "sklearn"),
}
"""The libraries each method calls (images also need scikit-image, for superpixels)."""

EXTRAS = {"integrated-gradients": "gradients"}
"""The extra that installs a method's libraries, where it is not ``explain``."""


def require(method: str, kind: str) -> None:
    """InputError naming the missing library when ``method`` cannot run here
    (MethodUnavailable for integrated-gradients on ids or texts)."""
    import importlib.util

    if method == "integrated-gradients" and kind == "text":
        raise MethodUnavailable(
            "integrated-gradients follows the gradient along a float input or token ids' "
            "embeddings, and texts are strings: no gradient reaches them",
            hint="use occlusion, kernelshap, permutation or lime",
        )
    needed = list(LIBRARIES.get(method, ()))
    if kind == "image" and method not in ("occlusion", "integrated-gradients"):
        needed.append("skimage")
    for name in needed:
        if importlib.util.find_spec(name) is None:
            raise InputError(
                f"{method} needs {name}, which is not installed",
                hint=f"pip install 'onnxferry[{EXTRAS.get(method, 'explain')}]'",
            )


# --- the methods' parts ----------------------------------------------------------------------


def _shap_space(
    task: Task,
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray, int]:
    """(f, background, x, features) for a SHAP explainer: raw features for tabular rows,
    0/1 masks over groups otherwise (background: all hidden; x: all kept)."""
    if task.groups is None:
        x = task.sample.reshape(-1).astype(np.float64)
        background = _tabular_background(task, "SHAP").reshape(-1, x.size).astype(np.float64)
        return task.flat(), background, x, x.size
    count = task.groups.count
    return task.masked(), np.zeros((1, count)), np.ones(count), count


def _back(task: Task, values: np.ndarray) -> np.ndarray:
    """Per-feature values as per-element attributions shaped like the sample."""
    if task.groups is None:
        return values.reshape(task.sample.shape)
    return task.groups.spread(values)


def _tabular_background(task: Task, who: str) -> np.ndarray:
    if task.background is None or len(task.background) == 0:
        raise InputError(
            f"{who} needs background rows for a tabular input",
            hint="give --background B.npz (rows like the inputs), or several inputs",
        )
    return task.background


def _fit(
    method: str,
    task: Task,
    wanted: int,
    least: int,
    *,
    per: int,
    extra: int,
    exact: bool = False,
) -> int:
    """How many perturbations (each ``per`` evaluations, plus ``extra``) fit in the budget:
    ``wanted`` if they fit, fewer down to ``least``; BudgetExceeded below that."""
    if task.evals is None:
        return wanted
    fits = (task.evals - extra) // max(per, 1)
    if fits >= wanted:
        return wanted
    if fits < least or exact:
        need = least * per + extra
        raise BudgetExceeded(
            f"{method} needs at least {need} model evaluations for one input, and the budget "
            f"leaves {task.evals}",
            hint="raise --max-evals, give fewer background rows or inputs, or use occlusion "
            "with a larger --window",
        )
    return fits


def _lime_image(task: Task) -> Attribution:
    LimeImageExplainer = lime_image_explainer()

    groups = task.groups
    assert groups is not None
    layout = task.layout
    segments = spatial_labels(groups, layout)
    samples = _fit("lime", task, task.samples or 1000, 10, per=1, extra=0)
    task.plan(samples)

    def classify(images: np.ndarray) -> np.ndarray:
        return task.score(from_hwc(np.asarray(images), layout), None)[:, None]

    notes: list[str] = []
    with quiet(notes):
        # In the model's element type, not float64: the same pixels, half the bytes.
        explanation = LimeImageExplainer(random_state=task.seed).explain_instance(
            to_hwc(task.sample, layout),
            classify,
            labels=(0,),
            top_labels=None,
            hide_color=to_hwc(task.baseline, layout),
            num_features=groups.count,
            num_samples=samples,
            batch_size=task.batch_size,
            segmentation_fn=lambda image: segments,
            random_seed=task.seed,
        )
    weights = np.zeros(groups.count)
    for segment, weight in explanation.local_exp[0]:
        weights[segment] = weight
    return Attribution(groups.spread(weights), float(explanation.intercept[0]), notes)


def _lime_groups(task: Task) -> Attribution:
    """LIME over ``task.groups`` (a signal's blocks) as ``lime_image`` does over superpixels:
    random 0/1 masks, weighted by cosine distance to the whole sample, ridge regression."""
    LimeBase = _library("lime.lime_base").LimeBase
    from sklearn.metrics import pairwise_distances

    groups = task.groups
    assert groups is not None
    samples = _fit("lime", task, task.samples or 1000, 10, per=1, extra=0)
    task.plan(samples)
    masks = np.random.default_rng(task.seed).integers(0, 2, (samples, groups.count))
    masks[0] = 1
    scores = task.masked()(masks)[:, None]
    distances = pairwise_distances(masks, masks[:1], metric="cosine").ravel()
    notes: list[str] = []
    with quiet(notes):
        explainer = LimeBase(lambda d: np.sqrt(np.exp(-(d**2) / 0.25**2)), random_state=task.seed)
        intercept, weights, _, _ = explainer.explain_instance_with_data(
            masks, scores, distances, 0, groups.count, feature_selection="none"
        )
    values = np.zeros(groups.count)
    for group, weight in weights:
        values[group] = weight
    return Attribution(groups.spread(values), float(intercept), notes)


def _lime_tokens(task: Task) -> Attribution:
    LimeTextExplainer = _library("lime.lime_text").LimeTextExplainer

    ids = task.sample
    mask = "MASKED"
    samples = _fit("lime", task, task.samples or 2000, 10, per=1, extra=0)
    task.plan(samples)

    def parse(texts: list[str]) -> np.ndarray:
        words = np.array([text.split(" ") for text in texts])
        hidden = words == mask
        values = np.where(hidden, "0", words).astype(np.int64)
        return np.where(hidden, task.baseline, values).astype(ids.dtype)

    def classify(texts: list[str]) -> np.ndarray:
        return task.score(parse(list(texts)), None)[:, None]

    notes: list[str] = []
    with quiet(notes):
        explainer = LimeTextExplainer(
            bow=False, split_expression=r"\s+", mask_string=mask, random_state=task.seed
        )
        explanation = explainer.explain_instance(
            " ".join(str(int(t)) for t in ids),
            classify,
            labels=(0,),
            num_features=ids.size,
            num_samples=samples,
        )
    values = np.zeros(ids.size)
    for position, weight in explanation.local_exp[0]:
        values[position] = weight
    return Attribution(values, float(explanation.intercept[0]), notes)


def _occlude_features(task: Task) -> Attribution:
    count = task.sample.size
    _fit("occlusion", task, count + 2, count + 2, per=1, extra=0, exact=True)
    task.plan(count + 2)
    base_score, full = task.score(np.stack([task.sample, task.baseline]), None)
    flat, hidden = task.sample.reshape(-1), task.baseline.reshape(-1)

    def occlude(features: np.ndarray) -> np.ndarray:
        rows = np.repeat(flat[None], len(features), axis=0)
        rows[np.arange(len(features)), features] = hidden[features]
        return rows.reshape(len(features), *task.sample.shape)

    drops = base_score - task.score(np.arange(count), occlude)
    notes = []
    if task.window:
        notes.append(
            f"occlusion: {task.layout.kind} input, one feature at a time (a window is for "
            "images, signals and tokens: --kind signal hides neighbouring elements together)"
        )
    return Attribution(drops.reshape(task.sample.shape), float(full), notes)


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts every ``stride`` that cover ``size`` to its last element."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


_PROGRESS = re.compile(r"\d+%\|")
_FOR_DEVELOPERS = (DeprecationWarning, PendingDeprecationWarning)
"""Warnings addressed to a library's developers, not to the user: left out of the notes."""


def _library(name: str) -> Any:
    """Import an explainer's library; what its import warns of (its own dependencies'
    deprecations) is not the user's concern."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


_ONE_AT_A_TIME = threading.RLock()
"""``quiet`` swaps process-wide state (sys.stdout and sys.stderr, the warning filters, numpy's
global generator that shap draws from): one library call holds it at a time."""


@contextlib.contextmanager
def quiet(notes: list[str], *, one_blas_thread: bool = True) -> Iterator[None]:
    """Run a library call with its warnings, log records (shap, lime) and prints collected as
    ``notes`` instead of reaching the terminal, and (``one_blas_thread``) its BLAS calls on
    one thread, beside ONNX Runtime's (``blas_on_one_thread``). Calls from several threads (a
    server's) take turns: what they swap is global."""
    with _ONE_AT_A_TIME, blas_on_one_thread() if one_blas_thread else contextlib.nullcontext():
        yield from _quiet(notes)


def _quiet(notes: list[str]) -> Iterator[None]:
    out = io.StringIO()
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("shap", "lime")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        if lg.getEffectiveLevel() < logging.WARNING:  # setLevel clears every logger's cache
            lg.setLevel(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            warnings.simplefilter("always")
            yield
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate
            if lg.level != level:
                lg.setLevel(level)
    said = [str(w.message) for w in caught if not issubclass(w.category, _FOR_DEVELOPERS)]
    said += handler.lines
    said += [ln for ln in out.getvalue().replace("\r", "\n").splitlines() if ln.strip()]
    for line in said:
        line = one_line(line, 200)
        if line and not _PROGRESS.search(line) and line not in notes:
            notes.append(line)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded (shap draws from it), then put back as it was."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)

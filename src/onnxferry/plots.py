"""Plots for the HTML reports, as inline SVG: labels that never overprint, plain tick numbers.

    points = [Point("slim", 0.41, 0.99991, True), Point("int8_dynamic", 0.40, 0.99990, True)]
    svg = candidates_svg(points, metric="cosine", limit=0.99, higher_is_better=True)
    svg = lines_svg({"mlp": [(1, 0.2), (8, 0.9)]}, "batch size", "p50 latency (ms)", "latency")
    svg = bars_svg([("mlp batch=1", 0.2)], "p50 latency (ms)", "latency per configuration")
    fig = candidates_figure(points, metric="cosine", limit=0.99, higher_is_better=True)
    overlapping_labels(fig), offset_texts(fig)     # [] and [] (what the tests check)

Tick labels are plain numbers with as many digits as tell them apart, never matplotlib's
offset notation (``1e-5+9.999e-1``), and fewer ticks where long labels would touch. The
candidates plot marks each point with its number and lists the numbers with their recipes
beside the axes; a number goes next to its point, or further out on a thin leader line where
the nearer places are taken. Text stays glyph paths in the SVG, so it looks the same in any
browser. matplotlib comes with the ``optimize`` extra; without it a plot is a one-line note
saying so.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.text import Text

MISSING = "<p class='note'>plots need matplotlib: pip install 'onnxferry[optimize]'</p>"


EXACT = 1e-12
"""A distance from perfect below this is float rounding, drawn as 0."""


@dataclass(frozen=True)
class Point:
    """One candidate in the candidates plot: its p50 latency and its budget metric; ``number``
    marks it (default: its place in the list, from 1)."""

    label: str
    latency_ms: float
    metric: float
    within: bool
    number: int | None = None


def candidates_svg(
    points: Sequence[Point],
    *,
    metric: str,
    limit: float | None = None,
    higher_is_better: bool = False,
    baseline_ms: float | None = None,
) -> str:
    """The candidates plot as SVG, or the note when matplotlib is missing."""
    if not have_matplotlib():
        return MISSING
    return to_svg(
        candidates_figure(
            points,
            metric=metric,
            limit=limit,
            higher_is_better=higher_is_better,
            baseline_ms=baseline_ms,
        )
    )


def candidates_figure(
    points: Sequence[Point],
    *,
    metric: str,
    limit: float | None = None,
    higher_is_better: bool = False,
    baseline_ms: float | None = None,
) -> Figure:
    """Latency against the distance from the original's outputs, one numbered point per
    candidate: ``1 - metric`` for metrics where 1 is perfect (cosine, top-1), else the
    metric itself, so lower is better on both axes and near-identical values stay readable."""
    fig, ax = _subplots(6, 3.6)
    cost = [_distance(p.metric, higher_is_better) for p in points]
    ylabel = f"1 - {metric}" if higher_is_better else metric
    for within, colour, marker in ((True, "tab:green", "o"), (False, "tab:red", "x")):
        chosen = [
            (p.latency_ms, c) for p, c in zip(points, cost, strict=True) if p.within == within
        ]
        if chosen:
            ax.scatter(
                [x for x, _ in chosen],
                [y for _, y in chosen],
                c=colour,
                marker=marker,
                label="within budget" if within else "outside budget",
                zorder=3,
            )
    limit_cost = None if limit is None else _distance(limit, higher_is_better)
    if limit_cost is not None:
        ax.axhline(limit_cost, color="0.4", ls="--", lw=0.8, label="budget")
    if baseline_ms is not None:
        ax.axvline(baseline_ms, color="0.4", ls=":", lw=0.8, label="original p50")
    ax.set(xlabel="p50 latency (ms)", ylabel=f"{ylabel} (lower is better)", title="candidates")
    ax.margins(x=0.15, y=0.15)
    _symlog_if_spread(ax, [*cost, *([] if limit_cost is None else [limit_cost])])
    _plain_ticks(ax.xaxis, ax.yaxis)
    from matplotlib.lines import Line2D

    numbers = [p.number or i for i, p in enumerate(points, 1)]
    handles, labels = ax.get_legend_handles_labels()
    for number, p in zip(numbers, points, strict=True):
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(f"{number}  {p.label}")
    ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        fontsize=7,
        handlelength=1.2,
        frameon=False,
    )
    spots = [(p.latency_ms, c) for p, c in zip(points, cost, strict=True)]
    _fit_ticks(fig, ax.xaxis, ax.yaxis)
    _place_numbers(fig, ax, spots, numbers)
    return fig


def _distance(metric: float, higher_is_better: bool) -> float:
    """How far a metric is from perfect; float rounding (1 - cosine of identical outputs is
    about 1e-16) counts as exact."""
    distance = 1.0 - metric if higher_is_better else metric
    return 0.0 if abs(distance) < EXACT else distance


def lines_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    xlabel: str,
    ylabel: str,
    title: str,
) -> str:
    """One line with markers per named series of (x, y) points, ticked at the x values given
    (on a log2 axis when they span 8x or more, like batch sizes), y from 0; the legend beside
    the axes."""
    if not have_matplotlib():
        return MISSING
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = _subplots(6, 3.5)
    for name, xy in series.items():
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    xs = sorted({x for xy in series.values() for x, _ in xy})
    if xs and xs[0] > 0 and xs[-1] >= 8 * xs[0]:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)
    _plain_ticks(ax.xaxis, ax.yaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    _fit_ticks(fig, ax.yaxis)
    return to_svg(fig)


def bars_svg(bars: Sequence[tuple[str, float]], xlabel: str, title: str) -> str:
    """Horizontal bars, one per labelled value, top to bottom in the order given."""
    if not have_matplotlib():
        return MISSING
    fig, ax = _subplots(6, 1.2 + 0.3 * len(bars))
    ax.barh(range(len(bars)), [v for _, v in bars], color="tab:blue")
    ax.set_yticks(range(len(bars)), [name for name, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    _plain_ticks(ax.xaxis)
    _fit_ticks(fig, ax.xaxis)
    return to_svg(fig)


# --- checks (the tests run them on every plot) -------------------------------------------


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes on the canvas intersect (an arrow is not its text)."""
    from matplotlib.text import Text

    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def offset_texts(fig: Figure) -> list[str]:
    """The offset or scale notes on any axis ("1e-5+9.999e-1"); plain axes have none."""
    fig.canvas.draw()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            text = axis.get_offset_text().get_text()
            if text:
                found.append(text)
    return found


def drawn_texts(fig: Figure) -> list[Text]:
    """Every text artist the canvas draws (ticks outside the view are not), in draw order."""
    from matplotlib.backends.backend_agg import RendererAgg

    drawn: dict[int, Text] = {}

    class Recorder(RendererAgg):
        def draw_text(
            self,
            gc: Any,
            x: float,
            y: float,
            s: str,
            prop: Any,
            angle: float,
            ismath: Any = False,
            mtext: Text | None = None,
        ) -> None:
            if mtext is not None and s.strip():  # recorded, not rasterized: only where matters
                drawn.setdefault(id(mtext), mtext)

    width, height = fig.canvas.get_width_height(physical=True)
    fig.draw(Recorder(width, height, fig.dpi))  # type: ignore[no-untyped-call]
    return list(drawn.values())


# --- shared pieces -----------------------------------------------------------------------


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def to_svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _subplots(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure on its own Agg canvas: no pyplot, so no global figure list and no backend
    switched for the caller."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _plain_ticks(*axes: Axis) -> None:
    """Tick labels as plain numbers, with as many digits as keep them apart and no offset or
    scale note (``1e-5+9.999e-1``)."""
    from matplotlib.ticker import Formatter, NullFormatter

    class Plain(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return "0" if x == 0 else f"{x:.3g}"  # one value alone (a cursor readout)

        def format_ticks(self, values: Any) -> list[str]:
            labels = _plain_labels(list(values))
            return [labels.get(float(v), self(v)) for v in values]

    for axis in axes:
        axis.set_major_formatter(Plain())
        axis.set_minor_formatter(NullFormatter())


def _fit_ticks(fig: Figure, *axes: Axis) -> None:
    """Fewer ticks on a linear axis whose labels would touch (plain numbers of near-identical
    values are long): 7 at most, then down to 2 until the labels, as the renderer measures
    them, stand apart."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        if axis.get_scale() != "linear":
            continue
        for bins in (7, 5, 4, 3, 2):
            locator = MaxNLocator(nbins=bins)
            axis.set_major_locator(locator)
            if _labels_fit(fig, axis, locator.tick_values(*sorted(axis.get_view_interval()))):
                break


def _labels_fit(fig: Figure, axis: Axis, ticks: Sequence[float], gap: float = 4.0) -> bool:
    """Whether the labels of ``ticks`` in view leave ``gap`` pixels between neighbours."""
    from matplotlib.axis import XAxis

    low, high = sorted(axis.get_view_interval())
    ticks = [float(v) for v in ticks if low <= v <= high]
    labels = axis.get_major_formatter().format_ticks(ticks)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    prop = axis.get_major_ticks(1)[0].label1.get_fontproperties()
    across = isinstance(axis, XAxis)
    spans = []
    for value, text in zip(ticks, labels, strict=True):
        width, height, _ = renderer.get_text_width_height_descent(text, prop, ismath=False)
        point = axis.axes.transData.transform((value, 0.0) if across else (0.0, value))
        centre, extent = (point[0], width) if across else (point[1], height)
        spans.append((centre - extent / 2, centre + extent / 2))
    spans.sort()
    return all(a[1] + gap <= b[0] for a, b in itertools.pairwise(spans))


def _plain_labels(locs: Sequence[float]) -> dict[float, str]:
    """The shortest labels that tell ``locs`` apart: fixed decimals where the numbers are
    between 0.001 and a million, else 3 significant digits (log axes, where ticks are
    decades); 0 is "0"."""
    finite = sorted({float(v) for v in locs if math.isfinite(v)})
    biggest = max((abs(v) for v in finite), default=0.0)
    steps = [b - a for a, b in itertools.pairwise(finite)]
    if not finite or biggest >= 1e6 or biggest < 1e-3 or (steps and max(steps) > 5 * min(steps)):
        return {v: "0" if v == 0 else f"{v:.3g}" for v in finite}
    step = min(steps, default=biggest) or 1.0
    for decimals in range(16):
        labels = {v: "0" if v == 0 else f"{v:.{decimals}f}" for v in finite}
        if len(set(labels.values())) == len(finite) and all(
            abs(float(text) - v) <= step * 1e-3 for v, text in labels.items()
        ):
            return labels
    return {v: f"{v:.6g}" for v in finite}


def _symlog_if_spread(ax: Axes, values: Sequence[float]) -> None:
    """A symmetric-log y axis when the non-negative values span decades (exact candidates at
    0, rounding noise near 1e-7, int8 near 1e-3): linear up to the smallest non-zero value's
    decade, then at most 7 decades ticked."""
    from matplotlib.ticker import FixedLocator, NullLocator

    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive or min(values) < 0:
        return
    low, high = min(positive), max(positive)
    if high / low < 100 and not any(v == 0 for v in values):
        return
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ax.set_yscale("symlog", linthresh=10.0**lo, linscale=1.0)
    stride = max(1, math.ceil((hi - lo + 1) / 7))
    ax.yaxis.set_major_locator(FixedLocator([0.0, *(10.0**k for k in range(lo, hi + 1, stride))]))
    ax.yaxis.set_minor_locator(NullLocator())
    # Room below 0 for the exact ones and above the top decade for the numbers; no ticks there.
    ax.set_ylim(-0.5 * 10.0**lo, 10.0 ** (hi + 0.5))


def _rings(step: float = 7.0, rings: int = 10, per_ring: int = 12) -> Iterator[tuple[float, float]]:
    """Offsets (points) around a spot: right of it first, then rings further out."""
    yield (4.0, 4.0)
    for ring in range(1, rings + 1):
        radius = step * ring + 4
        count = per_ring * ring
        for k in range(count):
            angle = 2 * math.pi * k / count + math.pi / 4
            yield (radius * math.cos(angle), radius * math.sin(angle))


def _place_numbers(
    fig: Figure, ax: Axes, spots: Sequence[tuple[float, float]], numbers: Sequence[int]
) -> None:
    """Each spot's number inside the axes, clear of the numbers already placed and
    of the axes' own texts: the first free offset of ``_rings``, on a leader line when away."""
    from matplotlib.text import Text

    texts = drawn_texts(fig)  # lays the figure out, too
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    inside = ax.get_window_extent(renderer).shrunk(0.98, 0.98)
    taken = [Text.get_window_extent(t, renderer) for t in texts]
    for number, (x, y) in zip(numbers, spots, strict=True):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        for dx, dy in _rings():
            near = (dx, dy) == (4.0, 4.0)
            label = ax.annotate(
                str(number),
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if near else "center",
                va="bottom" if near else "center",
                fontsize=7,
                arrowprops=None
                if near
                else {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 2},
            )
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)
            if _contains(inside, box) and not any(box.overlaps(t) for t in taken):
                taken.append(box.padded(3))  # a gap, so numbers side by side stay apart
                break
            label.remove()


def _contains(outer: Any, inner: Any) -> bool:
    return bool(
        outer.x0 <= inner.x0
        and inner.x1 <= outer.x1
        and outer.y0 <= inner.y0
        and inner.y1 <= outer.y1
    )

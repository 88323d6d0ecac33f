"""The report plots keep their labels apart and their tick numbers plain, checked through
matplotlib's own renderer (the browser checks the same plots in tests/test_reports_browser.py)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("matplotlib")

from onnxferry.plots import (
    Point,
    candidates_figure,
    drawn_texts,
    offset_texts,
    overlapping_labels,
)

RECIPES = [
    "ort_graph(level='basic')",
    "ort_graph",
    "slim",
    "int8_dynamic",
    "int8_dynamic(per_channel=True)",
    "slim -> int8_dynamic(per_channel=True)",
    "int8_static",
    "int8_static(per_channel=True)",
    "slim -> int8_static(per_channel=True)",
    "smooth -> int8_dynamic(per_channel=True)",
    "smooth -> int8_static(per_channel=True)",
]


def near_identical() -> list[Point]:
    """The case that overprinted: eleven candidates within a microsecond and 1e-7 of each
    other (a tiny model, where every recipe lands on the same spot)."""
    return [
        Point(label, 0.0123 + i * 1e-7, 0.99999 + (i % 3) * 1e-7, i % 4 != 3)
        for i, label in enumerate(RECIPES)
    ]


def measured() -> list[Point]:
    """Figures like a real search's on a small MLP: graph passes exact up to float rounding
    (1 - cosine = 1e-16), int8 a few 1e-7 to 1e-5 away."""
    metrics = [1 - 1e-16, 1.0, 1 - 2e-16, 1 - 4e-7, 1 - 3e-7, 1 - 3.5e-7, 1 - 6e-6]
    metrics += [1 - 7e-6, 1 - 7e-6, 1 - 3e-7, 1 - 8e-6]
    latencies = [0.0115, 0.0117, 0.0129, 0.0084, 0.0078, 0.0082, 0.0079, 0.0080, 0.0088]
    latencies += [0.0076, 0.0083]
    return [
        Point(label, ms, metric, True)
        for label, ms, metric in zip(RECIPES, latencies, metrics, strict=True)
    ]


def dense() -> list[Point]:
    """Twelve candidates 1e-7 ms apart: plain tick numbers need 7 decimals there."""
    return [
        Point(f"recipe {i} -> int8_static(per_channel=True)", 0.0123 + i * 1e-7, 0.99999, True)
        for i in range(12)
    ]


def texts_of(fig: Any) -> list[str]:
    return [t.get_text() for t in drawn_texts(fig)]


@pytest.mark.parametrize(
    ("points", "baseline_ms"),
    [(near_identical(), 0.0125), (measured(), 0.0125), (dense(), None)],
    ids=["near", "measured", "dense"],
)
def test_candidates_plot_numbers_every_point_without_overprinting(
    points: list[Point], baseline_ms: float | None
) -> None:
    fig = candidates_figure(
        points, metric="cosine", limit=0.99, higher_is_better=True, baseline_ms=baseline_ms
    )
    assert overlapping_labels(fig) == []
    assert offset_texts(fig) == []
    texts = texts_of(fig)
    for number, point in enumerate(points, 1):
        assert str(number) in texts  # its number near its point
        assert f"{number}  {point.label}" in texts  # and in the key beside the axes
    ax = fig.axes[0]
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        shown = [t.get_text() for t in ticks if t.get_text()]
        assert len(shown) == len(set(shown)), shown  # near-identical ticks still differ
        assert all("e-16" not in t for t in shown)  # rounding noise is drawn at 0


def test_the_checks_catch_the_plot_that_overprinted() -> None:
    """The old plot (a label at every point, matplotlib's default ticks) fails both checks."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    points = near_identical()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([p.latency_ms for p in points], [p.metric for p in points])
    for p in points:
        ax.annotate(p.label, (p.latency_ms, p.metric), fontsize=6)
    try:
        assert overlapping_labels(fig)
        assert offset_texts(fig)  # e.g. "+9.9999e-1"
    finally:
        plt.close(fig)


def test_candidates_plot_of_a_lower_is_better_metric_keeps_its_values() -> None:
    points = [Point("a", 1.0, 1e-4, True), Point("b", 1.0, 2e-3, False, number=7)]
    fig = candidates_figure(points, metric="max_abs", limit=1e-3)
    texts = texts_of(fig)
    assert "7" in texts and "7  b" in texts and "1  a" in texts
    assert any("max_abs" in t for t in texts)
    assert overlapping_labels(fig) == [] and offset_texts(fig) == []

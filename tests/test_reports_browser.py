"""Every HTML report, made by its real verb on a tiny model, in headless Chromium: no console or
page errors, no request leaving the page, no broken image, no overlapping plot labels, and a
screenshot written (under tmp_path, for a person to look at when a test fails)."""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from onnxferry.report import Report
from tests.browser import PageCheck, check_report, launched
from tests.helpers import Run, mlp, onnx_text, save

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (skips it when Chromium or Playwright is missing)."""
    with launched() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small models: an MLP and a slightly different one."""
    root = tmp_path_factory.mktemp("models")
    return save(mlp(), root / "a.onnx"), save(mlp(noise=1e-3), root / "b.onnx")


def checked(browser: Browser, page: Path, tmp_path: Path) -> PageCheck:
    check = check_report(browser, page, tmp_path / f"{page.stem}.png")
    assert check.ok, "\n".join(check.problems)
    assert check.title.startswith("onnxferry")
    return check


def test_deploy_report(browser: Browser, models: tuple[Path, Path], tmp_path: Path) -> None:
    from onnxferry.deploy import deploy

    out = tmp_path / "out"
    report = deploy(models[0], out, batches=(1, 4), duration=0.2)
    assert report.ok, report.to_text()
    check = checked(browser, out / "report.html", tmp_path)
    # the bench's latency vs batch, the search's candidates and its per-layer int8 decisions
    assert check.plots == 3
    page = (out / "report.html").read_text()
    assert "latency vs batch" in page and "candidates" in page


def test_the_readme_commands_write_pages_without_a_fault(
    browser: Browser, tmp_path: Path, ferry: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sh block under "## Reports, energy and cost" as written: bench, optimize, compare."""
    monkeypatch.chdir(tmp_path)
    save(mlp(), Path("a.onnx"))
    save(mlp(noise=1e-3), Path("b.onnx"))
    save(mlp(), Path("model.onnx"))
    commands = readme_commands()
    assert [c[0] for c in commands] == ["bench", "optimize", "compare"]
    pages = {}
    for command in commands:
        code, _, err = ferry(*command)
        assert code in (0, 1), err  # compare of two different models may fail its tolerance
        page = Path(command[command.index("--report") + 1])
        pages[command[0]] = checked(browser, page, tmp_path)
    assert pages["bench"].plots == 1
    assert pages["optimize"].plots == 2  # candidates and per-layer int8 decisions
    assert pages["optimize"].labels > 20  # ticks, titles, a number and a key line per candidate

    bench = html.unescape(Path("bench.html").read_text())
    assert "latency vs batch" in bench  # batch 1,8: a line per model
    assert "USD/M inferences" in bench and "cost: at 3.06 USD per hour" in bench
    assert "energy: unavailable (" in bench or "energy: RAPL package" in bench
    optimize = Path("optimize.html").read_text()
    assert "1. ort_graph" in optimize and "<svg" in optimize  # numbered as in the plot
    assert "<h2>compare: " in Path("compare.html").read_text()


def test_bench_report_of_one_batch_size(
    browser: Browser, models: tuple[Path, Path], tmp_path: Path, ferry: Run
) -> None:
    page = tmp_path / "bench-bars.htm"
    code, _, err = ferry("bench", *models, "--iterations", "20", "--report", page)
    assert code == 0, err
    assert checked(browser, page, tmp_path).plots == 1  # one bar per configuration
    assert "<p class='note'>cost: unavailable (give --price-per-hour)</p>" in page.read_text()


def readme_commands() -> list[list[str]]:
    """The `ferry` commands of the sh block under "## Reports, energy and cost"."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Reports, energy and cost", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the section has no sh block"
    return [shlex.split(line)[1:] for line in block.group(1).splitlines() if line.strip()]


IMAGE = """
<ir_version: 10, opset_import: ["" : 21]>
image (float[N, 1, 16, 16] x) => (float[N] score) {
    axes = Constant <value = int64[3] {1, 2, 3}> ()
    score = ReduceMean <keepdims = 0> (x, axes)
}
"""
VOLUME = """
<ir_version: 10, opset_import: ["" : 21]>
volume (float[N, 1, 4, 8, 8] x) => (float[N] score) {
    axes = Constant <value = int64[4] {1, 2, 3, 4}> ()
    score = ReduceMean <keepdims = 0> (x, axes)
}
"""
TOKENS = """
<ir_version: 10, opset_import: ["" : 21]>
tokens (int64[batch, 6] ids) => (float[batch] score) {
    table = Constant <value = float[10, 1] {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 5, 0.8, 0.9}> ()
    embedded = Gather (table, ids)
    axes = Constant <value = int64[2] {1, 2}> ()
    score = ReduceSum <keepdims = 0> (embedded, axes)
}
"""


@pytest.mark.parametrize("kind", ["tabular", "image", "tokens", "volume"])
def test_explain_report(browser: Browser, tmp_path: Path, kind: str) -> None:
    """The page `ferry explain` writes, for each kind of input it draws differently."""
    pytest.importorskip("matplotlib")
    import numpy as np

    from onnxferry.explain import explain, write_explanation
    from onnxferry.model import Model

    rng = np.random.default_rng(0)
    inputs: np.ndarray
    if kind == "tabular":
        model, inputs = mlp(), rng.normal(size=(3, 4)).astype(np.float32)
    elif kind == "image":
        model, inputs = onnx_text(IMAGE), rng.uniform(size=(1, 1, 16, 16)).astype(np.float32)
    elif kind == "volume":
        model, inputs = onnx_text(VOLUME), rng.uniform(size=(1, 1, 4, 8, 8)).astype(np.float32)
    else:
        model, inputs = onnx_text(TOKENS), rng.integers(1, 10, size=(2, 6), dtype=np.int64)
    explanation = explain(Model.from_proto(model), inputs, "occlusion")
    files = write_explanation(explanation, tmp_path / "explain")
    checked(browser, files["report"], tmp_path)
    if kind != "tokens":
        assert "data:image/png;base64," in files["report"].read_text()  # pictures inline


def test_plots_of_near_identical_figures_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    """The plots that overprinted, drawn from numbers that differ in the 7th digit."""
    pytest.importorskip("matplotlib")
    from onnxferry.cli.render import Listing
    from onnxferry.plots import Point, bars_svg, candidates_svg, lines_svg

    points = [
        Point(f"recipe {i} -> int8_static(per_channel=True)", 0.0123 + i * 1e-7, 0.99999, True)
        for i in range(12)
    ]
    figures = [
        candidates_svg(points, metric="cosine", limit=0.99, higher_is_better=True),
        lines_svg({"a": [(1, 0.0123), (8, 0.01231), (64, 0.012305)]}, "batch", "ms", "t"),
        bars_svg(
            [(f"model{i} cpu threads=auto batch=1", 0.0123 + i * 1e-7) for i in range(9)],
            "p50 latency (ms)",
            "latency per configuration",
        ),
    ]
    page = Report("plots", Listing([])).save_html(tmp_path / "plots.html", figures=figures)
    check = checked(browser, page, tmp_path)
    assert check.plots == 3 and check.labels > 40


def test_the_check_finds_what_a_report_must_not_have(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><head><title>onnxferry bad</title></head><body>"
        "<svg width='200' height='60'><text x='10' y='30'>p50 latency</text>"
        "<text x='20' y='32'>overprinted</text></svg>"
        "<img src='https://example.com/logo.png'>"
        "<script>console.error('boom'); undefined_function();</script>"
        "</body></html>"
    )
    check = check_report(browser, page, tmp_path / "bad.png")
    assert check.overlapping_labels == [("p50 latency", "overprinted")]
    assert check.outside_requests == ["https://example.com/logo.png"]
    # the blocked image's load error may be logged before or after the page's own
    assert any("boom" in e for e in check.console_errors), check.console_errors
    assert check.page_errors and "undefined_function" in check.page_errors[0]
    assert check.broken_images and not check.ok
    assert (tmp_path / "bad.png").stat().st_size > 0

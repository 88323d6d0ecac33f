"""`ferry graph` and `ferry view`: drawings read back from the SVG Graphviz made, and Netron
served on loopback by a real `ferry view` process."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.compare import compare
from onnxferry.view import draw, marked_figure
from onnxferry.view.labels import ADDED, CHANGED, MARK
from tests.helpers import FOLDABLE, Run, conv_bn_mlp, mlp, onnx_text, save, scaled

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")

SVG = "{http://www.w3.org/2000/svg}"

NESTED_IF = """
<ir_version: 10, opset_import: ["" : 21]>
branchy (float[N, 4] x, bool c) => (float[N, 4] y) {
    k = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
    y = If (c) <
        then_branch = g1 () => (float[N, 4] t) {
            t = If (c) <
                then_branch = g3 () => (float[N, 4] u) { u = Add (x, k) },
                else_branch = g4 () => (float[N, 4] v) { v = Sub (x, k) }
            >
        },
        else_branch = g2 () => (float[N, 4] e) { n = Neg (x) e = Mul (n, k) }
    >
}
"""


# --- reading an SVG back ---------------------------------------------------------------------


def _groups(svg: str, kind: str) -> list[tuple[list[str], set[str], set[str]]]:
    """(texts, fills, strokes) of every node, edge or cluster group of the SVG; the legend
    is left out."""
    found = []
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") != kind or group.findtext(f"{SVG}title") == "legend":
            continue
        texts = [t.text or "" for t in group.iter(f"{SVG}text")]
        shapes = [e for e in group.iter() if e.tag in {f"{SVG}{s}" for s in _SHAPES}]
        fills = {e.get("fill", "") for e in shapes}
        strokes = {e.get("stroke", "") for e in shapes}
        found.append((texts, fills, strokes))
    return found


_SHAPES = ("path", "polygon", "ellipse")


def _svg_in(page: str) -> str:
    """The (first) inline SVG of an HTML page."""
    return page[page.index("<svg") : page.index("</svg>") + len("</svg>")]


def _legend(svg: str) -> list[str]:
    """The lines of the legend."""
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.findtext(f"{SVG}title") == "legend":
            return [t.text or "" for t in group.iter(f"{SVG}text")]
    return []


def _names(svg: str, *, fill: str | None = None, stroke: str | None = None) -> set[str]:
    """The second line (the ONNX node name) of each operator whose shape has that colour."""
    return {
        texts[1]
        for texts, fills, strokes in _groups(svg, "node")
        if len(texts) > 1
        and (fill is None or fill in fills)
        and (stroke is None or stroke in strokes)
    }


# --- ferry graph -----------------------------------------------------------------------------


@needs_dot
def test_graph_svg_shows_operators_shapes_and_folded_weights(ferry: Run, tmp_path: Path) -> None:
    model = save(conv_bn_mlp(), tmp_path / "m.onnx")
    code, out, err = ferry("graph", model, "-o", tmp_path / "g.svg")
    assert (code, err) == (0, ""), err
    assert out.strip() == f"graph: {tmp_path / 'g.svg'} (7 of 7 nodes)"
    svg = (tmp_path / "g.svg").read_text()
    nodes = _groups(svg, "node")
    labels = [texts for texts, _, _ in nodes]
    assert ["Conv", "conv", "W ⟨4x3x3x3⟩ float32", "B ⟨4⟩ float32"] in labels
    assert ["MatMul", "fc", "B ⟨256x5⟩ float32"] in labels
    assert ["x", "⟨Nx3x8x8⟩ float32"] in labels and ["y", "⟨Nx5⟩ float32"] in labels
    assert len(nodes) == 7 + 2  # operators, the input, the output: no node for a weight
    edges = [texts for texts, _, _ in _groups(svg, "edge")]
    assert ["c", "⟨Nx4x8x8⟩ float32"] in edges  # symbolic dims from shape inference
    assert ["f", "⟨Nx256⟩ float32"] in edges


@needs_dot
def test_constants_fold_into_their_consumers(tmp_path: Path) -> None:
    from onnxferry.view import inline_svg

    svg = inline_svg(draw(save(onnx_text(FOLDABLE), tmp_path / "f.onnx")))
    labels = [texts for texts, _, _ in _groups(svg, "node")]
    assert ["Mul", "A ⟨4⟩ float32", "B ⟨4⟩ float32"] in labels  # s = Mul(c1, c2)
    assert not any("Constant" in texts for texts in labels)


@needs_dot
def test_subgraphs_are_clusters_at_every_depth(tmp_path: Path) -> None:
    from onnxferry.view import inline_svg

    drawing = draw(save(onnx_text(NESTED_IF), tmp_path / "if.onnx"))
    svg = inline_svg(drawing)
    clusters = sorted(texts[0] for texts, _, _ in _groups(svg, "cluster"))
    assert clusters == ["If: else_branch"] * 2 + ["If: then_branch"] * 2
    source = drawing.source
    inner = source[source.index('subgraph "cluster_1/then_branch/0/else_branch"') :]
    assert "<B>Sub</B>" in inner[: inner.index("}")]  # the inner If's branch, in its cluster
    outer = source[source.index('subgraph "cluster_1/then_branch"') :]
    assert 'subgraph "cluster_1/then_branch/0/then_branch"' in outer  # nested in the outer one


@needs_dot
def test_diff_fills_exactly_the_nodes_that_changed(ferry: Run, tmp_path: Path) -> None:
    before = conv_bn_mlp()
    after = conv_bn_mlp()
    nodes = after.graph.node
    bn = next(n for n in nodes if n.name == "bn")
    next(n for n in nodes if n.name == "relu").input[0] = "c"  # bn folded away
    nodes.remove(bn)
    next(n for n in nodes if n.name == "relu2").op_type = "LeakyRelu"  # op type
    weights = after.graph.initializer
    cw = next(t for t in weights if t.name == "cw")
    cw.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(cw) * 2, "cw"))  # values
    fc = next(n for n in nodes if n.name == "fc")
    fc.output[0] = "mm0"
    nodes.insert(4, helper.make_node("Identity", ["mm0"], ["mm"], name="extra"))  # added
    for name in ("s", "bb", "m", "v"):
        weights.remove(next(t for t in weights if t.name == name))
    onnx.checker.check_model(after, full_check=True)
    a, b = save(after, tmp_path / "after.onnx"), save(before, tmp_path / "before.onnx")

    code, out, err = ferry("graph", a, "-o", tmp_path / "d.svg", "--diff", b)
    assert code == 0, err
    assert "1 added, 2 changed, 1 removed" in out
    svg = (tmp_path / "d.svg").read_text()
    assert _names(svg, fill=ADDED) == {"extra"}
    assert _names(svg, fill=CHANGED) == {"conv", "relu2"}
    assert _legend(svg) == [
        "added: 1",
        "changed: 2",
        "removed: 1 (BatchNormalization bn)",
        f"against {b}",
    ]
    texts = " ".join(t for texts, _, _ in _groups(svg, "node") for t in texts)
    assert "changed: op type Relu -> LeakyRelu" in texts
    assert "changed: weight cw: other values" in texts

    same = draw(b, diff=b)
    assert same.diff is not None and same.diff.summary() == "0 added, 0 changed, 0 removed"

    code, out, err = ferry("graph", a, "-o", tmp_path / "d.svg", "--diff", b, "--json")
    assert code == 0, err
    result = json.loads(out)["result"]
    assert result["output"] == str(tmp_path / "d.svg") and result["drawn"] == result["nodes"]
    assert len(result["diff"]["added"]) == 1 and len(result["diff"]["changed"]) == 2
    assert result["diff"]["removed"] == ["BatchNormalization bn"]


def test_diff_matches_unnamed_nodes_by_signature(tmp_path: Path) -> None:
    a = save(scaled(1.0, 2.0, 3.0, names=False), tmp_path / "a.onnx")
    b = save(scaled(1.0, 2.0, 4.0, names=False), tmp_path / "b.onnx")
    found = draw(b, diff=a).diff
    assert found is not None
    assert (found.added, dict(found.changed), found.removed) == (
        frozenset(),
        {"2": "weight k2: other values"},
        (),
    )


@needs_dot
def test_mark_draws_the_tensor_and_its_producer_in_red(ferry: Run, tmp_path: Path) -> None:
    model = save(conv_bn_mlp(), tmp_path / "m.onnx")
    code, out, err = ferry("graph", model, "-o", tmp_path / "g.svg", "--mark", "r")
    assert code == 0, err
    svg = (tmp_path / "g.svg").read_text()
    red_edges = [texts for texts, _, strokes in _groups(svg, "edge") if MARK in strokes]
    assert red_edges == [["r", "⟨Nx4x8x8⟩ float32"]]
    assert _names(svg, stroke=MARK) == {"relu"}
    assert _legend(svg) == ["marked: r"]


def test_unknown_tensor_is_one_line(ferry: Run, tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    code, out, err = ferry("graph", model, "-o", tmp_path / "g.svg", "--mark", "h3")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "tensor 'h3' is not in m" in err and "did you mean 'h2'" in err
    assert not (tmp_path / "g.svg").exists()


@needs_dot
def test_png_and_dot_by_suffix(ferry: Run, tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    assert ferry("graph", model, "-o", tmp_path / "g.png")[0] == 0
    png = (tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 300  # six operators, top to bottom
    assert ferry("graph", model, "-o", tmp_path / "g.dot")[0] == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph m {")
    code, _, err = ferry("graph", model, "-o", tmp_path / "g.jpg")
    assert code == 2 and "name the file .svg, .png, .dot, .gv" in err


def test_large_graphs_are_refused_or_drawn_around_the_mark(ferry: Run, tmp_path: Path) -> None:
    model = save(scaled(*[1.0] * 30), tmp_path / "chain.onnx")
    code, _, err = ferry("graph", model, "-o", tmp_path / "g.dot", "--max-nodes", "10")
    assert code == 2
    assert "chain has 30 nodes, more than the 10 drawn at once" in err and "ferry view" in err
    code, out, err = ferry(
        "graph", model, "-o", tmp_path / "g.dot", "--max-nodes", "10", "--mark", "t15"
    )
    assert code == 0, err
    assert "(8 of 30 nodes; marked t15)" in out  # mul12 .. mul19: 3 steps each way
    source = (tmp_path / "g.dot").read_text()
    assert source.count("<B>Mul</B>") == 8 and "…" in source  # the cut edge's stub
    assert "showing 8 of 30 nodes, within 3 steps of t15" in source
    drawing = draw(model, mark=["t15"], around=1)
    assert drawing.drawn == 4
    code, _, err = ferry("graph", model, "-o", tmp_path / "g.dot", "--around", "1")
    assert code == 2 and "add --mark TENSOR" in err


def test_a_missing_dot_is_one_line(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    code, _, err = ferry("graph", model, "-o", tmp_path / "g.svg")
    assert code == 2
    assert err == (
        "ferry: error: Graphviz's dot is not installed; apt-get install graphviz "
        "(brew install graphviz on macOS), or write .dot\n"
    )
    assert ferry("graph", model, "-o", tmp_path / "g.dot")[0] == 0  # DOT needs no Graphviz
    svg, why = marked_figure(model, "h2")
    assert svg is None and why is not None and "dot is not installed" in why


# --- compare reports -------------------------------------------------------------------------


@needs_dot
def test_a_compare_report_marks_the_first_diverging_tensor(ferry: Run, tmp_path: Path) -> None:
    a, b = save(mlp(), tmp_path / "a.onnx"), save(mlp(noise=0.1), tmp_path / "b.onnx")
    report = compare(a, b)
    assert report.result.divergence is not None and report.result.divergence.tensor == "l0"
    svg = _svg_in(report.to_html())
    red_edges = [texts for texts, _, strokes in _groups(svg, "edge") if MARK in strokes]
    assert red_edges == [["l0", "⟨batchx3⟩ float32"]]
    assert _names(svg, stroke=MARK) == {"fc2"}
    assert _legend(svg) == ["marked: l0"]
    assert "<svg" not in report.to_json()  # the JSON report stays without figures

    code, _, _ = ferry("compare", a, b, "--report", tmp_path / "r.html")
    assert code == 1
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 1 and _legend(_svg_in(page)) == ["marked: l0"]


@needs_dot
def test_a_report_figure_of_a_large_graph_shows_the_neighbourhood(tmp_path: Path) -> None:
    model = save(scaled(*[1.0] * 100), tmp_path / "chain.onnx")
    svg, why = marked_figure(model, "t50")
    assert why is None and svg is not None and svg.startswith("<svg")
    assert [texts[0] for texts, _, _ in _groups(svg, "node")].count("Mul") == 8
    assert _legend(svg) == ["marked: t50", "showing 8 of 100 nodes, within 3 steps of t50"]


def test_a_compare_report_says_when_it_cannot_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = save(mlp(), tmp_path / "a.onnx"), save(mlp(noise=0.1), tmp_path / "b.onnx")
    monkeypatch.setenv("PATH", str(tmp_path))
    report = compare(a, b)
    assert report.result.graphs == []
    assert "graph of 'l0' not drawn: Graphviz's dot is not installed" in report.to_text()


# --- ferry view ------------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_view_serves_the_model_in_netron_until_sigterm(ferry: Run, tmp_path: Path) -> None:
    pytest.importorskip("netron")
    model = save(mlp(), tmp_path / "model.onnx")
    # No --port: it takes a free one and says which (a port picked here first could be taken
    # by another test before the process binds it).
    process = subprocess.Popen(
        [sys.executable, "-m", "onnxferry", "view", model, "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline().decode()
        said = re.fullmatch(r"netron: http://127\.0\.0\.1:(\d+) \(Ctrl-C stops\)\n", line)
        assert said, line or process.stderr.read().decode()
        port = int(said[1])
        status, page = _get(port, "/")
        assert status == 200
        assert b'<meta name="file" content="/data/model.onnx">' in page
        assert b"netron" in page.lower()
        assert _get(port, "/data/model.onnx") == (200, model.read_bytes())

        code, _, err = ferry("view", model, "--no-browser", "--port", port)
        assert code == 2
        assert err == (
            f"ferry: error: port {port} on 127.0.0.1 is in use; choose another with --port, "
            "or leave --port out to take a free one\n"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr.decode()
    with pytest.raises(ConnectionRefusedError):
        _get(port, "/")

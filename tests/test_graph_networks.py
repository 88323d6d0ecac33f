"""A graph network's inputs through every verb: node features ``x[nodes, 8]`` and an edge
list ``edge_index[2, edges]`` whose values are rows of ``x`` (what PyTorch Geometric's
convolutions export). Generated edges stay below the node count, and the nodes are one
sample, not a batch of rows: before, every verb that makes inputs failed ("found no sizes"),
and explain and optimize split ``x`` into rows the edges then pointed past."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.data.npz import save_npz
from onnxferry.feeds import plan_feeds
from onnxferry.indexing import IndexLink, index_links
from onnxferry.model import Model
from onnxferry.serve.server import running
from onnxferry.signature import Signature
from tests.helpers import Run, graph_network


def graph_feeds(nodes: int, edges: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((nodes, 8)).astype(np.float32),
        "edge_index": rng.integers(0, nodes, size=(2, edges)),
    }


@pytest.fixture(scope="module")
def gnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gnn") / "gnn.onnx"
    onnx.save(graph_network(declared=True), str(path))
    return path


@pytest.mark.parametrize("declared", [True, False], ids=["value_info", "inferred"])
def test_the_edges_are_found_to_number_the_nodes(declared: bool) -> None:
    model = graph_network(declared)
    assert index_links(model) == (IndexLink("edge_index", "x", 0),)
    signature = Signature.from_onnx(model)
    assert signature.row_axes() == {"x": None, "edge_index": None}
    assert signature.batch_symbol() is None


def test_inspect_says_which_input_indexes_which(ferry: Run, gnn: Path) -> None:
    code, out, err = ferry("inspect", gnn, "--json")
    assert code == 0, err
    links = json.loads(out)["result"]["signature"]["links"]
    assert links == [{"index": "edge_index", "data": "x", "axis": 0}]
    code, out, _ = ferry("inspect", gnn)
    assert "edge_index indexes" in out and "x's axis 0 (its values are rows there)" in out


def test_an_index_into_a_constant_table_is_no_link() -> None:
    table = numpy_helper.from_array(np.zeros((100, 4), np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert index_links(model) == ()
    assert Signature.from_onnx(model).row_axes() == {"ids": 0}


def test_generated_edges_stay_below_the_node_count(gnn: Path) -> None:
    plan = plan_feeds(Model.load(gnn))
    for seed in range(3):
        feeds = plan.feeds(seed=seed)
        nodes = feeds["x"].shape[0]
        assert nodes > 1  # the nodes are no batch axis sized 1
        assert feeds["edge_index"].min() >= 0 and feeds["edge_index"].max() < nodes
        ort.InferenceSession(str(gnn)).run(None, feeds)


@pytest.mark.parametrize(
    "verb",
    [("compare", "{m}", "{m}"), ("bench", "{m}", "--iterations", "3"), ("check", "{m}")],
    ids=["compare", "bench", "check"],
)
def test_verbs_that_make_inputs_run_a_graph_network(
    ferry: Run, gnn: Path, verb: tuple[str, ...]
) -> None:
    code, _, err = ferry(*(a.format(m=gnn) for a in verb))
    assert code == 0, err


def test_optimize_and_explain_take_the_graph_whole(ferry: Run, gnn: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "graph.npz"
    save_npz(inputs, graph_feeds(nodes=10, edges=30))
    code, out, err = ferry("optimize", gnn, "-o", tmp_path / "fast.onnx", "--auto", "--inputs",
                           inputs, "--time-budget", "3")  # fmt: skip
    assert code == 0, err
    assert "latency measured on x[10x8], edge_index[2x30]" in out + err
    code, _, err = ferry("explain", gnn, "--inputs", inputs, "--method", "occlusion",
                         "--kind", "signal", "-o", tmp_path / "explained")  # fmt: skip
    assert code == 0, err
    explained = np.load(tmp_path / "explained" / "attributions.npz")
    assert explained["attributions"].shape == (1, 10, 8)  # one sample: the whole graph
    assert np.abs(explained["attributions"]).sum() > 0


def test_batch_says_a_graph_is_one_sample(ferry: Run, gnn: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "graph.npz"
    save_npz(inputs, graph_feeds(nodes=10, edges=30))
    code, _, err = ferry("batch", gnn, inputs, "-o", tmp_path / "out")
    assert code == 2
    assert err.strip().splitlines() == [
        "ferry: error: gnn: the rows of input 'x' are what 'edge_index' numbers (a graph's "
        "nodes and its edges), so they are one sample, not rows ferry batch can take apart; "
        "send each graph to `ferry serve` as one request, or run onnxruntime on each"
    ]


def test_concurrent_graphs_of_other_sizes_are_served_apart(gnn: Path) -> None:
    import tritonclient.http as httpclient

    graphs = [graph_feeds(nodes=n, edges=3 * n, seed=n) for n in (5, 9, 13, 17)]
    session = ort.InferenceSession(str(gnn))
    with running(gnn) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"), concurrency=4)

        def tensors(feeds: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
            made = []
            for name, array in feeds.items():
                tensor = httpclient.InferInput(
                    name, list(array.shape), "FP32" if name == "x" else "INT64"
                )
                tensor.set_data_from_numpy(array)
                made.append(tensor)
            return made

        # the client's own concurrency (gevent): it is not to be shared between threads
        sent = [client.async_infer("gnn", tensors(feeds)) for feeds in graphs * 3]
        answers = [request.get_result().as_numpy("out") for request in sent]
        client.close()
    for feeds, answer in zip(graphs * 3, answers, strict=True):
        np.testing.assert_allclose(answer, session.run(None, feeds)[0], rtol=1e-5, atol=1e-5)

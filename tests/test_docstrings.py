"""Every module's usage example (the indented block that opens its docstring) runs as written.

Each example runs in a fresh temporary directory, in a namespace made of the module's own
globals plus what its entry in SETUPS provides: the files it opens ("model.onnx" is written
there) and the names it uses without defining them (``model``, ``feeds``, ``module``). An
example written as ``>>>`` lines runs as a doctest; one whose lines are ``ferry ...`` commands
runs through ``onnxferry.cli.main`` and must exit 0; top-level ``await`` runs in an event loop.

A module whose example cannot run here sits in SKIP with the reason. A module with a usage
block that is in neither table fails, and so does an entry for a module that has none.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import doctest
import importlib
import inspect
import shlex
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

import onnxferry
from tests.helpers import mlp, save, table_model

PACKAGE = Path(__file__).parents[1] / "src" / "onnxferry"

Names = dict[str, Any]
Setup = Callable[[Path], Names]


# --- finding the examples --------------------------------------------------------------------


def _module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name, with its file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _docstring(file: Path) -> str:
    """The module docstring as written (no import; not dedented: a module docstring's lines
    start at column 0, so an indented line is an example)."""
    return ast.get_docstring(ast.parse(file.read_text()), clean=False) or ""


def usage_block(doc: str) -> str | None:
    """The first block indented by four spaces or more after a blank line, dedented."""
    lines = doc.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if i and line.startswith("    ") and line.strip() and not lines[i - 1].strip()
        ),
        None,
    )
    if start is None:
        return None
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def _examples() -> dict[str, str]:
    found = {}
    for name, file in _module_files().items():
        doc = _docstring(file)
        block = doc if ">>>" in doc else usage_block(doc)
        if block:
            found[name] = block
    return found


EXAMPLES = _examples()


# --- running them ----------------------------------------------------------------------------


def _bound(func: Callable[..., Any]) -> Callable[..., None]:
    """A stand-in for a call that blocks (a server's main loop): it checks the example's
    arguments against ``func``'s signature and returns."""
    signature = inspect.signature(func)

    def check(*args: Any, **kwargs: Any) -> None:
        signature.bind(*args, **kwargs)

    return check


def _run_commands(block: str) -> None:
    from onnxferry.cli import main

    for line in block.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            args = shlex.split(line, comments=True)
            assert args[0] == "ferry", line
            assert main(args[1:]) == 0, line


def _run(name: str, block: str, namespace: Names) -> None:
    if ">>>" in block:
        test = doctest.DocTestParser().get_doctest(block, namespace, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert not runner.failures, f"{name}: {runner.failures} doctest example(s) failed"
        return
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    if lines and all(line.startswith("ferry ") for line in lines):
        _run_commands(block)
        return
    flags = __future__.annotations.compiler_flag | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(block, f"<{name} docstring>", "exec", flags=flags, dont_inherit=True)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)


# --- what the examples need ------------------------------------------------------------------


def _model(path: str = "model.onnx", **kwargs: Any) -> Path:
    """The helpers' mlp (x[batch,4] -> probs[batch,3], tensors h1, h2, logits) at ``path``."""
    return save(mlp(**kwargs), Path(path))


def _feeds(rows: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)}


def _loaded(path: str = "model.onnx", **kwargs: Any) -> Any:
    from onnxferry.model import Model

    return Model.load(_model(path, **kwargs))


TORCH_FACTORY = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, {name}):
        return self.conv({name}).mean(dim=(2, 3))


def make_model():
    return Net()


make = make_model
"""


def _torch_factory(path: str, input_name: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(TORCH_FACTORY.format(name=input_name))


def _torch_net() -> Any:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: Any) -> Any:
            return torch.relu(self.linear(x))

    return Net().eval()


def _export_factory(path: str, onnx_path: str, input_name: str, shape: tuple[int, ...]) -> None:
    """The factory's model exported (TorchScript exporter, quick) as the ONNX file to judge."""
    import runpy

    import torch

    _torch_factory(path, input_name)
    module = runpy.run_path(path)["make_model"]().eval()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.randn(*shape),),
            onnx_path,
            input_names=[input_name],
            output_names=["output_0"],
            dynamic_axes={input_name: {0: "batch"}, "output_0": {0: "batch"}},
            dynamo=False,
        )


def _nothing(tmp: Path) -> Names:
    return {}


def _package(tmp: Path) -> Names:
    _model("model.onnx")
    _model("model_fp16.onnx", noise=1e-3)
    return {}


def _atomic(tmp: Path) -> Names:
    Path("out").mkdir()
    return {"data": b"{}", "blob": mlp().SerializeToString(), "weights": b"\0" * 64}


def _two_models(tmp: Path) -> Names:
    _model("a.onnx")
    _model("b.onnx")
    _model("model.onnx")
    return {}


def _bisect(tmp: Path) -> Names:
    from onnxferry.model import Model

    reference = Model.load(_model("reference.onnx"))
    candidate = Model.load(_model("candidate.onnx", noise=0.5))
    return {"reference": reference, "candidate": candidate, "feeds": _feeds()}


def _legacy_model(tmp: Path) -> Names:
    """An opset-6 model with a Dropout the reference lacks, and what the example names."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph(
        [helper.make_node("Dropout", ["x"], ["y"], is_test=1)], "old", [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    onnx.checker.check_model(proto)
    names: Names = {"proto": proto, "opset": 6, "ops": {"Dropout"}}
    return {**names, "ReferenceEvaluator": ReferenceEvaluator}


def _one_model(tmp: Path) -> Names:
    _model("model.onnx")
    return {}


def _render(tmp: Path) -> Names:
    import onnxferry
    from onnxferry.report import Table

    _model()
    return {
        "report": onnxferry.inspect("model.onnx"),
        "as_json": False,
        "report_path": Path("inspect.json"),
        "table": Table("numbers", ("n",), [(1,), (2,)]),
    }


def _compare(tmp: Path) -> Names:
    import shutil

    from onnxferry.parity import Tolerance

    _export_factory("train.py", "model.onnx", "x", (1, 3, 32, 32))
    shutil.copy("model.onnx", "model.fp16.onnx")  # a second model with the same signature
    return {"Tolerance": Tolerance}


def _convert(tmp: Path) -> Names:
    return {"module": _torch_net(), "x": _feeds()["x"]}


def _dispatch(tmp: Path) -> Names:
    _torch_factory("train.py", "x")
    return _convert(tmp)


def _against(tmp: Path) -> Names:
    _export_factory("train.py", "model.onnx", "image", (1, 3, 224, 224))
    return {}


def _convert_base(tmp: Path) -> Names:
    from onnxferry.convert.torch import load_torch

    return {
        "load_torch": load_torch,
        "module": _torch_net(),
        "options": _options(input_shapes={"x": (2, 4)}),
        "feeds": _feeds(),
    }


def _options(**kwargs: Any) -> Any:
    from onnxferry.convert import ConvertOptions

    return ConvertOptions(**kwargs)


def _sklearn(tmp: Path) -> Names:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, x[:, 0] > 0)
    joblib.dump(pipeline, "model.joblib")
    search = GridSearchCV(LogisticRegression(), {"C": [0.5, 1.0]}, cv=2).fit(x, x[:, 0] > 0)
    return {
        "pipeline": pipeline,
        "search": search,
        "x": x[:4],
        "ConvertOptions": type(_options()),
    }


def _sklearn_versions(tmp: Path) -> Names:
    names = _sklearn(tmp)
    return {**names, "estimator": names["pipeline"], "Path": Path}


def _boosters(tmp: Path) -> Names:
    import lightgbm
    import xgboost
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).standard_normal((64, 4))
    y = (x[:, 0] > 0).astype(int)
    quiet: dict[str, Any] = {"verbose": -1, "min_child_samples": 4}
    booster = lightgbm.train({"objective": "binary", **quiet}, lightgbm.Dataset(x, y), 3)
    booster.save_model("model.txt")
    xgboost.XGBClassifier(n_estimators=3).fit(x, y).save_model("model.json")
    model = lightgbm.LGBMClassifier(n_estimators=3, **quiet)
    return {
        "pipeline": make_pipeline(StandardScaler(), model).fit(x, y),
        "lightgbm_booster": booster,
    }


def _sklearn_tasks(tmp: Path) -> Names:
    from sklearn.ensemble import IsolationForest

    x = np.random.default_rng(0).standard_normal((32, 4))
    return {"forest": IsolationForest(n_estimators=5, random_state=0).fit(x), "x": x}


def _resampling(tmp: Path) -> Names:
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).standard_normal((32, 4))
    steps = StandardScaler(), RandomOverSampler(random_state=0), LogisticRegression()
    return {"resampling": make_pipeline(*steps).fit(x, x[:, 0] > 0.5)}


def _sklearn_text(tmp: Path) -> Names:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = ["a fine café", "an awful day", "fine fine", "awful"], [1, 0, 1, 0]
    return {"pipeline": make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)}


def _explain_text(tmp: Path) -> Names:
    from onnxferry.explain.kinds import plan_layout
    from onnxferry.signature import TensorSpec, dtype_from_numpy

    texts = np.array(["Great film, awful ending", "fine"], dtype=object)
    layout, _ = plan_layout(TensorSpec("input", dtype_from_numpy(object), ("batch",)), texts)
    return {"layout": layout, "texts": texts}


def _sklearn_table(tmp: Path) -> Names:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    ages, sexes = np.array([[20.0], [30.0], [40.0]]), np.array([["m"], ["f"], ["m"]])
    frame = pd.DataFrame({"age": ages[:, 0], "sex": sexes[:, 0]})
    columns = make_column_transformer((OneHotEncoder(), ["sex"]), remainder="passthrough")
    pipeline = make_pipeline(columns, LogisticRegression()).fit(frame, [0, 1, 0])
    return {"pipeline": pipeline, "ages": ages, "sexes": sexes, "ConvertOptions": type(_options())}


def _federated_shard(tmp: Path) -> Names:
    from onnxferry.torchgraph.module import to_torch

    model = _loaded()
    labels = np.repeat([0, 1, 2], [40, 41, 39])
    Path("clients/a").mkdir(parents=True)
    x = np.random.default_rng(0).standard_normal((120, 4)).astype(np.float32)
    np.savez("clients/a/train.npz", x=x, y=labels)
    return {"model": model, "module": to_torch(model, check=False)}


LEARN_BLOCKS = """
import torch


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(0.0, 6.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class StraightThroughClip(torch.nn.Module):
    def __init__(self, block):
        super().__init__()

    def forward(self, x):
        return _StraightThrough.apply(x)


Clip = StraightThroughClip
"""


def _learn(tmp: Path) -> Names:
    """A small classifier (conv_1 -> relu_1 -> flatten -> fc, 3 classes) as model.onnx and
    digits.onnx, its training and held-out rows (train.npz, val.npz: x, y) and blocks.py."""
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from onnxferry.torchgraph.module import to_torch
    from onnxferry.torchgraph.ops import Node

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) / 4, name)

    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], "conv_1", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["relu_1"], "relu_1"),
        helper.make_node("Flatten", ["relu_1"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], "fc", transB=1),
    ]
    weights = [weight("conv.weight", 2, 1, 3, 3), weight("conv.bias", 2)]
    weights += [weight("fc.weight", 3, 128), weight("fc.bias", 3)]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])],
        weights,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(proto, tmp / "model.onnx")
    save(proto, tmp / "digits.onnx")
    x = rng.random((96, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) * 3).astype(np.int64).clip(0, 2)
    np.savez(tmp / "train.npz", x=x[:64], y=y[:64])
    np.savez(tmp / "val.npz", x=x[64:], y=y[64:])
    (tmp / "blocks.py").write_text(LEARN_BLOCKS)
    gemm = Node("Gemm", "", "fc", ["flat", "fc.weight", "fc.bias"], ["logits"], 17, {"transB": 1})
    return {
        "torch": torch,
        "module": to_torch(tmp / "model.onnx"),
        "x": x[:64],
        "y": y[:64],
        "x_val": x[64:],
        "y_val": y[64:],
        "factory": lambda block: torch.nn.Flatten(),
        "node": gemm,
        "w": torch.randn(3, 4),
        "b": torch.randn(3),
        "h": torch.randn(2, 4),
    }


def _torch_package(tmp: Path) -> Names:
    import importlib.util

    import torch

    _torch_factory("models/net.py", "x")
    spec = importlib.util.spec_from_file_location("net", "models/net.py")
    assert spec is not None and spec.loader is not None
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)  # a module name TorchScript can save the class under
    net = factory.make().eval()
    with warnings.catch_warnings():  # torch.jit is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save("net.ts")
    program = torch.export.export(net, (torch.randn(2, 3, 32, 32),))
    torch.export.save(program, "net.pt2")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return {
        "net": net,
        "torch": torch,
        "options": _options(input_shapes={"x": (1, 3, 32, 32)}),
        "x": x,
        "ConvertOptions": type(_options()),
    }


def _torch_load(tmp: Path) -> Names:
    import torch

    names = _torch_package(tmp)
    return {"net": names["net"], "torch": torch, "x": names["x"]}


def _torch_inputs(tmp: Path) -> Names:
    import torch

    return {"module": torch.nn.Linear(3, 2), "torch": torch, "options": _options()}


def _torch_state(tmp: Path) -> Names:
    import torch

    class Streaming(torch.nn.Module):  # keeps its state in an attribute, as BeatNet does
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.zeros(1, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.hidden = self.hidden + x
            return self.hidden

    return {"module": Streaming(), "x": torch.ones(1, 2)}


def _torch_pretrained(tmp: Path) -> Names:
    from onnxferry.convert.base import ConvertOptions
    from tests.real_models import save_pretrained

    save_pretrained("bert_cls", tmp / "checkpoints" / "bert")
    return {"options": ConvertOptions()}


def _torch_quiet(tmp: Path) -> Names:
    import torch

    net = _torch_net()

    class Exporter:
        """``torch.onnx`` whose ``export(...)`` (the example elides the arguments) exports a
        network with the TorchScript exporter, which warns that it is deprecated: ``quiet``
        keeps that from the test's warnings-as-errors."""

        @staticmethod
        def export(*args: Any) -> None:
            torch.onnx.export(net, (torch.randn(1, 4),), "net.onnx", dynamo=False)

    return {"torch": SimpleNamespace(onnx=Exporter), "error": RuntimeError("first\nsecond")}


def _torch_runner(tmp: Path) -> Names:
    import torch

    from onnxferry.signature import Signature, TensorSpec, dtype_from_numpy

    float32 = dtype_from_numpy(np.float32)
    signature = Signature(
        (TensorSpec("x", float32, ("batch", 4)),), (TensorSpec("output_0", float32, ("batch", 3)),)
    )
    from onnxferry.convert.torch.inputs import ExampleInputs

    t, a, b = torch.ones(1), torch.zeros(2), torch.ones(3)
    return {
        "module": _torch_net(),
        "inputs": ExampleInputs(["x"], [torch.ones(2, 4)], keyword=False),
        "signature": signature,
        "x": _feeds()["x"],
        "t": t,
        "a": a,
        "b": b,
    }


def _torch_sources(tmp: Path) -> Names:
    names = _torch_package(tmp)
    return {"options": names["options"]}


def _torch_specs(tmp: Path) -> Names:
    import torch

    from onnxferry.convert.torch.inputs import build_inputs, forward_params

    module = _torch_net()
    options = _options()
    inputs = build_inputs(module, forward_params(module), (torch.randn(2, 4),), options)
    return {"module": module, "inputs": inputs, "program": None, "options": options}


def _torch_export(tmp: Path) -> Names:
    import torch

    from onnxferry.convert.torch.inputs import build_inputs, forward_params
    from onnxferry.convert.torch.sources import resolve_source
    from onnxferry.convert.torch.specs import describe_inputs, describe_outputs, probe_outputs
    from onnxferry.signature import Signature

    module = _torch_net()
    options = _options()
    loaded = resolve_source(module, options)
    inputs = build_inputs(module, forward_params(module), (torch.randn(2, 4),), options)
    input_specs, dims = describe_inputs(inputs, None, options)
    outputs, names = probe_outputs(module, inputs)
    output_specs = describe_outputs(module, inputs, dims, outputs, names)
    signature = Signature(tuple(input_specs), tuple(output_specs))
    return {
        "loaded": loaded,
        "inputs": inputs,
        "signature": signature,
        "dims": dims,
        "options": options,
    }


def _torch_naming(tmp: Path) -> Names:
    from onnxferry.convert.torch.export import DYNAMO, TORCHSCRIPT, ExportPlan

    names = _torch_export(tmp)
    ExportPlan(
        names["loaded"], names["inputs"], names["signature"], names["dims"], names["options"]
    ).export_torchscript(Path("net.onnx"))
    return {
        "path": Path("net.onnx"),
        "signature": names["signature"],
        "DYNAMO": DYNAMO,
        "TORCHSCRIPT": TORCHSCRIPT,
    }


def _torch_divergence(tmp: Path) -> Names:
    from onnxferry.convert.torch import load_torch
    from onnxferry.model import Model
    from onnxferry.parity import Tolerance

    source = load_torch(_torch_net(), _options(input_shapes={"x": (2, 4)}))
    dynamo = source.candidates[0]
    dynamo.export(Path("net.onnx"))
    model = Model.load("net.onnx")
    proto = model.proto
    for tensor in proto.graph.initializer:  # a wrong weight: the linear layer diverges
        if len(tensor.dims) == 2:
            tensor.raw_data = bytes(len(tensor.raw_data))
    return {
        "source": source,
        "model": Model.load(save(proto, Path("wrong.onnx"))),
        "feeds": _feeds(),
        "Tolerance": Tolerance,
    }


def _data(tmp: Path) -> Names:
    from onnxferry.data import save_npz, save_test_case
    from onnxferry.runtime import OrtRunner

    model = _loaded()
    feeds = _feeds()
    save_npz("feeds.npz", feeds)
    save_test_case("resnet50/test_data_set_0", feeds, OrtRunner(model).run(feeds))
    return {
        "model": model,
        "outputs": OrtRunner(model).run(feeds),
        "text": 'name = "fold"\n',
    }


def _golden(tmp: Path) -> Names:
    from onnxferry.data import save_test_case
    from onnxferry.runtime import OrtRunner

    model = _loaded("model_dir/model.onnx")
    save(mlp(), Path("model.onnx"))
    feeds = _feeds()
    save_test_case("model_dir/test_data_set_0", feeds, OrtRunner(model).run(feeds))
    return {}


def _graphs(tmp: Path) -> Names:
    from onnxferry.runtime import OrtRunner

    model = _loaded()
    return {"model": model, "proto": mlp(), "feeds": _feeds(), "OrtRunner": OrtRunner}


def _optimize(tmp: Path) -> Names:
    from onnxferry.optimize import Recipe

    _model()
    Recipe.of(["fold"]).save("fast.recipe.toml")
    Recipe.of(["fold"]).save("recipe.toml")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    np.savez("val.npz", x=x, labels=rng.integers(0, 3, 64))
    return {}


def _judge(model: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    from onnxferry.optimize.budget import Budget
    from onnxferry.optimize.chain import Judge

    return Judge(model, feeds, Budget.parse("cosine>=0.99"))


def _auto(tmp: Path) -> Names:
    model = _loaded()
    feeds = [_feeds(1), _feeds(8)]
    return {"model": model, "judge": _judge(model, feeds), "workdir": tmp / "work"}


def _search_result(tmp: Path) -> Names:
    """A search of one candidate (the model itself, as if a pass had kept it), judged here."""
    from onnxferry.optimize import Recipe
    from onnxferry.optimize.candidates import Candidate, SearchResult
    from onnxferry.optimize.chain import ChainResult

    names = _auto(tmp)
    model, judge = names["model"], names["judge"]
    (baseline_ms,) = judge.latency_ms(model)
    result = ChainResult(model.name, judge.budget.text(), baseline_ms, model.size_bytes)
    result.kept, result.final_metric, result.final_ms = ["fold"], 1.0, baseline_ms
    candidate = Candidate(Recipe.of(["fold"]), result, model.path, pair_speedup=1.0)
    search = SearchResult(model.name, judge.budget.text(), baseline_ms, candidates=[candidate])
    return {
        "judge": judge, "original": model, "candidate_model": model, "baseline_ms": baseline_ms,
        "search": search, "i": 0, "candidate": candidate, "holdout": None, "workdir": tmp / "w",
    }  # fmt: skip


def _chain(tmp: Path) -> Names:
    from onnxferry.optimize import Recipe

    Recipe.of(["fold"]).save("r.toml")
    return {"model": _loaded(), "feeds": _feeds()}


def _pass_context(tmp: Path) -> Names:
    from onnxferry.optimize import PassContext

    model = _loaded()
    feeds = [_feeds(1), _feeds(8)]
    workdir = tmp / "work"
    return {"model": model, "feeds": feeds, "workdir": workdir, "ctx": PassContext(workdir, feeds)}


def _refit(tmp: Path) -> Names:
    from onnxferry.optimize.channel_surgery import Follower, slice_channels
    from onnxferry.optimize.weights import Weights

    names = {"Weights": Weights, "Follower": Follower, "slice_channels": slice_channels, "np": np}
    return {**_pass_context(tmp), **names}


def _budget(tmp: Path) -> Names:
    from onnxferry.runtime import OrtRunner

    reference = OrtRunner(_loaded()).run(_feeds())
    candidate = OrtRunner(_loaded("noisy.onnx", noise=1e-3)).run(_feeds())
    return {"reference_outputs": [reference], "candidate_outputs": [candidate]}


def _calibration(tmp: Path) -> Names:
    from onnxferry.data import save_npz

    model = _loaded()
    save_npz("calib.npz", {"x": np.stack([_feeds(1, seed)["x"] for seed in range(4)])})
    Path("calib").mkdir()
    save_npz("calib/a.npz", _feeds(1))

    class Reader:
        def __init__(self) -> None:
            self.left = [_feeds(1, seed) for seed in range(3)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    return {"model": model, "my_reader": Reader()}


def _my_pass() -> type[Any]:
    from onnxferry.optimize import Pass, PassResult

    @dataclass(frozen=True)
    class MyPass(Pass):
        """Leaves the model as it is."""

        name: ClassVar[str] = "my_pass"
        family: ClassVar[str] = "graph"

        def apply(self, model: Any, ctx: Any) -> PassResult:
            return PassResult(model, changed=False)

    return MyPass


def _catalog(tmp: Path) -> Names:
    from onnxferry.optimize import Recipe, make_pass

    return {"MyPass": _my_pass(), "Recipe": Recipe, "make_pass": make_pass}


def _quantize(tmp: Path) -> Names:
    from onnxferry.optimize.sensitivity import exclude_until, rank_sensitivity

    return {
        **_pass_context(tmp),
        "judge": lambda model: True,
        "rank_sensitivity": rank_sensitivity,
        "exclude_until": exclude_until,
    }


def _sensitivity(tmp: Path) -> Names:
    from onnxferry.optimize import PassContext
    from onnxferry.optimize.quantize import StaticInt8

    fp32 = _loaded()
    feeds = [_feeds(1), _feeds(8)]
    plan = StaticInt8().plan(fp32, PassContext(tmp / "work", feeds))
    return {
        "fp32": plan.source,
        "qdq": plan.build([]),
        "feeds": feeds,
        "build": plan.build,
        "judge": lambda model: True,
    }


def _parity(tmp: Path) -> Names:
    from onnxferry.runtime import OrtRunner

    reference, candidate = _loaded(), _loaded("optimized.onnx", noise=1e-3)
    feeds = [_feeds()]
    return {
        "ref_runner": OrtRunner(reference),
        "cand_runner": OrtRunner(candidate),
        "feeds": feeds,
        "ref_outputs": [OrtRunner(reference).run(f) for f in feeds],
        "cand_outputs": [OrtRunner(candidate).run(f) for f in feeds],
    }


def _parity_judge(tmp: Path) -> Names:
    from onnxferry.parity import compare_outputs

    names = _parity(tmp)
    refs, cands = names["ref_outputs"], names["cand_outputs"]
    spread, second = compare_outputs(refs, refs), compare_outputs(refs, cands)
    return {**names, "model": _loaded(), "spread": spread, "second": second}


def _verdict(tmp: Path) -> Names:
    from onnxferry.convert.dispatch import load_source, options_for
    from onnxferry.runtime import OrtRunner

    source = load_source(str(_model()), options_for())
    return {"source": source, "feeds": [_feeds()], "runner": OrtRunner(_loaded("b.onnx"))}


def _report(tmp: Path) -> Names:
    _model("a.onnx")
    _model("b.onnx", noise=1e-3)
    return {}


def _runtime(tmp: Path) -> Names:
    from onnxferry.feeds import plan_feeds

    return {"model": _loaded(), "plan_feeds": plan_feeds}


def _customops(tmp: Path) -> Names:
    """my_ops.py (one onnx_op), a model of the extensions' domain, session options and an
    error message of onnxruntime's."""
    import onnxruntime as ort

    from onnxferry.model import Model
    from tests.test_customops import string_length_model, write_ops

    write_ops(Path("my_ops.py"), "DocsSwish")
    return {
        "model": Model.from_proto(string_length_model()),
        "options": ort.SessionOptions(),
        "ort_message": "Fatal error: ai.onnx.contrib:Nope(-1) is not a registered function/op",
    }


def _torch_custom(tmp: Path) -> Names:
    """A torch.library operator (ferrydoc::swish) and export_rules.py translating it."""
    import torch

    schema = "(Tensor x) -> Tensor"  # annotations are strings here (__future__)
    if not hasattr(torch.ops.ferrydoc, "swish"):

        @torch.library.custom_op("ferrydoc::swish", mutates_args=(), schema=schema)
        def swish(x: Any) -> Any:
            return x * torch.sigmoid(x)

    Path("export_rules.py").write_text(
        "import torch\n"
        "from onnxscript import opset18 as op\n\n"
        "def swish(x):\n    return op.Mul(x, op.Sigmoid(x))\n\n"
        "def swish_symbolic(g, x):\n    return g.op('Mul', x, g.op('Sigmoid', x))\n\n"
        "custom_translation_table = {torch.ops.ferrydoc.swish.default: swish}\n"
        "symbolics = {'ferrydoc::swish': swish_symbolic}\n"
    )
    return {"Path": Path}


def _safety(tmp: Path) -> Names:
    import onnx

    directory = Path("models/resnet")
    directory.mkdir(parents=True)
    proto = mlp()
    onnx.save(proto, str(directory / "model.onnx"), save_as_external_data=True, size_threshold=0)
    return {"proto": onnx.load(str(directory / "model.onnx"), load_external_data=False)}


def _indexing(tmp: Path) -> Names:
    from tests.helpers import graph_network

    return {"proto": graph_network()}


def _signature(tmp: Path) -> Names:
    return {"model": _loaded(), "feeds": _feeds()}


def _signing_keys(tmp: Path) -> Names:
    """model.onnx and an ECDSA key pair in keys/."""
    from onnxferry.signing import generate_keys

    _model("model.onnx")
    generate_keys("keys")
    return {}


def _signed_model(tmp: Path) -> Names:
    """_signing_keys, and model.onnx signed into model.onnx.sig."""
    from onnxferry.signing import sign

    _signing_keys(tmp)
    sign("model.onnx", "keys/private_key.pem")
    return {}


def _signing_pki(tmp: Path) -> Names:
    """pki/: root.pem -> intermediate.pem -> leaf.pem, for the key in pki/keys/."""
    from tests.test_signing_certificates import _pki

    _pki(Path("pki"))
    return {}


def _serve_repository(tmp: Path) -> Names:
    version = Path("models/resnet/1")
    version.mkdir(parents=True)
    _model(str(version / "model.onnx"))
    return {"feeds": _feeds()}


def _serve_app(tmp: Path) -> Names:
    import uvicorn

    _serve_repository(tmp)
    return {"uvicorn": SimpleNamespace(run=_bound(uvicorn.run))}


def _serve_asgi(tmp: Path) -> Names:
    body = [{"type": "http.request", "body": b'{"inputs": []}', "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return body.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return {"receive": receive, "send": send, "headers": {b"content-length": b"14"}}


def _serve_config(tmp: Path) -> Names:
    from onnxferry.runtime import usable_cores

    Path("repo/resnet").mkdir(parents=True)
    Path("repo/resnet/ferry.toml").write_text("max_batch_size = 8\n")
    return {"usable_cores": usable_cores}


def _serve_executor(tmp: Path) -> Names:
    from onnxferry.model import Model
    from tests.helpers import RELU, onnx_text

    return {"model": Model.load(save(onnx_text(RELU), Path("relu.onnx"))), "x": _feeds()["x"]}


def _serve_timers(tmp: Path) -> Names:
    return {"callback": lambda: None}


def _serve_cache(tmp: Path) -> Names:
    x = _feeds()["x"]
    return {"x": x, "y": x * 2}


def _serve_budget(tmp: Path) -> Names:
    import time

    from onnxferry.serve.config import ModelConfig
    from onnxferry.serve.executor import ModelExecutor

    executor = ModelExecutor(_serve_executor(tmp)["model"], ModelConfig(instances=1))
    return {"executor": executor, "deadline": time.monotonic() + 60}


def _serve_metadata(tmp: Path) -> Names:
    from onnxferry.serve.config import ModelConfig

    return {"signature": _loaded().signature, "config": ModelConfig(max_batch_size=8)}


def _serve_parsing(tmp: Path) -> Names:
    import json

    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    ).encode()
    return {"model": _loaded(), "body": body}


def _serve_protocol(tmp: Path) -> Names:
    from onnxferry.runtime import OrtRunner

    names = _serve_parsing(tmp)
    return {**names, "value": None, "runner": OrtRunner(names["model"])}


def _serve_server(tmp: Path) -> Names:
    import requests

    from onnxferry.serve.server import serve

    _model()
    Path("models").mkdir()
    return {"serve": _bound(serve), "requests": requests}


def _serve_tensors(tmp: Path) -> Names:
    from onnxferry.signature import TensorSpec, dtype_from_numpy

    spec = TensorSpec("x", dtype_from_numpy(np.float32), (2, 3))
    data = np.arange(6, dtype=np.float32).tobytes()
    return {"spec": spec, "data": data, "outputs": {"y": np.ones((2, 3), np.float32)}}


def _language_model() -> Any:
    """input_ids, attention_mask int64[batch, sequence] -> hidden[batch, sequence, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["hidden"]),
    ]
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "lm",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [*dims, 4])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([-1], np.int64), "last"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _feeds_package(tmp: Path) -> Names:
    from onnxferry.model import Model

    model = Model.load(save(_language_model(), Path("lm.onnx")))
    ids = np.random.default_rng(0).integers(0, 100, (2, 8))
    return {"model": model, "inputs": {"input_ids": ids, "attention_mask": np.ones_like(ids)}}


def _string_normalizer(tmp: Path) -> Names:
    """A model whose StringNormalizer names no locale (skl2onnx's text pipelines)."""
    from onnx import TensorProto, helper

    from onnxferry.model import Model

    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER")
    text = [helper.make_tensor_value_info(n, TensorProto.STRING, ["batch"]) for n in "xy"]
    graph = helper.make_graph([node], "lower", text[:1], text[1:])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return {"model": Model.from_proto(proto)}


def _explain_table(tmp: Path) -> Names:
    """age, city, n, member: one input per column (``helpers.table_model``)."""
    from onnxferry.model import Model

    feeds = {
        "age": np.array([[30.0], [52.0]], np.float32),
        "city": np.array([["Oslo"], ["Lyon"]], dtype=object),
        "n": np.array([[1], [3]], np.int64),
        "member": np.array([True, False]),
    }
    return {"model": Model.from_proto(table_model()), "feeds": feeds}


def _data_rows(tmp: Path) -> Names:
    names = _explain_table(tmp)
    Path("rows.csv").write_text("age,city,n,member\n30,Oslo,1,true\n52,Lyon,3,false\n")
    return {**names, "Path": Path}


def _feeds_sets(tmp: Path) -> Names:
    from onnxferry.errors import DataError

    names = _feeds_package(tmp)
    return {**names, "samples": [names["inputs"]], "DataError": DataError}


def _feeds_values(tmp: Path) -> Names:
    return {"signature": _feeds_package(tmp)["model"].signature}


def _measure(tmp: Path) -> Names:
    from onnxferry.runtime import create_session

    return {"session": create_session(_loaded()), "feeds": _feeds()}


def _flushing(tmp: Path) -> Names:
    return {**_measure(tmp), "model": _loaded()}


def _serve_scan(tmp: Path) -> Names:
    version = Path("models/resnet/2")
    version.mkdir(parents=True)
    _model(str(version / "model.onnx"))
    return {}


def _serve_catalog(tmp: Path) -> Names:
    from onnxferry.serve.repository import Repository

    _serve_repository(tmp)
    return {"repo": Repository.open(Path("models"))}


def _asgi_call(body: bytes) -> Names:
    """The ASGI scope, receive and send of one request whose body is ``body``."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-length", str(len(body)).encode())]
    return {"scope": {"type": "http", "headers": headers}, "receive": receive, "send": send}


def _serve_connections(tmp: Path) -> Names:
    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """An ASGI app (the example only configures uvicorn with it)."""

    return {"uvicorn": uvicorn, "app": app}


def _serve_busypoll(tmp: Path) -> Names:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        """An ASGI app (the example only wraps it)."""

    return {"app": app}


def _serve_endpoint(tmp: Path) -> Names:
    return {**_serve_catalog(tmp), **_asgi_call(b"")}


def _serve_infer(tmp: Path) -> Names:
    from onnxferry.serve.parsing import JsonParser

    body = _serve_parsing(tmp)["body"]
    return {**_serve_catalog(tmp), **_asgi_call(body), "parser": JsonParser(1 << 30)}


def _serve_sagemaker(tmp: Path) -> Names:
    from onnxferry.serve.asgi import ByteBudget
    from onnxferry.serve.infer import Inference
    from onnxferry.serve.metrics import ServeMetrics
    from onnxferry.serve.parsing import JsonParser
    from onnxferry.serve.settings import ServeSettings

    names = {**_serve_catalog(tmp), **_asgi_call(b"[[1, 2, 3, 4]]")}
    parts = (ServeSettings(), ServeMetrics(), ByteBudget(1 << 28), JsonParser(1 << 30))
    return {**names, "inference": Inference(names["repo"], *parts)}


def _serve_inflate(tmp: Path) -> Names:
    import gzip

    return {"asyncio": asyncio, "body": gzip.compress(b'{"inputs": []}' * 100)}


def _serve_keys(tmp: Path) -> Names:
    keys = Path("ferry-keys")
    keys.write_text("# one key a line\n" + "0123456789abcdef" * 2 + "\n")
    keys.chmod(0o600)
    return {}


def _serve_responses(tmp: Path) -> Names:
    from onnxferry.runtime import OrtRunner
    from onnxferry.serve.protocol import decode_infer_request

    names = _serve_parsing(tmp)
    request = decode_infer_request(names["body"], None, names["model"].signature)
    return {"request": request, "outputs": OrtRunner(names["model"]).run(request.inputs)}


def _serve_shm(tmp: Path) -> Names:
    import atexit

    path = Path("/dev/shm/ferry-doc-input")  # the key the example registers
    path.write_bytes(bytes(48))
    atexit.register(path.unlink, missing_ok=True)
    return {}


def _serve_grpc_convert(tmp: Path) -> Names:
    from tritonclient.grpc import service_pb2

    from onnxferry.runtime import OrtRunner
    from onnxferry.serve.protocol import decode_document

    model, x = _loaded(), _feeds()["x"]
    message = service_pb2.ModelInferRequest(model_name="mlp")
    message.inputs.add(name="x", datatype="FP32", shape=x.shape)
    message.raw_input_contents.append(x.tobytes())
    outputs = OrtRunner(model).run({"x": x})
    return {"message": message, "signature": model.signature, "outputs": outputs,
            "decode_document": decode_document}  # fmt: skip


def _serve_grpc_server(tmp: Path) -> Names:
    import tritonclient.grpc

    from onnxferry.serve.server import serve

    _model()
    return {"tritonclient": tritonclient, "serve": _bound(serve)}


def _serve_takeover(tmp: Path) -> Names:
    return {"v1": _loaded("v1.onnx"), "v2": _loaded("v2.onnx", noise=1e-3)}


def _batch(tmp: Path) -> Names:
    """model.onnx (the mlp) as ``model``, data.npy and data.parquet of 10 rows, ``source`` over
    data.npy, out/, and what the sinks' example writes (``rows``, ``y``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from onnxferry.batch.sinks import shards
    from onnxferry.batch.sources import open_source

    model = _loaded()
    x = _feeds(10)["x"]
    np.save("data.npy", x)
    pq.write_table(pa.table({"x": pa.array(list(x), pa.list_(pa.float32()))}), "data.parquet")
    Path("out").mkdir()
    rows = np.arange(1000)
    return {
        "model": model,
        "source": open_source("data.npy", model.signature),
        "rows": rows,
        "y": np.random.default_rng(0).standard_normal((1000, 3)).astype(np.float32),
        "pa": pa,
        "shards": shards,
    }


def _batch_local(tmp: Path) -> Names:
    """``_batch``, with a ``Job`` whose memory cap leaves room for this test process: a
    worker that has loaded TensorFlow and torch for other tests holds more than the 2 GiB a
    fresh ``ferry batch`` is capped at, and the plan counts the process's own memory."""
    import functools

    from onnxferry.batch.plan import Job

    return {**_batch(tmp), "Job": functools.partial(Job, max_memory=64 << 30)}


def _spectrogram(tmp: Path) -> Names:
    """``proto`` and ``model``: a spectrogram with one STFT (tests/test_package_stft.py)."""
    from onnxferry.model import Model
    from tests.test_package_stft import spectrogram

    return {"proto": spectrogram(), "model": Model.from_proto(spectrogram())}


def _fused_encoder(tmp: Path) -> Names:
    """``proto`` and ``model``: an EmbedLayerNormalization into an Attention, ONNX Runtime's
    fused operators (tests/test_unfused.py)."""
    from onnxferry.model import Model
    from tests.test_unfused import encoder

    return {"proto": encoder(17), "model": Model.from_proto(encoder(17))}


def _qoperator_cnn(tmp: Path) -> Names:
    """``proto`` and ``model``: a CNN quantized to QOperator form (tests/test_qdq.py)."""
    import onnx

    from onnxferry.model import Model
    from tests.test_qdq import quantized

    proto = onnx.load_from_string(quantized(True))
    return {"proto": proto, "model": Model.from_proto(onnx.load_from_string(quantized(True)))}


def _fp16_encoder(tmp: Path) -> Names:
    """encoder_fp16.onnx: a float16 Transpose into a MatMul, what ``ort_crashes`` matches."""
    from tests.test_ort_crashes import transpose_into_matmul

    save(transpose_into_matmul(), Path("encoder_fp16.onnx"))
    return {}


def _batch_images(tmp: Path) -> Names:
    """An image model (x[N,3,224,224] -> per-channel means) as ``model`` and photos/ with one
    PNG."""
    from PIL import Image

    from onnxferry.model import Model
    from tests.helpers import onnx_text

    text = """
    <ir_version: 10, opset_import: ["" : 21]>
    pool (float[N, 3, 224, 224] x) => (float[N, 3] m) {
        axes = Constant<value = int64[2] {2, 3}>()
        m = ReduceMean<keepdims = 0>(x, axes)
    }
    """
    Path("photos").mkdir()
    Image.new("RGB", (300, 200), (10, 120, 240)).save("photos/cat.png")
    return {"model": Model.load(save(onnx_text(text), Path("image.onnx")))}


def _registry_files(tmp: Path) -> Names:
    """out/model.onnx with golden data in out/golden, keys/ and k.pem, secret.key, and a
    registry/ holding resnet versions 1 and 2 with production moved from 1 to 2."""
    import secrets

    from onnxferry.data import save_test_case
    from onnxferry.registry import Registry
    from onnxferry.runtime import OrtRunner
    from onnxferry.signing import generate_keys

    model = _loaded("out/model.onnx")
    feeds = _feeds()
    save_test_case("out/golden/test_data_set_0", feeds, OrtRunner(model).run(feeds))
    private, _ = generate_keys("keys")
    Path("k.pem").write_bytes(private.read_bytes())
    Path("secret.key").write_text(secrets.token_hex(32))
    reg = Registry.open("registry", create=True)
    for _ in range(2):
        v = reg.add("out/model.onnx", "resnet", golden="out/golden", sign_key=private)
        reg.set_alias("resnet", "production", v.version)
    return {
        "reg": reg,
        "record": reg.get("resnet@production"),
        "feeds": feeds,
        "OrtRunner": OrtRunner,
        "data": b"weights",
    }


def _registry_follow(tmp: Path) -> Names:
    """_registry_files, and a server over registry/ for the example to follow."""
    from onnxferry.model import Model
    from onnxferry.serve.registry_http import running_registry

    return {**_registry_files(tmp), "running_registry": running_registry, "Model": Model}


def _registry_tar(tmp: Path) -> Names:
    """_registry_files, and resnet:1 exported as the bundle resnet-1.tar."""
    from onnxferry.registry.bundle import export_version

    names = _registry_files(tmp)
    bundle = export_version(names["reg"], "resnet:1", "resnet-1.tar")
    return {**names, "bundle": bundle, "record": names["reg"].get("resnet:1")}


def _registry_http(tmp: Path) -> Names:
    import urllib.request

    from onnxferry.serve.registry_http import serve_registry

    return {**_registry_files(tmp), "urllib": urllib, "serve_registry": _bound(serve_registry)}


def _view(tmp: Path) -> Names:
    """model.onnx (the mlp: tensors h1, h2), a copy with other weights as ``optimized``, and
    ``draw``; ``view`` (it serves until a signal) only checks its arguments."""
    from onnxferry.view import draw, view

    optimized = _loaded("optimized.onnx", noise=0.1)
    return {"model": _loaded(), "optimized": optimized, "draw": draw, "view": _bound(view)}


def _explain(tmp: Path) -> Names:
    """model.onnx (the helpers' mlp), rows x and bg (also x.npz, bg.npz), vocab.txt, and
    what the explain modules' examples take: a session, a tabular layout, an explanation,
    a Task for one row."""
    from onnxferry.data import save_npz
    from onnxferry.explain import explain
    from onnxferry.explain.evaluate import Evaluator, resolve_targets
    from onnxferry.explain.kinds import plan_layout
    from onnxferry.explain.methods import Task
    from onnxferry.runtime import create_session

    model = _loaded()
    x, bg = _feeds(8)["x"], _feeds(16, seed=1)["x"]
    save_npz("x.npz", {"x": x})
    save_npz("bg.npz", {"x": bg})
    Path("vocab.txt").write_text("".join(f"token{i}\n" for i in range(10)))
    session = create_session(model)
    layout, rows = plan_layout(model.signature.input("x"), x[:1])
    evaluator = Evaluator(session, model.signature, "x", layout, {}, 1)
    (target,), _ = resolve_targets(evaluator, rows, model.signature, None)
    task = Task(
        rows[0],
        layout,
        lambda r, t: evaluator.function(0, target, t)(r),
        bg.mean(axis=0),
        bg,
        None,
        None,
        64,
        4096,
        0,
        None,
    )
    explanation = explain(model, x[:3], "occlusion")
    return {
        "model": model,
        "x": x,
        "bg": bg,
        "session": session,
        "layout": layout,
        "task": task,
        "explanation": explanation,
        "evaluator": evaluator,
        "target": target,
        "samples": rows,
    }


def _explain_gradients(tmp: Path) -> Names:
    """_explain's names, with torch and GradientScorer."""
    import torch

    from onnxferry.explain.gradients import GradientScorer

    return {**_explain(tmp), "torch": torch, "GradientScorer": GradientScorer}


def _resize(tmp: Path) -> Names:
    """An image batch x (torch, 1x3x4x4) and the resize module's names."""
    import torch

    from onnxferry.torchgraph.resize import AxisPlan, Resize, resize

    return {"x": torch.rand(1, 3, 4, 4), "AxisPlan": AxisPlan, "Resize": Resize, "resize": resize}


def _explain_image(tmp: Path) -> Names:
    """An image (CHW, 3x32x32) and its layout."""
    from onnxferry.explain.kinds import Layout

    image = np.random.default_rng(0).uniform(size=(3, 32, 32)).astype(np.float32)
    return {"image": image, "layout": Layout("image", True, None, (3, 32, 32))}


def _lime_image(tmp: Path) -> Names:
    """An HWC image, 16 square superpixels over it and a classifier of image batches; for
    shap, a score of tabular rows, background rows and one row to explain."""
    image = np.random.default_rng(0).uniform(size=(16, 16, 3))
    rows, cols = np.indices((16, 16))
    weights = np.random.default_rng(1).normal(size=(16, 16, 3))

    def classify(images: np.ndarray) -> np.ndarray:
        scores: np.ndarray = (np.asarray(images) * weights).sum(axis=(1, 2, 3))
        return scores[:, None]

    def score(rows: np.ndarray) -> np.ndarray:
        scores: np.ndarray = np.tanh(np.asarray(rows) @ np.arange(1.0, 5.0))
        return scores

    return {
        "image": image,
        "segments": rows // 4 * 4 + cols // 4,
        "classify": classify,
        "score": score,
        "background": np.random.default_rng(2).normal(size=(5, 4)),
        "x": np.ones((1, 4)),
    }


SETUPS: dict[str, Setup] = {
    "onnxferry": _package,
    "onnxferry.atomic": _atomic,
    "onnxferry.bench": _two_models,
    "onnxferry.bench.local": _two_models,
    "onnxferry.bisect": _bisect,
    "onnxferry.check": _one_model,
    "onnxferry.cli": _two_models,
    "onnxferry.cli.options": _nothing,
    "onnxferry.cli.render": _render,
    "onnxferry.cli.signing": _one_model,
    "onnxferry.cli.types": _nothing,
    "onnxferry.cli.view": _one_model,
    "onnxferry.compare": _compare,
    "onnxferry.convert": _convert,
    "onnxferry.convert.against": _against,
    "onnxferry.convert.base": _convert_base,
    "onnxferry.convert.dispatch": _dispatch,
    "onnxferry.convert.factory": _dispatch,
    "onnxferry.convert.onnx": _one_model,
    "onnxferry.convert.legacy_ops": _legacy_model,
    "onnxferry.convert.sklearn": _sklearn,
    "onnxferry.convert.sklearn.estimators": _sklearn,
    "onnxferry.convert.sklearn.boosters": _boosters,
    "onnxferry.convert.sklearn.tasks": _sklearn_tasks,
    "onnxferry.convert.sklearn.prepare": _resampling,
    "onnxferry.convert.sklearn.converters": _sklearn,
    "onnxferry.convert.sklearn.scales": _sklearn,
    "onnxferry.convert.sklearn.booster_files": _boosters,
    "onnxferry.convert.sklearn.export": _sklearn,
    "onnxferry.convert.sklearn.inputs": _sklearn,
    "onnxferry.convert.sklearn.source": _sklearn,
    "onnxferry.convert.sklearn.table": _sklearn_table,
    "onnxferry.convert.sklearn.text": _sklearn_text,
    "onnxferry.convert.torch": _torch_package,
    "onnxferry.convert.torch.custom": _torch_custom,
    "onnxferry.convert.torch.divergence": _torch_divergence,
    "onnxferry.convert.torch.export": _torch_export,
    "onnxferry.convert.torch.inputs": _torch_inputs,
    "onnxferry.convert.torch.state": _torch_state,
    "onnxferry.convert.torch.load": _torch_load,
    "onnxferry.convert.torch.naming": _torch_naming,
    "onnxferry.convert.torch.pretrained": _torch_pretrained,
    "onnxferry.convert.torch.quiet": _torch_quiet,
    "onnxferry.convert.torch.runner": _torch_runner,
    "onnxferry.convert.torch.sources": _torch_sources,
    "onnxferry.convert.torch.specs": _torch_specs,
    "onnxferry.data": _data,
    "onnxferry.data.load": _data,
    "onnxferry.data.npz": _data,
    "onnxferry.data.tensors": _data,
    "onnxferry.data.testsets": _data,
    "onnxferry.data.toml": _data,
    "onnxferry.feeds": _feeds_package,
    "onnxferry.feeds.plan": _feeds_package,
    "onnxferry.feeds.ranges": _feeds_package,
    "onnxferry.locales": _string_normalizer,
    "onnxferry.explain.table": _explain_table,
    "onnxferry.data.rows": _data_rows,
    "onnxferry.convert.sklearn.versions": _sklearn_versions,
    "onnxferry.feeds.sets": _feeds_sets,
    "onnxferry.feeds.values": _feeds_values,
    "onnxferry.feeds.dims": _nothing,
    "onnxferry.errors": _one_model,
    "onnxferry.explain": _explain,
    "onnxferry.explain.evaluate": _explain,
    "onnxferry.explain.gradients": _explain_gradients,
    "onnxferry.explain.inputs": _explain,
    "onnxferry.explain.kinds": _explain,
    "onnxferry.explain.masking": _explain_image,
    "onnxferry.explain.methods": _explain,
    "onnxferry.explain.render": _explain,
    "onnxferry.explain.result": _explain,
    "onnxferry.explain.text": _explain_text,
    "onnxferry.explain.vectorized": _lime_image,
    "onnxferry.cli.explain": _explain,
    "onnxferry.energy": _nothing,
    "onnxferry.denormals": _flushing,
    "onnxferry.golden": _golden,
    "onnxferry.graphs": _graphs,
    "onnxferry.inspection": _one_model,
    "onnxferry.measure": _measure,
    "onnxferry.model": _one_model,
    "onnxferry.optimize": _optimize,
    "onnxferry.optimize.auto": _auto,
    "onnxferry.optimize.candidates": _search_result,
    "onnxferry.optimize.base": _pass_context,
    "onnxferry.optimize.budget": _budget,
    "onnxferry.optimize.calibration": _calibration,
    "onnxferry.native": _nothing,
    "onnxferry.optimize.capture": _nothing,
    "onnxferry.optimize.catalog": _catalog,
    "onnxferry.optimize.chain": _chain,
    "onnxferry.optimize.finals": _search_result,
    "onnxferry.optimize.channel_surgery": _pass_context,
    "onnxferry.optimize.cpu_features": _nothing,
    "onnxferry.optimize.fp16": _pass_context,
    "onnxferry.optimize.fusion": _pass_context,
    "onnxferry.optimize.flush": _pass_context,
    "onnxferry.optimize.graph": _pass_context,
    "onnxferry.optimize.holdout": _pass_context,
    "onnxferry.optimize.mixed": _pass_context,
    "onnxferry.optimize.ort_quantizer": _pass_context,
    "onnxferry.optimize.optuna_search": _auto,
    "onnxferry.optimize.output": _pass_context,
    "onnxferry.optimize.prune": _pass_context,
    "onnxferry.optimize.refit": _refit,
    "onnxferry.optimize.qdq_float": _sensitivity,
    "onnxferry.optimize.quantize": _quantize,
    "onnxferry.optimize.recipe": _catalog,
    "onnxferry.optimize.sensitivity": _sensitivity,
    "onnxferry.optimize.slim": _pass_context,
    "onnxferry.optimize.smooth": _catalog,
    "onnxferry.optimize.verb": _optimize,
    "onnxferry.optimize.weights": _pass_context,
    "onnxferry.optimize.weight_only": _pass_context,
    "onnxferry.ort_crashes": _fp16_encoder,
    "onnxferry.stft": _spectrogram,
    "onnxferry.unfused": _fused_encoder,
    "onnxferry.qdq": _qoperator_cnn,
    "onnxferry.plots": _nothing,
    "onnxferry.parity": _parity,
    "onnxferry.parity.judge": _parity_judge,
    "onnxferry.convert.verdict": _verdict,
    "onnxferry.parity.metrics": _nothing,
    "onnxferry.parity.results": _parity,
    "onnxferry.parity.tolerance": _one_model,
    "onnxferry.registry": _registry_files,
    "onnxferry.registry.access": _registry_files,
    "onnxferry.registry.adding": _registry_files,
    "onnxferry.registry.bundle": _registry_files,
    "onnxferry.registry.catalog": _nothing,
    "onnxferry.registry.client": _registry_follow,
    "onnxferry.registry.core": _registry_files,
    "onnxferry.registry.crypto": _registry_files,
    "onnxferry.registry.diff": _registry_files,
    "onnxferry.registry.follow": _registry_follow,
    "onnxferry.registry.fsck": _registry_files,
    "onnxferry.registry.gates": _registry_files,
    "onnxferry.registry.records": _registry_files,
    "onnxferry.registry.sidebyside": _registry_files,
    "onnxferry.registry.store": _registry_files,
    "onnxferry.registry.tarsafety": _registry_tar,
    "onnxferry.registry.trust": _registry_files,
    "onnxferry.cli.registry": _registry_files,
    "onnxferry.cli.registry_admin": _registry_files,
    "onnxferry.cli.registry_gates": _registry_files,
    "onnxferry.cli.registry_share": _registry_files,
    "onnxferry.package": _one_model,
    "onnxferry.package.base": _one_model,
    "onnxferry.package.checking": _one_model,
    "onnxferry.package.k8s": _one_model,
    "onnxferry.package.kube": _one_model,
    "onnxferry.package.kserve": _one_model,
    "onnxferry.package.observability": _one_model,
    "onnxferry.package.sagemaker": _one_model,
    "onnxferry.package.docker": _one_model,
    "onnxferry.cli.package": _one_model,
    "onnxferry.package.mobile": _one_model,
    "onnxferry.package.openvino": _one_model,
    "onnxferry.package.rayjob": _one_model,
    "onnxferry.batch": _batch,
    "onnxferry.batch.images": _batch_images,
    "onnxferry.batch.local": _batch_local,
    "onnxferry.batch.plan": _batch,
    "onnxferry.batch.sinks": _batch,
    "onnxferry.batch.sources": _batch,
    "onnxferry.batch.summary": _nothing,
    "onnxferry.batch.tables": _batch,
    "onnxferry.cli.batch": _batch,
    "onnxferry.ci": _nothing,
    "onnxferry.doctor": _nothing,
    "onnxferry.cli.doctor": _nothing,
    "onnxferry.cli.ci": _nothing,
    "onnxferry.report": _report,
    "onnxferry.runtime": _runtime,
    "onnxferry.customops": _customops,
    "onnxferry.devices": _runtime,
    "onnxferry.ovsession": _serve_executor,
    "onnxferry.precision": _runtime,
    "onnxferry.safety": _safety,
    "onnxferry.saving": _one_model,
    "onnxferry.serve.app": _serve_app,
    "onnxferry.serve.asgi": _serve_asgi,
    "onnxferry.serve.budget": _serve_budget,
    "onnxferry.serve.busypoll": _serve_busypoll,
    "onnxferry.serve.cache": _serve_cache,
    "onnxferry.serve.catalog": _serve_catalog,
    "onnxferry.serve.config": _serve_config,
    "onnxferry.serve.connections": _serve_connections,
    "onnxferry.serve.endpoint": _serve_endpoint,
    "onnxferry.serve.executor": _serve_executor,
    "onnxferry.serve.grpc_convert": _serve_grpc_convert,
    "onnxferry.serve.grpc_server": _serve_grpc_server,
    "onnxferry.serve.infer": _serve_infer,
    "onnxferry.serve.inflate": _serve_inflate,
    "onnxferry.serve.keys": _serve_keys,
    "onnxferry.serve.metadata": _serve_metadata,
    "onnxferry.serve.metrics": _nothing,
    "onnxferry.serve.openapi": _nothing,
    "onnxferry.serve.parsing": _serve_parsing,
    "onnxferry.serve.protocol": _serve_protocol,
    "onnxferry.serve.registry_source": _registry_files,
    "onnxferry.serve.repository": _serve_repository,
    "onnxferry.serve.responses": _serve_responses,
    "onnxferry.serve.sagemaker": _serve_sagemaker,
    "onnxferry.serve.timers": _serve_timers,
    "onnxferry.serve.routes": _nothing,
    "onnxferry.serve.scan": _serve_scan,
    "onnxferry.serve.registry_http": _registry_http,
    "onnxferry.serve.server": _serve_server,
    "onnxferry.serve.settings": _nothing,
    "onnxferry.serve.shm": _serve_shm,
    "onnxferry.serve.takeover": _serve_takeover,
    "onnxferry.serve.tensors": _serve_tensors,
    "onnxferry.serve.versions": _serve_repository,
    "onnxferry.signature": _signature,
    "onnxferry.indexing": _indexing,
    "onnxferry.signing": _one_model,
    "onnxferry.signing.certificates": _signing_pki,
    "onnxferry.signing.files": _one_model,
    "onnxferry.signing.keys": _nothing,
    "onnxferry.signing.signer": _signing_keys,
    "onnxferry.signing.verifier": _signed_model,
    "onnxferry.learn.shards": _federated_shard,
    "onnxferry.learn": _learn,
    "onnxferry.learn.finetune": _learn,
    "onnxferry.torchgraph": _learn,
    "onnxferry.torchgraph.ops": _learn,
    "onnxferry.torchgraph.resize": _resize,
    "onnxferry.learn.surgery": _learn,
    "onnxferry.torchgraph.module": _learn,
    "onnxferry.learn.training": _learn,
    "onnxferry.cli.finetune": _learn,
    "onnxferry.view": _view,
    "onnxferry.view.diff": _view,
    "onnxferry.view.graph": _view,
    "onnxferry.view.inventory": _view,
    "onnxferry.view.labels": _view,
    "onnxferry.view.netron": _view,
    "onnxferry.view.render": _view,
}
"""Per module: what its example needs, made in the current (temporary) directory."""

TENSORFLOW = "imports TensorFlow (about 20 s) and converts with tf2onnx"
LOAD_TEST = (
    "needs a server at the fixed address it names and runs 5 s per concurrency level; "
    "tests/test_bench_remote.py runs load_test against a live server"
)
FLOWER = (
    "runs Flower's rounds on a Ray instance of its own (a minute here); "
    "tests/test_federated.py runs `ferry federated` on digits split across three clients"
)
SKIP: dict[str, str] = {
    "onnxferry.serve.explaining": "an HTTP exchange, not Python; tests/test_serve_explain.py "
    "sends it to a real server",
    "onnxferry.convert.keras": f"{TENSORFLOW}; tests/test_convert_keras.py runs these loaders",
    "onnxferry.convert.savedmodel": f"{TENSORFLOW}; tests/test_convert_keras.py runs it",
    "onnxferry.convert.graphdef": f"{TENSORFLOW}; tests/test_convert_graphdef.py runs it",
    "onnxferry.convert.checkpoint": f"{TENSORFLOW}; tests/test_convert_checkpoint.py runs it",
    "onnxferry.convert.tf_function": f"{TENSORFLOW}; tests/test_convert_graphdef.py runs it",
    "onnxferry.convert.tf_common": f"{TENSORFLOW}; its helpers run under the Keras and TFLite "
    "tests",
    "onnxferry.convert.tflite": f"{TENSORFLOW}; tests/test_convert_tflite.py runs the loader",
    "onnxferry.package.tflite": "imports TensorFlow in a worker and converts with onnx2tf (11 s "
    "under make test); tests/test_package_tflite.py packages that model and others",
    "onnxferry.convert.tf2onnx_ops": f"{TENSORFLOW}; tests/test_convert_keras.py converts an "
    "exact GELU (Erfc) with it",
    "onnxferry.convert.tflite_rewrite": f"{TENSORFLOW}; tests/test_convert_tflite.py rewrites "
    "a sparse model and an FFT",
    "onnxferry.convert.tflite_state": f"{TENSORFLOW}; tests/test_convert_tflite_state.py "
    "rewrites ESPHome's streaming wake word",
    "onnxferry.convert.torch.export_errors": "a fragment of an exporter's except clause; "
    "tests/test_convert_torch.py checks the one-line errors",
    "onnxferry.deploy": "converts a torch factory at 224x224, then runs the whole --auto "
    "search and a bench: far past this test's time; tests/test_deploy.py deploys a tiny model",
    "onnxferry.bench.remote": LOAD_TEST,
    "onnxferry.batch.ray_engine": "starts a Ray instance (about 15 s here); "
    "tests/test_batch_ray.py runs the engine on ray.init(num_cpus=2)",
    "onnxferry.learn.federated": FLOWER,
    "onnxferry.learn.flower": FLOWER,
    "onnxferry.cli.federated": FLOWER,
    "onnxferry.cli.follow": "needs a `ferry registry serve` at the address it names and a "
    "device folder under /opt; tests/test_registry_follow.py runs both verbs",
}
"""Modules whose usage example does not run here, and why."""


def test_every_usage_example_is_run_or_skipped_with_a_reason() -> None:
    missing = sorted(set(EXAMPLES) - set(SETUPS) - set(SKIP))
    assert not missing, f"add a setup to SETUPS (or a reason to SKIP) for {missing}"
    stale = sorted((set(SETUPS) | set(SKIP)) - set(EXAMPLES))
    assert not stale, (
        f"no usage example (an indented block) in {stale}: remove them from SETUPS / SKIP, or "
        "put prose after an example that ends the docstring (a formatter dedents a docstring "
        "whose lines after the first are all indented)"
    )
    both = sorted(set(SETUPS) & set(SKIP))
    assert not both, f"in both SETUPS and SKIP: {both}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_usage_example_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name in SKIP:
        pytest.skip(SKIP[name])
    if name not in SETUPS:
        pytest.fail(f"{name} has a usage example but no entry in SETUPS or SKIP")
    monkeypatch.chdir(tmp_path)
    # The module's globals, plus what every example may take as given.
    namespace: Names = {"onnxferry": onnxferry, "Path": Path}
    namespace.update(vars(importlib.import_module(name)))
    namespace.update(SETUPS[name](tmp_path))
    _run(name, EXAMPLES[name], namespace)


@pytest.mark.parametrize(
    ("doc", "block"),
    [
        ("Title.\n\n    a = 1\n    b = 2\n\nMore.\n\n    c = 3\n", "a = 1\nb = 2\n"),
        ("Title.\n\n    for x in y:\n        z\n\n    w\nText.", "for x in y:\n    z\n\nw\n"),
        ("Title.\n\nNo example here.\n  - a list item\n", None),
    ],
)
def test_usage_block_is_the_first_indented_block(doc: str, block: str | None) -> None:
    assert usage_block(doc) == block


def test_doctest_examples_are_checked() -> None:
    _run("m", ">>> 1 + 1\n2\n", {})
    with pytest.raises(AssertionError, match="1 doctest example"):
        _run("m", ">>> 1 + 1\n3\n", {})

"""Custom operators in every verb: onnxruntime-extensions' prebuilt ones (a string operator),
the user's Python ones (``--custom-ops``, refused without ``--trust-custom-ops``), a torch
custom layer exported through ``--custom-export`` and checked for parity, and the one line
(exit 2) for an operator no runtime implements."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxferry
from onnxferry.cli import main
from onnxferry.customops import load_custom_ops, loaded_custom_ops
from onnxferry.errors import UnknownOperatorError, UsageError
from onnxferry.model import Model
from onnxferry.package import package
from onnxferry.runtime import OrtRunner
from tests.helpers import free_port, save, wait_ready

FERRY = Path(sys.executable).with_name("ferry")
CONTRIB = "ai.onnx.contrib"
SWISH = "FerryTestSwish"  # a Python operator's type: one registry per process, each file its own
EXPORTED = "FerryTestExportedSwish"


def string_length_model() -> onnx.ModelProto:
    """text (strings) -> the extensions' StringLength -> length (int64)."""
    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])
    length = helper.make_tensor_value_info("length", TensorProto.INT64, ["n"])
    node = helper.make_node("StringLength", ["text"], ["length"], domain=CONTRIB)
    graph = helper.make_graph([node], "strlen", [text], [length])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def python_op_model(op_type: str = SWISH, *, with_strings: bool = False) -> onnx.ModelProto:
    """x (float [n, 4]) -> the Python operator ``op_type`` -> y; ``with_strings`` feeds it
    the lengths of a string input instead (StringLength, Cast: both kinds of custom op)."""
    nodes = [helper.make_node(op_type, ["x"], ["y"], domain=CONTRIB)]
    if with_strings:
        source = helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])
        nodes[:0] = [
            helper.make_node("StringLength", ["text"], ["length"], domain=CONTRIB),
            helper.make_node("Cast", ["length"], ["x"], to=TensorProto.FLOAT),
        ]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    else:
        source = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph(nodes, "pyop", [source], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def standard_swish_model() -> onnx.ModelProto:
    """The same function as the Python operator, in standard operators: x * sigmoid(x)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "swish", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_ops(path: Path, op_type: str = SWISH) -> Path:
    """A --custom-ops file: ``op_type`` as an onnx_op computing swish in numpy."""
    path.write_text(
        textwrap.dedent(f"""
            import numpy as np
            from onnxruntime_extensions import PyCustomOpDef, onnx_op

            @onnx_op(
                op_type="{op_type}",
                inputs=[PyCustomOpDef.dt_float],
                outputs=[PyCustomOpDef.dt_float],
            )
            def swish(x):
                return (x / (1.0 + np.exp(-x))).astype(np.float32)
        """)
    )
    return path


def swish(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / (1.0 + np.exp(-x)), dtype=np.float32)


@pytest.fixture
def strlen(tmp_path: Path) -> Path:
    return save(string_length_model(), tmp_path / "strlen.onnx")


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# --- onnxruntime-extensions' prebuilt operators -------------------------------------------


def test_a_prebuilt_string_operator_runs_through_the_api(strlen: Path, tmp_path: Path) -> None:
    runner = OrtRunner(Model.load(strlen))
    out = runner.run({"text": np.array(["ab", "héllo", ""], dtype=object)})
    assert out["length"].tolist() == [2, 5, 0]
    report = onnxferry.check(strlen)
    assert report.ok, [f.detail for f in report.result.blockers]
    bench = onnxferry.bench([strlen], iterations=5, warmup=1)
    assert [r.batch for r in bench.result.results] == [1]
    copy = save(string_length_model(), tmp_path / "copy.onnx")
    assert onnxferry.compare(strlen, copy).ok


def test_a_prebuilt_string_operator_runs_through_the_cli(strlen: Path, tmp_path: Path) -> None:
    copy = save(string_length_model(), tmp_path / "copy.onnx")
    assert main(["check", str(strlen)]) == 0
    assert main(["bench", str(strlen), "--iterations", "5", "--warmup", "1"]) == 0
    assert main(["compare", str(strlen), str(copy)]) == 0


def test_a_prebuilt_string_operator_packages_for_mobile(strlen: Path, tmp_path: Path) -> None:
    """ONNX Runtime's ORT-format converter and the .ort's check both get the library (the
    converter refused the op as unregistered), and the report says the app needs it."""
    report = package(strlen, "mobile", tmp_path / "mobile")
    assert report.ok, [c.detail for c in report.result.checks]
    assert any("onnxruntime-extensions' operators (ai.onnx.contrib)" in n for n in report.notes)
    assert (tmp_path / "mobile" / "strlen.ort").is_file()


def test_regex_operators_match_after_tensorflow_is_loaded(tmp_path: Path) -> None:
    """TensorFlow exports its own RE2; the extensions' library, loaded after it without
    binding to itself, called TensorFlow's and its StringRegexReplace matched nothing. A child
    process imports TensorFlow first, as `ferry convert` of a Keras model does."""
    pytest.importorskip("tensorflow")
    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])
    clean = helper.make_tensor_value_info("clean", TensorProto.STRING, ["n"])
    pattern = numpy_helper.from_array(np.array(["[!,.?]"], dtype=object), "pattern")
    rewrite = numpy_helper.from_array(np.array([""], dtype=object), "rewrite")
    node = helper.make_node(
        "StringRegexReplace", ["text", "pattern", "rewrite"], ["clean"], domain=CONTRIB
    )
    graph = helper.make_graph([node], "strip", [text], [clean], [pattern, rewrite])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB, 1)]
    path = save(helper.make_model(graph, opset_imports=opsets), tmp_path / "strip.onnx")
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorflow  # noqa: F401  (first, as in a Keras conversion)
        from onnxferry.model import Model
        from onnxferry.runtime import OrtRunner

        runner = OrtRunner(Model.load(sys.argv[1]))
        texts = np.array(["Hello, World!", "ok?", "!!"], dtype=object)
        print(runner.run({"text": texts})["clean"].tolist())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['Hello World', 'ok', '']"


@pytest.mark.slow  # a child process that imports onnxruntime-extensions (~10 s)
def test_serve_answers_with_a_prebuilt_and_a_python_operator(tmp_path: Path) -> None:
    model = save(python_op_model(with_strings=True), tmp_path / "mixed.onnx")
    ops = write_ops(tmp_path / "ops.py")
    port = free_port()
    command = [str(FERRY), "serve", str(model), "--port", str(port), "--custom-ops", str(ops)]
    process = subprocess.Popen(
        [*command, "--trust-custom-ops"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_ready(port, process, limit=120)
        text = {"name": "text", "datatype": "BYTES", "shape": [3], "data": ["ab", "héllo", ""]}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v2/models/mixed/infer", body=json.dumps({"inputs": [text]}))
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    finally:
        process.kill()
        process.communicate()
    assert response.status == 200, body
    (y,) = body["outputs"]
    np.testing.assert_allclose(y["data"], swish(np.array([2.0, 5.0, 0.0])), rtol=1e-6)


# --- the user's Python operators ----------------------------------------------------------


def test_python_operators_are_refused_without_the_trust_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(python_op_model(), tmp_path / "pyop.onnx")
    ops = write_ops(tmp_path / "ops.py")
    assert main(["bench", str(model), "--custom-ops", str(ops), "--iterations", "3"]) == 2
    line = _one_error_line(capsys)
    assert "ops.py: custom operators are Python code" in line
    assert "--trust-custom-ops" in line
    with pytest.raises(UsageError, match="trust"):
        load_custom_ops(ops)


def test_python_operators_run_in_every_verb_with_the_trust_flag(tmp_path: Path) -> None:
    model = save(python_op_model(), tmp_path / "pyop.onnx")
    standard = save(standard_swish_model(), tmp_path / "standard.onnx")
    ops = write_ops(tmp_path / "ops.py")
    trusted = ["--custom-ops", str(ops), "--trust-custom-ops"]
    assert main(["bench", str(model), "--iterations", "3", "--warmup", "1", *trusted]) == 0
    assert main(["check", str(model), *trusted]) == 0
    assert main(["compare", str(model), str(standard), *trusted]) == 0  # Python vs standard ops
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[pass]]\nname = "ort_graph"\n')
    out = str(tmp_path / "opt.onnx")
    assert main(["optimize", str(model), "-o", out, "--recipe", str(recipe), *trusted]) == 0
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32))
    shards = tmp_path / "shards"
    assert main(["batch", str(model), str(rows), "-o", str(shards), *trusted]) == 0
    explained = ["explain", str(model), "--inputs", str(rows), "--method", "occlusion"]
    assert main([*explained, "--max-evals", "60", "-o", str(tmp_path / "why"), *trusted]) == 0
    assert loaded_custom_ops()[str(ops.resolve())] == [SWISH]
    assert load_custom_ops(ops, trust=True) == [SWISH]  # once per file: not run again
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(OrtRunner(Model.load(model)).run({"x": x})["y"], swish(x), 1e-6)


def test_a_file_without_operators_or_that_fails_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("import numpy\n")
    with pytest.raises(UsageError, match="defines no custom operator"):
        load_custom_ops(empty, trust=True)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(onnxferry.InputError, match="RuntimeError: no GPU here"):
        load_custom_ops(broken, trust=True)


# --- an operator no runtime implements ----------------------------------------------------


def _unknown(op: str, domain: str, opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17 if domain else opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, opset))
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(
    ("op", "domain", "opset", "named"),
    [
        ("Frobnicate", "my.domain", 3, "my.domain::Frobnicate (opset 3)"),
        ("NeverDefined", CONTRIB, 1, "ai.onnx.contrib::NeverDefined (opset 1)"),
        ("NoSuchOp", "", 17, "ai.onnx::NoSuchOp (opset 17)"),
    ],
)
def test_an_unknown_operator_is_one_line_naming_it_and_three_ways(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    op: str,
    domain: str,
    opset: int,
    named: str,
) -> None:
    path = save(_unknown(op, domain, opset), tmp_path / "unknown.onnx")
    assert main(["bench", str(path), "--iterations", "3"]) == 2
    line = _one_error_line(capsys)
    assert f"cannot load {path}: no runtime here implements its operator {named};" in line
    for way in ("onnxruntime-extensions", "--custom-ops OPS.py --trust-custom-ops", "shared lib"):
        assert way in line
    with pytest.raises(UnknownOperatorError) as caught:
        OrtRunner(Model.load(path))
    assert (caught.value.operator, caught.value.domain, caught.value.opset) == (
        op,
        domain or "ai.onnx",
        opset,
    )
    findings = {f.check: f for f in onnxferry.check(path).result.findings}
    assert named in findings["load on cpu"].detail


# --- a torch custom layer -----------------------------------------------------------------

NET = """
import torch

try:  # a torch.library operator is defined once per process
    swish = torch.ops.ferrytest.swish
except AttributeError:
    @torch.library.custom_op("ferrytest::swish", mutates_args=())
    def swish(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)

    @swish.register_fake
    def _(x):
        return torch.empty_like(x)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.ops.ferrytest.swish(self.fc(x))


def make():
    torch.manual_seed(0)
    return Net(), (torch.randn(2, 4),)
"""

RULES = f"""
import onnx
import onnxscript
import torch
from onnxscript import opset18 as op

contrib = onnxscript.values.Opset("{CONTRIB}", 1)
schema = onnx.defs.OpSchema(
    "{EXPORTED}", "{CONTRIB}", 1,
    inputs=[onnx.defs.OpSchema.FormalParameter("X", "T")],
    outputs=[onnx.defs.OpSchema.FormalParameter("Y", "T")],
    type_constraints=[("T", ["tensor(float)"], "")],
)
custom_swish = onnxscript.values.Op(contrib, "{EXPORTED}", schema)


def swish_onnx(x):  # dynamo: the custom-domain operator
    return custom_swish(x)


def swish_symbolic(g, x):  # TorchScript: standard operators
    return g.op("Mul", x, g.op("Sigmoid", x))


custom_translation_table = {{torch.ops.ferrytest.swish.default: swish_onnx}}
symbolics = {{"ferrytest::swish": swish_symbolic}}
"""


@pytest.fixture(scope="module")
def custom_layer(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str]]:
    """(the factory ``net.py:make``, its rules file, the trusted --custom-ops options). One
    ops file for the module: a second file defining the same operator is refused, and its
    kernel would still be registered in this process."""
    pytest.importorskip("torch")
    tmp_path = tmp_path_factory.mktemp("custom-layer")
    (tmp_path / "net.py").write_text(NET)
    rules = tmp_path / "rules.py"
    rules.write_text(RULES)
    ops = write_ops(tmp_path / "ops.py", EXPORTED)
    return f"{tmp_path / 'net.py'}:make", rules, ["--custom-ops", str(ops), "--trust-custom-ops"]


def test_a_custom_layer_exports_through_custom_export_with_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], custom_layer: tuple[str, Path, list[str]]
) -> None:
    source, rules, trusted = custom_layer
    out = tmp_path / "net.onnx"
    args = ["convert", source, "-o", str(out), "--custom-export", str(rules), "--json"]
    assert main([*args, *trusted]) == 0
    report = json.loads(capsys.readouterr().out)
    attempts = {a["exporter"]: a for a in report["result"]["attempts"]}
    for attempt in attempts.values():  # dynamo: the Python operator; TorchScript: standard ops
        assert attempt["status"] in ("chosen", "passed"), attempt["error"]
        assert attempt["parity"]["ok"], attempt["parity"]
    assert report["result"]["details"]["custom_export"] == str(rules)
    ops_used = Model.load(out).ops_histogram
    assert f"{CONTRIB}::{EXPORTED}" in ops_used or "Sigmoid" in ops_used


def test_deploy_takes_custom_export_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], custom_layer: tuple[str, Path, list[str]]
) -> None:
    source, rules, trusted = custom_layer
    outdir = tmp_path / "deployed"
    args = ["deploy", source, "-o", str(outdir), "--batch", "1"]
    assert main([*args, "--custom-export", str(rules), *trusted, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    conversion = report["result"]["stages"][0]["result"]
    assert conversion["details"]["custom_export"] == str(rules)
    assert Model.load(outdir / "model.onnx").signature.input_names


def test_a_custom_layer_without_translations_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(NET)
    rules = tmp_path / "rules.py"
    rules.write_text("symbols = {}\n")
    out = str(tmp_path / "net.onnx")
    source = f"{tmp_path / 'net.py'}:make"
    assert main(["convert", source, "-o", out, "--custom-export", str(rules)]) == 2
    assert "defines neither custom_translation_table nor symbolics" in _one_error_line(capsys)


def test_an_exported_operator_no_runtime_implements_stops_conversion_with_exit_2(
    tmp_path: Path,
) -> None:
    from onnxferry.convert import convert
    from onnxferry.convert.base import Candidate, Source

    standard = Model.load(save(standard_swish_model(), tmp_path / "standard.onnx"))
    unknown = python_op_model("FerryTestNeverImplemented")
    source = Source(
        framework="onnx",
        description="a source whose exporter writes a custom operator",
        reference=OrtRunner(standard),
        candidates=[Candidate("custom exporter", lambda path: onnx.save(unknown, str(path)))],
    )
    with pytest.raises(UnknownOperatorError) as caught:
        convert(source, tmp_path / "out.onnx")
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(
        "custom exporter exported operator ai.onnx.contrib::FerryTestNeverImplemented (opset 1), "
        "which no runtime here implements, so parity with"
    )
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow  # a child process that imports onnxruntime-extensions (~10 s)
def test_two_files_defining_one_operator_are_refused(tmp_path: Path) -> None:
    """In a child process: the second definition is already in onnxruntime-extensions'
    registry when it is found, and it spoils that process's sessions of the domain."""
    model = save(python_op_model("FerryTestTwice"), tmp_path / "twice.onnx")
    first = write_ops(tmp_path / "first.py", "FerryTestTwice")
    second = write_ops(tmp_path / "second.py", "FerryTestTwice")
    command = [str(FERRY), "bench", str(model), "--iterations", "3", "--trust-custom-ops"]
    command += ["--custom-ops", str(first), "--custom-ops", str(second)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"second.py defines FerryTestTwice again (first defined in {first})" in lines[0]


def test_an_operator_without_a_kernel_for_its_types_says_so() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.INT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.INT16, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu16", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnknownOperatorError, match="rewrite the model") as caught:
        OrtRunner(Model.from_proto(proto))
    assert caught.value.message == (
        "onnxruntime cannot load relu16: no runtime here has a kernel of its operator "
        "ai.onnx::Relu (opset 17) for these input types"
    )


def test_a_bfloat16_model_is_told_to_export_in_float32() -> None:
    """A model kept in bfloat16 (``module.to(torch.bfloat16)``, as LLM checkpoints are
    saved): ONNX Runtime's CPU has no bfloat16 Gemm. The error names the type and the way
    out, not custom-op libraries."""
    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 2])
    weight = helper.make_tensor("w", TensorProto.BFLOAT16, [4, 2], [0] * 8)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "bf16", [x], [y], [weight]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnknownOperatorError) as caught:
        OrtRunner(Model.from_proto(proto))
    error = caught.value
    assert error.message == (
        "onnxruntime cannot load bf16: no runtime here has a kernel of its operator "
        "ai.onnx::Gemm (opset 17) in bfloat16"
    )
    assert error.types == "bfloat16" and "module.float()" in (error.hint or "")

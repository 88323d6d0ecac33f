"""The `ferry` verbs end to end: output, exit codes, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from onnxferry.data import save_test_case
from onnxferry.runtime import runtime_limits
from tests.helpers import Run, mlp, save


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(mlp(), tmp_path / "mlp" / "model.onnx")


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ferry: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the verbs ------------------------------------------------------------------------


def test_inspect_prints_tables_and_json(ferry: Run, model: Path) -> None:
    code, out, _ = ferry("inspect", model)
    assert code == 0 and "MatMul" in out and "probs" in out
    # printed as written: rich would read "[batch, 4]" as a markup tag and drop it
    assert "[batch, 4]" in out and "[batch, 3]" in out
    code, out, _ = ferry("inspect", model, "--json")
    data = json.loads(out)
    assert data["verb"] == "inspect" and data["result"]["parameter_count"] == 4 * 8 + 8 + 8 * 3 + 3


def test_a_long_cell_is_printed_whole_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    """optimize's "why" cell ran past the 240 characters of a piped table and lost its end in
    the log (rich crops a cell that may not wrap)."""
    from onnxferry.cli.render import Listing, print_tables
    from onnxferry.report import Report, Table

    why = " ".join(f"reason{i}" for i in range(60)) + " END"
    table = Table("choice", ["candidate", "speedup", "why"], [["int8_dynamic", 1.234, why]])
    print_tables(Report("optimize", Listing([table])))
    out = capsys.readouterr().out
    assert "END" in out and all(f"reason{i} " in out for i in range(60)), out
    assert "int8_dynamic" in out and "1.234" in out  # short cells stay on one line
    assert max(len(line) for line in out.splitlines()) <= 240


def test_inspect_shortens_a_long_metadata_value_in_the_table_only(
    ferry: Run, tmp_path: Path
) -> None:
    """PaddleOCR keeps its character dictionary in the metadata: 6623 lines printed whole."""
    proto = mlp()
    characters = "\n".join(chr(0x4E00 + i) for i in range(5000))
    onnx.helper.set_model_props(proto, {"character": characters, "author": "ocr team"})
    path = save(proto, tmp_path / "ocr.onnx")
    code, out, _ = ferry("inspect", path)
    assert code == 0 and len(out.splitlines()) < 60, out[:2000]
    assert "(5,000 lines, 9,999 characters)" in out and "ocr team" in out
    code, out, _ = ferry("inspect", path, "--json")
    assert json.loads(out)["result"]["metadata_props"]["character"] == characters


def test_inspect_reads_a_directory(ferry: Run, model: Path) -> None:
    code, out, _ = ferry("inspect", model.parent, "--json")
    assert code == 0 and json.loads(out)["result"]["name"] == "mlp"


def test_check_ok_and_report_file(ferry: Run, model: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "check.json"
    code, out, err = ferry("check", model, "--report", target)
    assert code == 0 and "check: ok" in out
    assert json.loads(target.read_text())["ok"] is True
    assert f"report: {target}" in err


def test_compare_same_model_passes(ferry: Run, model: Path) -> None:
    code, out, _ = ferry("compare", model, model, "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True
    assert data["result"]["outputs"][0]["max_abs"] == 0.0


def test_compare_one_model_on_two_providers(ferry: Run, model: Path) -> None:
    code, out, _ = ferry("compare", model, "--provider-b", "cpu", "--samples", "2", "--json")
    assert code == 0 and json.loads(out)["result"]["samples"] == 2


def test_compare_different_models_fails_with_exit_1(
    ferry: Run, model: Path, tmp_path: Path
) -> None:
    other = save(mlp(noise=0.2), tmp_path / "other.onnx")
    code, out, _ = ferry("compare", model, other, "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["result"]["divergence"]["tensor"] == "l0"


def test_compare_with_inputs_and_tolerance(ferry: Run, model: Path, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.ones((3, 4), np.float32))
    other = save(mlp(noise=0.2), tmp_path / "other.onnx")
    code, _, _ = ferry("compare", model, other, "--inputs", feeds, "--atol", "10")
    assert code == 0


def test_test_verb_on_golden_data(ferry: Run, model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (probs,) = ort.InferenceSession(str(model)).run(None, {"x": x})
    save_test_case(tmp_path / "golden" / "test_data_set_0", {"x": x}, {"probs": probs})
    save_test_case(tmp_path / "golden" / "test_data_set_1", {"x": x}, {"probs": probs + 0.5})
    code, out, _ = ferry("test", model, tmp_path / "golden", "--json")
    data = json.loads(out)
    assert code == 1
    assert [c["passed"] for c in data["result"]["cases"]] == [True, False]


def test_test_verb_defaults_to_the_model_zoo_layout(ferry: Run) -> None:
    example = Path(__file__).parents[1] / "examples" / "tiny_classifier"
    code, out, _ = ferry("test", example, "--json")
    data = json.loads(out)
    assert code == 0 and data["result"]["sets"] == 2
    assert data["result"]["data"] == str(example)


def test_bench_json_and_csv(ferry: Run, model: Path) -> None:
    code, out, _ = ferry("bench", model, model, "--batch", "1,4", "--iterations", "20", "--json")
    results = json.loads(out)["result"]["results"]
    assert code == 0 and len(results) == 4
    code, out, _ = ferry("bench", model, "--iterations", "5", "--warmup", "1", "--csv")
    assert code == 0 and len(out.strip().splitlines()) == 2


def test_version_and_help(ferry: Run) -> None:
    code, out, _ = ferry("--version")
    assert code == 0 and "ferry" in out
    code, out, _ = ferry("--help")
    assert code == 0
    for verb in ("inspect", "check", "compare", "test", "bench"):
        assert verb in out


# --- bad input: one line, the right exit code, nothing written -------------------------


def _escape_model(tmp_path: Path) -> Path:
    proto = mlp()
    w1 = proto.graph.initializer[0]
    (tmp_path / "secret.bin").write_bytes(w1.raw_data)
    w1.ClearField("raw_data")
    w1.data_location = TensorProto.EXTERNAL
    w1.external_data.add(key="location", value="../secret.bin")
    return save(proto, tmp_path / "escape" / "model.onnx")


def _truncated(tmp_path: Path) -> Path:
    data = mlp().SerializeToString()
    return _written(tmp_path / "truncated.onnx", data[: len(data) // 2])


def _too_new_ir(tmp_path: Path) -> Path:
    proto = mlp()
    proto.ir_version = runtime_limits()[0] + 1
    return save(proto, tmp_path / "new.onnx")


def _too_new_opset(tmp_path: Path) -> Path:
    proto = mlp()
    proto.ir_version, max_opset = runtime_limits()
    proto.opset_import[0].version = max_opset + 1
    return save(proto, tmp_path / "new-opset.onnx")


def _written(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _empty_dir(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


BAD_MODELS: dict[str, Callable[[Path], Path]] = {
    "nonexistent": lambda p: p / "nope.onnx",
    "directory-without-model": _empty_dir,
    "empty-file": lambda p: _written(p / "e.onnx", b""),
    "random-bytes": lambda p: _written(p / "r.onnx", np.random.default_rng(0).bytes(3000)),
    "truncated": _truncated,
    "external-data-escape": _escape_model,
    "ir-too-new": _too_new_ir,
    "opset-too-new": _too_new_opset,
}


@pytest.mark.parametrize("verb", ["inspect", "compare", "test", "bench"])
@pytest.mark.parametrize("bad", BAD_MODELS, ids=str)
def test_bad_model_is_one_line_exit_2_nothing_written(
    ferry: Run, tmp_path: Path, verb: str, bad: str
) -> None:
    path = BAD_MODELS[bad](tmp_path)
    report = tmp_path / "report.json"
    args: list[object] = {
        "inspect": ["inspect", path],
        "compare": ["compare", path, path],
        "test": ["test", path, tmp_path],
        "bench": ["bench", path, "--iterations", "2"],
    }[verb]
    code, out, err = ferry(*args, "--report", report)
    if bad in ("ir-too-new", "opset-too-new") and verb == "inspect":
        # inspect describes without running; the IR is shown, and check blocks it (below).
        assert code == 0
        assert json.loads(report.read_text())["result"]["ir_version"] >= 10
        return
    assert code == 2, err
    line = _one_error_line(err)
    assert str(path.name) in line or "model" in line
    assert not report.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_check_reports_escape_and_new_ir_as_blocking(ferry: Run, tmp_path: Path) -> None:
    for path in (_escape_model(tmp_path), _too_new_ir(tmp_path), _too_new_opset(tmp_path)):
        code, out, _ = ferry("check", path)
        assert code == 1 and "FAIL" in out


def test_check_unreadable_model_is_exit_2(ferry: Run, tmp_path: Path) -> None:
    code, _, err = ferry("check", _truncated(tmp_path))
    assert code == 2
    _one_error_line(err)


def _feeds_file(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "feeds.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.ones((2, 4), np.float64)}, "'x' expects dtype float32"),
        ({"x": np.ones((4,), np.float32)}, "'x' expects rank 2"),
        ({"x": np.ones((2, 5), np.float32)}, "dim 1 must be 4"),
        ({"x": np.ones((2, 4), np.float32), "z": np.ones(1)}, "'z'"),
        ({"y": np.ones((2, 4), np.float32)}, "'y'"),
    ],
    ids=["dtype", "rank", "dim", "extra-name", "wrong-name"],
)
def test_bad_feed_is_one_line_exit_2(
    ferry: Run, model: Path, tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    code, _, err = ferry("compare", model, model, "--inputs", _feeds_file(tmp_path, **arrays))
    assert code == 2
    assert message in _one_error_line(err)


def test_golden_set_missing_an_input_is_exit_2(ferry: Run, tmp_path: Path) -> None:
    two_inputs = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[n] a, float[n] b) => (float[n] y) { y = Add(a, b) }
        """
    )
    path = save(two_inputs, tmp_path / "add.onnx")
    save_test_case(tmp_path / "g" / "test_data_set_0", {"a": np.ones(2, np.float32)}, {})
    code, _, err = ferry("test", path, tmp_path / "g")
    assert code == 2
    assert "'b'" in _one_error_line(err)


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "{m}", "--batch", "one"],
        ["bench", "{m}", "--iterations", "5", "--duration", "1"],
        ["bench", "{m}", "--batch", "0"],
        ["bench", "{m}", "--provider", "tpu"],
        ["compare", "{m}"],
        ["compare", "{m}", "{m}", "--dim", "batch"],
        ["compare", "{m}", "{m}", "--atol", "-1"],
    ],
    ids=[
        "batch-text",
        "iterations-and-duration",
        "batch-zero",
        "provider",
        "no-b",
        "dim-syntax",
        "negative-atol",
    ],
)
def test_usage_errors_are_exit_2(ferry: Run, model: Path, args: list[str]) -> None:
    code, _, err = ferry(*[a.format(m=model) for a in args])
    assert code == 2
    _one_error_line(err)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["compare", "{m}", "{m}", "--seed=-1"], "--seed takes an integer from 0 to 4294967295"),
        (["explain", "{m}", "--inputs", "{x}", "--seed", str(2**32)], "--seed takes an integer"),
        (["compare", "{m}", "{m}", "--threads", str(10**20)], "threads must be from 1 to 1024"),
        (["bench", "{m}", "--threads", "1,5000"], "threads must be from 1 to 1024, got 5000"),
        (["batch", "{m}", "{x}", "-o", "{out}", "--threads", "0"], "threads must be from 1"),
        (["batch", "{m}", "{x}", "-o", "{out}", "--workers", str(10**20)], "workers must be"),
        (["compare", "{m}", "{m}", "--samples", str(10**20)], "of memory available"),
    ],
    ids=[
        "negative",
        "past-32-bits",
        "past-64-bits",
        "bench",
        "batch",
        "batch-workers",
        "samples-past-memory",
    ],
)
def test_counts_and_seeds_out_of_range_are_one_line(
    ferry: Run, model: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    """Found by giving every option of the fast verbs bad values: a negative seed was
    numpy's ValueError and threads past 2**31 ONNX Runtime's TypeError (internal errors), a
    seed past 2**32 lime's and shap's, and 10**20 samples made input sets until memory ran
    out."""
    np.savez(tmp_path / "x.npz", x=np.ones((2, 4), np.float32))
    values = {"m": model, "x": tmp_path / "x.npz", "out": tmp_path / "out"}
    code, _, err = ferry(*[a.format(**values) for a in args])
    assert code == 2
    assert words in _one_error_line(err)


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "{m}", "{m}", "--inputs", "{x}"],  # said "compare: ok", comparing nothing
        ["test", "{m}", "{x}"],  # said "ran"
        ["bench", "{m}", "--inputs", "{x}", "--iterations", "3"],  # timed empty runs
    ],
    ids=["compare", "test", "bench"],
)
def test_inputs_of_0_rows_are_one_line(
    ferry: Run, model: Path, tmp_path: Path, args: list[str]
) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((0, 4), np.float32))
    code, _, err = ferry(*[a.format(m=model, x=tmp_path / "x.npz") for a in args])
    assert code == 2
    assert "every input is empty (0 values)" in _one_error_line(err)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["batch", "{m}", "{x}", "-o", "{file}/out"], "Not a directory"),
        (["keygen", "-o", "{long}"], "File name too long"),
        (["ci", "init", "github", "-o", "{file}/ci.yml", "--model", "{m}"], "File exists"),
        (["graph", "{m}", "-o", "{long}.svg"], "File name too long"),
    ],
    ids=["batch-under-a-file", "keygen-long-name", "ci-under-a-file", "graph-long-name"],
)
def test_an_output_path_that_cannot_be_written_is_one_line(
    ferry: Run, model: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    """The first three were internal errors: the OSError of a mkdir or a write under the user's
    path (graph's atomic write already said so)."""
    np.savez(tmp_path / "x.npz", x=np.ones((2, 4), np.float32))
    (tmp_path / "a_file").write_text("not a folder")
    values = {
        "m": model,
        "x": tmp_path / "x.npz",
        "file": tmp_path / "a_file",
        "long": tmp_path / ("n" * 300),
    }
    code, _, err = ferry(*[a.format(**values) for a in args])
    assert code == 2
    assert words in _one_error_line(err)


def test_verbose_shows_traceback(ferry: Run, tmp_path: Path) -> None:
    code, _, err = ferry("-v", "inspect", tmp_path / "nope.onnx")
    assert code == 2 and "Traceback" in err and "ferry: error:" in err


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    ferry_bin = Path(sys.executable).parent / "ferry"
    if not ferry_bin.exists():
        pytest.skip("the ferry console script is not installed in this environment")
    proc = subprocess.run(
        [str(ferry_bin), "inspect", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    _one_error_line(proc.stderr)


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "onnxferry", "inspect", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    _one_error_line(proc.stderr)


def test_reports_are_written_with_the_usual_file_mode(
    ferry: Run, model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "r.json"
    assert ferry("inspect", model, "--report", target)[0] == 0
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

"""One plumbing: each helper below has one home, and scans of the source keep it so.

- ``errors.one_line`` is the only summarizer of error text;
- ``graphs`` owns reading external data into a copy, exposing outputs and the protobuf limit;
- ``atomic`` is the one atomic writer (one file, or several renamed into place together);
- ``data.parse_toml`` reads TOML for recipes and ``ferry.toml``.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from onnxferry.atomic import AtomicFiles, atomic_write, write_bytes_atomic
from onnxferry.data import parse_toml
from onnxferry.errors import DataError, InputError, one_line, read_user_text
from onnxferry.native import native_output

PACKAGE = Path(__file__).parents[1] / "src" / "onnxferry"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _where(path: Path, node: ast.AST) -> str:
    shown = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path
    return f"{shown}:{getattr(node, 'lineno', 0)}"


def _is_call_of(node: ast.AST, method: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
    )


def _index(node: ast.Subscript) -> int | None:
    index = node.slice
    if isinstance(index, ast.Constant) and isinstance(index.value, int):
        return index.value
    if (
        isinstance(index, ast.UnaryOp)
        and isinstance(index.op, ast.USub)
        and isinstance(index.operand, ast.Constant)
        and isinstance(index.operand.value, int)
    ):
        return -index.operand.value
    return None


def _summarizers(path: Path) -> list[str]:
    """Hand-made copies of ``one_line`` in one file: functions named like it, a first or last
    line picked by ``.splitlines()[0]`` / ``[-1]`` or ``.split("\\n")[0]``, and white space
    folded by ``" ".join(str(x).split())``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if re.search(r"one_line|first_line|last_line", node.name) and path.name != "errors.py":
                found.append(f"{_where(path, node)} defines {node.name}()")
        elif isinstance(node, ast.Subscript) and _index(node) in (0, -1):
            value = node.value
            if _is_call_of(value, "splitlines"):
                found.append(f"{_where(path, node)} picks a line with .splitlines()[...]")
            elif (
                _is_call_of(value, "split")
                and isinstance(value, ast.Call)
                and value.args
                and isinstance(value.args[0], ast.Constant)
                and value.args[0].value == "\n"
            ):
                found.append(f"{_where(path, node)} picks a line with .split('\\n')[...]")
        elif (
            _is_call_of(node, "join")
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Constant)
            and node.func.value.value == " "
            and len(node.args) == 1
            and _is_call_of(node.args[0], "split")
            and isinstance(node.args[0], ast.Call)
            and not node.args[0].args
            and isinstance(node.args[0].func, ast.Attribute)
            and isinstance(node.args[0].func.value, ast.Call)
            and isinstance(node.args[0].func.value.func, ast.Name)
            and node.args[0].func.value.func.id == "str"
            and path.name != "errors.py"
        ):
            found.append(f'{_where(path, node)} folds white space with " ".join(str(...).split())')
    return found


def test_one_line_is_the_only_summarizer() -> None:
    found = [hit for path in SOURCES for hit in _summarizers(path)]
    assert not found, "use errors.one_line (limit, line, drop, period) instead:\n" + "\n".join(
        found
    )


def test_the_scan_finds_a_hand_made_summarizer(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def _first_line(e):\n"
        "    return str(e).strip().splitlines()[0]\n"
        "def short(e):\n"
        '    return " ".join(str(e).split())[:300]\n'
    )
    found = _summarizers(sample)
    assert len(found) == 3, found


@pytest.mark.parametrize(
    ("pattern", "home"),
    [
        (r"2\s*\*\*\s*31|2\s*\*\s*1024\s*\*\*\s*3", "graphs.py"),  # protobuf's limit
        (r"load_external_data_for_model", None),  # onnx's reader skips the safety checks
        (r"ValueInfoProto\(name=", "graphs.py"),  # exposing an output: graphs.expose
        (r"tomllib|tomli\b", "toml.py"),  # TOML: data.parse_toml (data/toml.py)
        (r"os\.replace\(|os\.rename\(", "atomic.py"),  # atomic writes and renames: atomic.py
        (r"os\.dup\(", "native.py"),  # what native code prints: native.native_output
    ],
)
def test_plumbing_has_one_home(pattern: str, home: str | None) -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in SOURCES
        if path.name != home
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line)
    ]
    assert not found, f"{pattern} belongs in {home or 'no module'} only: {found}"


def test_native_output_takes_what_file_descriptors_get_and_gives_them_back() -> None:
    before = [os.fstat(fd).st_ino for fd in (1, 2)]
    with native_output((1, 2)) as native:
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
        os.write(1, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        assert "oneDNN" in native.text()  # readable inside the block, for an error message
    assert [os.fstat(fd).st_ino for fd in (1, 2)] == before
    assert native.text().splitlines() == [
        "I0000 port.cc:153] oneDNN custom operations are on",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    ]


# --- one_line ----------------------------------------------------------------------------------


def test_one_line_folds_lines_and_shortens() -> None:
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(ValueError("")) == "ValueError"
    assert one_line("x" * 400) == "x" * 297 + "..."
    assert one_line("x" * 400, None) == "x" * 400
    assert one_line("x" * 40, 10) == "x" * 7 + "..."


def test_one_line_first_and_last_line() -> None:
    error = RuntimeError(
        "\n  shape mismatch: [2] vs [3]\nTraceback (most recent call last):\n  ...\n"
    )
    assert one_line(error, line="first") == "shape mismatch: [2] vs [3]"
    assert (
        one_line("warming up\nloading\n  Fatal: bad file  \n\n", line="last") == "Fatal: bad file"
    )
    assert one_line(RuntimeError("\n\n"), line="first") == "RuntimeError"


def test_one_line_drop_and_period() -> None:
    advice = re.compile(r"\s*You may raise an issue at \S+")
    error = TypeError("Unable to find a converter. You may raise an issue at https://x.y/z.\nmore")
    assert one_line(error, line="first", drop=advice) == "Unable to find a converter."
    assert one_line(error, line="first", drop=advice, period=False) == "Unable to find a converter"
    assert one_line("x" * 50 + ".", 20, period=False) == "x" * 17 + "..."  # the ellipsis stays


# --- atomic writes -----------------------------------------------------------------------------


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_replaces_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = write_bytes_atomic(tmp_path / "deep" / "report.json", b"old")

    def interrupted() -> None:
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted()
    assert target.read_bytes() == b"old"
    assert _listing(target.parent) == ["report.json"]

    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert _listing(target.parent) == ["report.json"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "f.bin", b"x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_write_into_an_unwritable_place_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InputError, match="cannot write"), atomic_write(tmp_path / "file" / "x"):
        pass


def test_atomic_files_go_in_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "model.data").write_bytes(b"old data")
    (tmp_path / "model.onnx").mkdir()  # the second rename fails

    def write_both() -> None:
        with AtomicFiles() as files:
            for name in ("model.data", "model.onnx"):
                with files.create(tmp_path / name) as f:
                    f.write(b"new")
            files.commit()

    with pytest.raises(IsADirectoryError):
        write_both()
    assert (tmp_path / "model.data").read_bytes() == b"old data"
    assert _listing(tmp_path) == ["model.data", "model.onnx"]

    (tmp_path / "model.onnx").rmdir()
    with AtomicFiles() as files:
        for name in ("model.data", "model.onnx", "unused"):
            with files.create(tmp_path / name) as f:
                f.write(name.encode())
        files.discard(tmp_path / "unused")
        files.commit()
    assert _listing(tmp_path) == ["model.data", "model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == b"model.onnx"


# --- TOML --------------------------------------------------------------------------------------


def test_parse_toml() -> None:
    assert parse_toml('[[pass]]\nname = "slim"\n') == {"pass": [{"name": "slim"}]}
    with pytest.raises(ValueError, match="Invalid value"):
        parse_toml("name = ")


def test_a_write_removes_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    from onnxferry.atomic import write_text_atomic

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    target = tmp_path / "bundle.tar"
    stale = tmp_path / f".bundle.tar.{int(dead.stdout)}-0123456789ab.tmp"
    live = tmp_path / f".bundle.tar.{os.getpid()}-0123456789ab.tmp"  # a write in progress
    other = tmp_path / ".other.tar.1-0123456789ab.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"half a bundle")
    write_text_atomic(target, "whole")
    assert target.read_text() == "whole"
    assert not stale.exists()
    assert live.exists() and other.exists()


def test_read_user_text_names_the_file_and_why_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "vocab.txt"
    good.write_text("a\nb\n", encoding="utf-8")
    assert read_user_text(good, "the vocabulary") == "a\nb\n"
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x80\x81")
    cases = {
        binary: "not UTF-8 text",
        tmp_path / "missing.txt": "No such file or directory",
        tmp_path: "Is a directory",
    }
    for path, reason in cases.items():
        with pytest.raises(DataError) as info:
            read_user_text(path, "the vocabulary", DataError, hint="one token a line")
        assert str(info.value) == f"cannot read the vocabulary {path}: {reason}; one token a line"
    with pytest.raises(InputError, match=f"^cannot read {binary}: not UTF-8 text$"):
        read_user_text(binary, "")

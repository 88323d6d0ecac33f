"""Bad values for every option of the CLI's verbs, bad files for their MODEL and --inputs, and
unwritable outputs: a table of what is not one line with exit 2.

    .venv/bin/python benchmarks/cli_fuzz.py                 # every part, about 15 minutes
    .venv/bin/python benchmarks/cli_fuzz.py --part options --verbs compare,bench
    .venv/bin/python benchmarks/cli_fuzz.py --built vad     # on an exporter-quirk model

Three parts, each invocation in a forked child of this process (onnxferry and ONNX Runtime
imported once) with a time limit:

- ``options``: each option of each verb given values of the wrong range or kind, one at a
  time, on an invocation that works without it (the bundled example model, or ``--built``
  one of ``tests/real_models.BUILT`` with its feeds): integers -1, 0,
  10**20; numbers -1, 0, nan, inf, 1e400; files missing, a folder, empty, junk; text "", a
  missing path, junk, ``a,,b``, ``-1``, ``nan``, ``:``, ``=x``. Choices and flags are left to
  Click.
- ``models``: the verbs taking a MODEL given missing, a folder, empty, junk, a truncated
  model, an .npz, text, an unknown operator, no outputs, no inputs, opset 99, missing
  external data, a dangling tensor.
- ``data``: the verbs reading rows given object arrays, a wrong input name, the wrong dtype,
  0 rows, the wrong rank, NaN, inf, strings, booleans, no arrays, float16, a scalar, a forged
  .npy header (10**12 rows over a few), a zip that is no .npz, a truncated .npz, a junk .pb,
  text as .npy, broken JSON lines, an empty folder.
- ``outputs``: every ``-o`` given a path under a file, a name of 300 characters, a place in
  /proc and /dev/full.

A finding is an exit 3 (internal error), a traceback, a child that died, more than one error
line, or (``--hang``) an invocation still running at its limit (``serve`` still running is a
server that took the value, never a finding). Exit 1 when anything was found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx

from machine import cpu_summary
from onnxferry.cli import cli, main
from onnxferry.data.npz import save_npz

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_classifier"
MODEL = str(EXAMPLE / "model.onnx")
SERVING = ("serve", "registry serve")
SLOW = ("federated",)
"""Verbs left out: federated starts a Ray instance per run (minutes)."""


@dataclass(frozen=True)
class Outcome:
    code: int | str
    """The exit code, or HANG / DIED / ESCAPED."""
    err: str

    @property
    def finding(self) -> bool:
        errors = [ln for ln in self.err.splitlines() if "error:" in ln]
        return (
            self.code == 3
            or not isinstance(self.code, int)
            or "Traceback" in self.err
            or len(errors) > 1
        )


def _child(args: list[str], err_path: str, cwd: str, queue: Any) -> None:
    out = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.chdir(cwd)
    try:
        code: int | str = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        code = "ESCAPED " + traceback.format_exc()[-400:]
    queue.put(code)


def run(args: list[str], work: Path, timeout: float) -> Outcome:
    """``ferry ARGS`` in a forked child; HANG when it runs past ``timeout`` (then killed)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    err_path = work / "stderr.txt"
    child = context.Process(target=_child, args=(args, str(err_path), str(work), queue))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return Outcome("HANG", "")
    err = err_path.read_text(errors="replace")
    try:
        code = queue.get(timeout=1)
    except Exception:
        code = f"DIED {child.exitcode}"
    return Outcome(code, err)


def _dangle(model: onnx.ModelProto) -> None:
    """The first node that reads a tensor reads one nothing makes (Paddle's first nodes are
    Constants, which read none)."""
    node = next(n for n in model.graph.node if n.input)
    node.input[0] = "nowhere"


class Fixtures:
    """The files the invocations use, made once in ``work``."""

    def __init__(self, work: Path, feeds: dict[str, np.ndarray] | None = None) -> None:
        self.work = work
        proto = onnx.load(MODEL)
        self.input = proto.graph.input[0].name
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        self.shape = [d.dim_value if d.dim_value > 0 else 2 for d in dims]  # -1, "?": 2
        self.rows = np.random.default_rng(0).normal(size=self.shape).astype(np.float32)
        self.x = work / "x.npz"
        save_npz(self.x, feeds or {self.input: self.rows})
        self.golden = str(EXAMPLE / "test_data_set_0") if feeds is None else str(self.x)
        labels = np.arange(16) % 10
        train = np.random.default_rng(1).normal(size=(16, *self.shape[1:])).astype(np.float32)
        save_npz(work / "train.npz", {self.input: train, "y": labels})
        (work / "empty").write_bytes(b"")
        (work / "junk").write_bytes(b"\x00\xffjunk{[")
        keys = work / "keys"
        main(["keygen", "-o", str(keys)])
        self.private, self.public = keys / "private_key.pem", keys / "public_key.pem"
        main(["sign", MODEL, "--key", str(self.private), "-o", str(work / "m.sig")])
        self.registry = work / "registry"
        main(["registry", "add", MODEL, "--name", "tiny", "--registry", str(self.registry)])
        main(
            [
                "registry",
                "export",
                "tiny:1",
                "-o",
                str(work / "bundle.tar"),
                "--registry",
                str(self.registry),
            ]
        )

    def base(self) -> dict[str, list[str]]:
        """An invocation of each verb that works (given no bad value)."""
        w, reg = self.work, ["--registry", str(self.registry)]
        return {
            "inspect": [MODEL],
            "check": [MODEL],
            "compare": [MODEL, MODEL],
            "test": [MODEL, self.golden],
            "bench": [MODEL, "--iterations", "5", "--warmup", "1"],
            "optimize": [MODEL, "-o", str(w / "o.onnx")],
            "passes": [],
            "graph": [MODEL, "-o", str(w / "g.svg")],
            "explain": [
                MODEL,
                "--inputs",
                str(self.x),
                "--method",
                "occlusion",
                "-o",
                str(w / "e"),
            ],
            "batch": [MODEL, str(self.x), "-o", str(w / "b")],
            "doctor": [],
            "package": [MODEL, "--target", "mobile", "-o", str(w / "p")],
            "keygen": ["-o", str(w / "k2")],
            "sign": [MODEL, "--key", str(self.private), "-o", str(w / "m2.sig")],
            "verify": [MODEL, "--public-key", str(self.public), "--signature", str(w / "m.sig")],
            "registry add": [MODEL, "--name", "tiny", *reg],
            "registry list": reg,
            "registry show": ["tiny:1", *reg],
            "registry history": ["tiny", *reg],
            "registry diff": ["tiny:1", "tiny:1", *reg],
            "registry promote": ["tiny:1", "--to", "staging", *reg],
            "registry rollback": ["tiny", *reg],
            "registry fsck": reg,
            "registry export": ["tiny:1", "-o", str(w / "bundle2.tar"), *reg],
            "registry import": [str(w / "bundle.tar"), "--registry", str(w / "registry2")],
            "registry new-key": ["-o", str(w / "aes.key")],
            "registry trust": [str(self.public), *reg],
            "ci init": ["github", "-o", str(w / "ci.yml"), "--model", MODEL, "--force"],
            "convert": [MODEL, "-o", str(w / "c.onnx")],
            "deploy": [MODEL, "-o", str(w / "deploy")],
            "finetune": [
                MODEL,
                "--data",
                str(w / "train.npz"),
                "--labels",
                "y",
                "-o",
                str(w / "ft.onnx"),
                "--epochs",
                "1",
            ],
            "serve": [MODEL, "--port", "0"],
            "registry serve": [str(self.registry), "--port", "0"],
        }

    def bad_values(self, option: click.Option) -> list[str]:
        kind = option.type
        if isinstance(kind, click.Choice) or option.is_flag or option.count:
            return []
        if isinstance(kind, click.types.IntParamType):
            return ["-1", "0", str(10**20)]
        if isinstance(kind, click.types.FloatParamType):
            return ["-1", "0", "nan", "inf", "1e400"]
        if isinstance(kind, (click.Path, click.File)):
            return ["/nonexistent/x", "/tmp", str(self.work / "empty"), str(self.work / "junk")]
        return ["", "/nonexistent/x", str(self.work / "junk"), "a,,b", "-1", "nan", ":", "=x"]

    def bad_models(self) -> list[Path]:
        w = self.work / "models"
        w.mkdir(exist_ok=True)
        raw = Path(MODEL).read_bytes()
        (w / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
        (w / "npz.onnx").write_bytes(self.x.read_bytes())
        (w / "text.onnx").write_text("ir_version: 8\n")

        def edited(name: str, edit: Callable[[onnx.ModelProto], None]) -> Path:
            proto = onnx.load(MODEL)
            edit(proto)
            onnx.save(proto, str(w / name))
            return w / name

        from onnx.external_data_helper import convert_model_to_external_data

        from onnxferry.graphs import constants_to_initializers

        external = onnx.load(MODEL)
        constants_to_initializers(external.graph)  # Paddle's weights: external data needs them
        convert_model_to_external_data(external, location="weights.bin", size_threshold=0)
        (w / "external").mkdir(exist_ok=True)
        onnx.save(external, str(w / "external" / "model.onnx"))
        data = w / "external" / "weights.bin"
        # a model without tensors (scikit-learn's, weights in attributes) has no external data
        missing_data = [w / "external" / "model.onnx"] if data.exists() else []
        data.unlink(missing_ok=True)
        return [
            Path("/nonexistent/m.onnx"),
            Path("/tmp"),
            self.work / "empty",
            self.work / "junk",
            w / "truncated.onnx",
            w / "npz.onnx",
            w / "text.onnx",
            edited("unknown_op.onnx", lambda m: setattr(m.graph.node[0], "op_type", "NoSuch")),
            edited("no_outputs.onnx", lambda m: m.graph.ClearField("output")),
            edited("no_inputs.onnx", lambda m: m.graph.ClearField("input")),
            edited("opset99.onnx", lambda m: setattr(m.opset_import[0], "version", 99)),
            edited("dangling.onnx", _dangle),
            *missing_data,
        ]

    def bad_data(self) -> list[Path]:
        d = self.work / "data"
        d.mkdir(exist_ok=True)
        name, good = self.input, self.rows
        arrays: dict[str, dict[str, Any]] = {
            "object": {name: np.array([{"a": 1}, None], dtype=object)},
            "wrong_name": {"nope": good},
            "int64": {name: good.astype(np.int64)},
            "zero_rows": {name: good[:0]},
            "rank": {name: good[0, 0]},
            "nan": {name: np.full_like(good, np.nan)},
            "inf": {name: np.full_like(good, np.inf)},
            "strings": {name: np.array(["a", "b"])},
            "bool": {name: good > 0},
            "no_arrays": {},
            "float16": {name: good.astype(np.float16)},
            "scalar": {name: np.float32(1.0)},
        }
        files = []
        for label, content in arrays.items():
            np.savez(d / f"{label}.npz", **content)
            files.append(d / f"{label}.npz")
        buffer = io.BytesIO()
        np.save(buffer, good)
        shape = str(tuple(good.shape)).encode()
        forged = buffer.getvalue().replace(shape, str((10**12, *good.shape[1:])).encode())
        (d / "forged.npy").write_bytes(forged)
        with zipfile.ZipFile(d / "forged.npz", "w") as z:
            z.writestr(f"{name}.npy", forged)
        with zipfile.ZipFile(d / "not_npz.npz", "w") as z:
            z.writestr("readme.txt", "hello")
        (d / "truncated.npz").write_bytes((d / "int64.npz").read_bytes()[:100])
        (d / "junk.pb").write_bytes(b"\x08\x96\x01junkjunk")
        (d / "text.npy").write_text("not numpy")
        (d / "rows.jsonl").write_text('{"image": [1, 2]}\n{"image": "x"}\nnot json\n')
        (d / "empty_folder").mkdir(exist_ok=True)
        names = ["forged.npy", "forged.npz", "not_npz.npz", "truncated.npz", "junk.pb"]
        names += ["text.npy", "rows.jsonl", "empty_folder"]
        return files + [d / n for n in names]


def command(path: str) -> click.Command:
    found: click.Command = cli
    for part in path.split():
        assert isinstance(found, click.Group)
        found = found.commands[part]
    return found


def option_cases(fixtures: Fixtures, verbs: list[str]) -> Iterator[tuple[str, list[str]]]:
    for verb, base in fixtures.base().items():
        if verbs and verb not in verbs:
            continue
        for option in command(verb).params:
            if not isinstance(option, click.Option) or option.name in ("help", "verbose"):
                continue
            flag = max(option.opts, key=len)
            for value in fixtures.bad_values(option):
                given = [f"{flag}={value}"] if value.startswith("-") or not value else [flag, value]
                yield verb, [*verb.split(), *base, *given]


def model_cases(fixtures: Fixtures, verbs: list[str]) -> Iterator[tuple[str, list[str]]]:
    for verb, base in fixtures.base().items():
        if (verbs and verb not in verbs) or MODEL not in base or verb in SERVING:
            continue
        for bad in fixtures.bad_models():
            yield verb, [*verb.split(), *[str(bad) if a == MODEL else a for a in base]]


def data_cases(fixtures: Fixtures, verbs: list[str]) -> Iterator[tuple[str, list[str]]]:
    w = fixtures.work
    reading: dict[str, Callable[[str], list[str]]] = {
        "compare": lambda f: ["compare", MODEL, MODEL, "--inputs", f],
        "test": lambda f: ["test", MODEL, f],
        "bench": lambda f: ["bench", MODEL, "--inputs", f, "--iterations", "3"],
        "optimize": lambda f: [
            "optimize",
            MODEL,
            "-o",
            str(w / "o.onnx"),
            "--auto",
            "--inputs",
            f,
            "--time-budget",
            "2",
        ],
        "explain": lambda f: [
            "explain",
            MODEL,
            "--inputs",
            f,
            "--method",
            "occlusion",
            "-o",
            str(w / "e"),
        ],
        "batch": lambda f: ["batch", MODEL, f, "-o", str(w / "b")],
        "convert": lambda f: ["convert", MODEL, "-o", str(w / "c.onnx"), "--inputs", f],
    }
    for verb, make in reading.items():
        if verbs and verb not in verbs:
            continue
        for bad in fixtures.bad_data():
            yield verb, make(str(bad))


def output_cases(fixtures: Fixtures, verbs: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Every ``-o`` given a path under a file, a name too long, and places in /proc and /dev."""
    (fixtures.work / "a_file").write_text("not a folder")
    places = [
        str(fixtures.work / "a_file" / "out"),
        str(fixtures.work / ("n" * 300)),
        "/proc/self/out",
        "/dev/full",
    ]
    for verb, base in fixtures.base().items():
        if (verbs and verb not in verbs) or verb in SERVING or "-o" not in base:
            continue
        at = base.index("-o") + 1
        for place in places:
            yield verb, [*verb.split(), *base[:at], place, *base[at + 1 :]]


def main_(options: argparse.Namespace) -> int:
    verbs = [v for v in (options.verbs or "").split(",") if v]
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}")
    parts = {
        "options": option_cases,
        "models": model_cases,
        "data": data_cases,
        "outputs": output_cases,
    }
    found = runs = 0
    global MODEL
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feeds = None
        if options.built:  # one of tests/real_models.BUILT: the exporters' quirks
            sys.path.insert(0, str(EXAMPLE.parents[1]))
            from tests.real_models import BUILT

            spec = BUILT[options.built]
            MODEL = str(work / f"{options.built}.onnx")
            onnx.save(spec.build(), MODEL)
            feeds = spec.feeds()
            print(f"model: tests/real_models.BUILT[{options.built!r}]")
        with contextlib.redirect_stdout(io.StringIO()):
            fixtures = Fixtures(work, feeds)
        for part, cases in parts.items():
            if options.part not in ("all", part):
                continue
            start, before = time.monotonic(), found
            for verb, args in cases(fixtures, verbs):
                if verb in SLOW:
                    continue
                serving = verb in SERVING
                outcome = run(args, work, options.serve_timeout if serving else options.timeout)
                runs += 1
                if outcome.code == "HANG" and (serving or not options.hang):
                    continue
                if outcome.finding:
                    found += 1
                    tail = outcome.err.strip().splitlines()[-1:] or [""]
                    print(
                        f"| {part} | `ferry {' '.join(args)[:150]}` | {outcome.code} | "
                        f"{tail[0][:200]} |",
                        flush=True,
                    )
            print(f"{part}: {found - before} found, {time.monotonic() - start:.0f} s", flush=True)
    print(f"\n{runs} invocations, {found} findings")
    return 1 if found else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["all", "options", "models", "data", "outputs"]
    parser.add_argument("--part", choices=parts, default="all")
    parser.add_argument("--verbs", help="these verbs only, e.g. compare,bench")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--serve-timeout", type=float, default=12.0)
    parser.add_argument("--hang", action="store_true", help="count runs past the limit")
    parser.add_argument("--built", help="a model of tests/real_models.BUILT, e.g. vad, tokens")
    sys.exit(main_(parser.parse_args()))

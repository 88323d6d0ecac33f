"""`mobile`: the model in ONNX Runtime's ORT format, with the operator config for a minimal build.

    ferry package model.onnx --target mobile -o out/mobile
    ferry package model.onnx --target mobile -o out/int8 --set int8=true --set platform=amd64

Writes ``<name>.ort`` and ``<name>.required_operators_and_types.config`` (ONNX Runtime's own
``convert_onnx_models_to_ort``, optimization style Fixed; feed the config to a minimal build's
``--include_ops_by_config``; with ``type_reduction=false`` the config lists operators only and
is named ``<name>.required_operators.config``). ``--set int8=true`` first quantizes with
``optimize``'s ``int8_dynamic`` pass and also writes ``<name>.int8.onnx``.

Checks: ``ort parity`` loads the written ``.ort`` in an ONNX Runtime session and compares it
with the ``.onnx`` it was converted from on the feed sets of ``inputs`` (a file), else
``samples`` generated ones (``package.checking``), at ``atol``/``rtol`` (parity's
defaults); a mismatch fails the report. With int8 that reference
is the int8 ``.onnx``, so the check judges the conversion alone; what int8 costs is a second
check, ``int8 vs fp32``: every float output's worst per-sample cosine against the fp32 model
must be at least ``int8_cosine`` (0.99), and exact outputs must match. ``size`` reports the
bytes of the source ``.onnx``, the int8 ``.onnx``, the ``.ort`` and the config.

Options (``--set KEY=VALUE``): ``int8`` (false), ``platform`` (``arm``, the default, keeps
x86-only NCHWc layouts out and allows int8 QDQ fusions; ``amd64``), ``type_reduction`` (true),
``inputs``, ``samples`` (3), ``atol``, ``rtol``, ``int8_cosine``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..customops import extension_domains, extensions_library, register_extensions
from ..errors import InputError, UsageError
from ..graphs import weights_not_inputs
from ..model import Model
from ..report import human_size
from .base import Check, Options, Packaged, PackageSource, write_tree
from .checking import CHECK_KEYS, check_feeds, check_options

KEYS = (*CHECK_KEYS, "int8", "platform", "type_reduction", "atol", "rtol", "int8_cosine")
PLATFORMS = ("arm", "amd64")
INT8_COSINE = 0.99
"""The int8 model's least cosine against the fp32 model, per output and sample, by default."""


def build(source: PackageSource, outdir: Path, options: Mapping[str, Any]) -> Packaged:
    """Convert ``source`` to ORT format in ``outdir`` and check it (see the module docstring)."""
    from ..parity import Tolerance, compare_within_noise, unoptimized_ort
    from ..runtime import OrtRunner

    opts = _options(options)
    result = Packaged("mobile", source.name, str(outdir))
    fp32 = Model.load(source.model.resolve())
    feeds = check_feeds(fp32, opts["inputs"], opts["samples"], result)
    fp32_outputs = [OrtRunner(fp32).run(f) for f in feeds]
    reference, reference_outputs = fp32, fp32_outputs
    sizes = [(source.model.name, fp32.size_bytes)]
    if opts["int8"]:
        reference = _int8(fp32, outdir / f"{source.name}.int8.onnx", result)
        reference_outputs = [OrtRunner(reference).run(f) for f in feeds]
        sizes.append((f"{source.name}.int8.onnx", reference.size_bytes))
    ort_file, config_file = _convert(reference, source.name, opts, outdir, result)
    sizes += [
        (ort_file.name, ort_file.stat().st_size),
        (config_file.name, config_file.stat().st_size),
    ]

    tolerance = Tolerance(atol=opts["atol"], rtol=opts["rtol"])
    parity = compare_within_noise(
        reference_outputs,
        _run_ort_file(ort_file, feeds, reference),
        tolerance,
        second=unoptimized_ort(reference, feeds),
        reference_name=reference.path.name if reference.path else "onnx",
        candidate_name=ort_file.name,
    )
    result.checks.append(
        Check("ort parity", parity.ok, parity.summary(), tool=f"onnxruntime {_ort_version()}")
    )
    if opts["int8"]:
        result.checks.append(_int8_check(fp32_outputs, reference_outputs, opts["int8_cosine"]))
    size_text = ", ".join(f"{name} {human_size(n)}" for name, n in sizes)
    result.checks.append(Check("size", True, size_text, tool="os.stat"))
    result.notes.append(
        f"minimal build: build.py --minimal_build --include_ops_by_config {config_file.name}"
    )
    if domains := extension_domains(reference):
        result.notes.append(
            f"it uses onnxruntime-extensions' operators ({', '.join(sorted(domains))}): the app "
            "needs them beside ONNX Runtime (onnxruntime-extensions' mobile packages, or "
            "build.py --use_extensions), registered on its session"
        )
    return result


def _options(given: Mapping[str, Any]) -> dict[str, Any]:
    from ..parity import Tolerance

    opts = Options("mobile", given, KEYS)
    platform = opts.text("platform", "arm")
    if platform not in PLATFORMS:
        raise UsageError(
            f"mobile: platform {platform!r} is not one of {', '.join(PLATFORMS)}",
            hint="--set platform=arm (phones) or --set platform=amd64",
        )
    return {
        "int8": opts.flag("int8", False),
        "type_reduction": opts.flag("type_reduction", True),
        "platform": platform,
        **check_options(opts),
        "int8_cosine": opts.number("int8_cosine", INT8_COSINE),
        "atol": opts.number("atol", Tolerance().atol),
        "rtol": opts.number("rtol", Tolerance().rtol),
    }


def _int8(fp32: Model, target: Path, result: Packaged) -> Model:
    from ..optimize.base import PassContext
    from ..optimize.quantize import DynamicInt8

    with tempfile.TemporaryDirectory(prefix="ferry-mobile-") as work:
        done = DynamicInt8().apply(fp32, PassContext(workdir=Path(work)))
        saved = done.model.save(target)
    result.files += [
        p.relative_to(target.parent).as_posix() for p in (target, *saved.external_files)
    ]
    result.notes += [f"int8: {note}" for note in done.notes]
    return saved


def _convert(
    model: Model, name: str, opts: Mapping[str, Any], outdir: Path, result: Packaged
) -> tuple[Path, Path]:
    """Run ONNX Runtime's converter in a scratch folder; write the .ort and the config."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    from ..runtime import ort_error_message

    with tempfile.TemporaryDirectory(prefix="ferry-ort-") as work:
        stage = Path(work)
        given = weights_not_inputs(model)
        if given is not model or model.path is None:
            given = given.save(stage / "given" / f"{name}.onnx")
        assert given.path is not None
        quiet = logging.getLogger("ort_format_model.utils")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            # the converter prints progress, and leaves a file to the garbage collector
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                convert_onnx_models_to_ort(
                    given.path,
                    output_dir=stage,
                    custom_op_library_path=extensions_library()
                    if extension_domains(model)
                    else None,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=opts["platform"],
                    enable_type_reduction=opts["type_reduction"],
                )
        except Exception as e:
            raise InputError(
                f"onnxruntime cannot convert {name} to ORT format: {ort_error_message(e)}",
                hint="check that `ferry check` passes and every op runs on the CPU provider",
            ) from e
        finally:
            quiet.setLevel(level)
        converted = sorted(stage.glob("*.ort"))
        configs = sorted(stage.glob("*.config"))
        if len(converted) != 1 or len(configs) != 1:
            raise InputError(
                f"onnxruntime's converter wrote {len(converted)} .ort and {len(configs)} config "
                f"files for {name}",
                hint="give a model file whose name ends in .onnx",
            )
        kind = "required_operators_and_types" if opts["type_reduction"] else "required_operators"
        ort_name, config_name = f"{name}.ort", f"{name}.{kind}.config"
        config = _config_text(configs[0].read_text(), ort_name)
        write_tree(outdir, {ort_name: converted[0].read_bytes(), config_name: config}, result)
    return outdir / ort_name, outdir / config_name


def _config_text(text: str, ort_name: str) -> str:
    """The converter's config, naming the .ort it came from instead of the scratch path."""
    lines = text.splitlines()
    kept = [ln for ln in lines if not ln.startswith("# - ")]
    at = next((i + 1 for i, ln in enumerate(kept) if ln.startswith("# Generated from")), 0)
    kept.insert(at, f"# - {ort_name}")
    return "\n".join(kept) + "\n"


def _run_ort_file(
    path: Path, feeds: list[dict[str, np.ndarray]], model: Model
) -> list[dict[str, np.ndarray]]:
    """The .ort at ``path`` on ``feeds``, with the custom-operator library ``model`` (what it
    was converted from) needs."""
    import onnxruntime as ort

    from ..runtime import ort_error_message, run_session

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    register_extensions(opts, model)
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(
            f"onnxruntime cannot load {path.name}: {ort_error_message(e)}",
            hint="the .ort was written but does not load; report it with the model",
        ) from e
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, run_session(session, None, f), strict=True)) for f in feeds]


def _int8_check(
    fp32: list[dict[str, np.ndarray]], int8: list[dict[str, np.ndarray]], least: float
) -> Check:
    from ..parity import compare_outputs

    parity = compare_outputs(fp32, int8, reference_name="fp32", candidate_name="int8")
    worst: list[str] = []
    ok = not parity.problems
    for out in parity.outputs:
        if out.kind == "float":
            cosine = out.cosine_min if out.cosine_min is not None else out.cosine
            good = out.problem is None and cosine is not None and cosine >= least
            worst.append(f"{out.name} cosine {cosine:.5f}" if cosine is not None else out.name)
        else:
            good = out.passed
            worst.append(f"{out.name} {'exact' if good else 'differs'}")
        ok = ok and good
    detail = (
        f"{'; '.join(worst)} (needs >= {least}); max abs {parity.max_abs:.3g}, "
        f"max rel {parity.max_rel:.3g}"
    )
    return Check("int8 vs fp32", ok, detail, tool="onnxferry.parity")


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)

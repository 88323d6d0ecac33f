"""`ferry deploy`: the whole path, convert -> optimize --auto -> bench, into one directory.

    report = deploy("train.py:make_model", "out/", input_shapes={"image": (1, 3, 224, 224)})
    # out/model.onnx, out/model.recipe.toml, out/report.json, out/report.html

Every stage is verified (convert against the source framework, optimize against the converted
model under the budget); the HTML report is self-contained: parity per stage, the latency
table, sizes, latency against batch size, and the search's candidates (latency vs metric).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bench import bench
from .convert import Conversion, convert
from .feeds import Given, feed_sets
from .optimize import ChainResult, SearchResult, optimize
from .optimize.verb import recipe_path
from .report import Report, Table


@dataclass
class Deployment:
    """Where the deployment went and how each stage did (ReportBody)."""

    source: str
    outdir: str
    files: dict[str, str] = field(default_factory=dict)
    stages: list[Report[Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(stage.ok for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "outdir": self.outdir,
            "files": self.files,
            "stages": [stage.to_dict() for stage in self.stages],
        }

    def tables(self) -> list[Table]:
        rows = [(s.verb, "ok" if s.ok else "FAILED") for s in self.stages]
        files = [(k, v) for k, v in self.files.items()]
        return [
            Table(f"deploy {self.source}", ("stage", "result"), rows),
            Table("files", ("file", "path"), files),
        ]


def deploy(
    source: Any,
    outdir: str | Path,
    *,
    framework: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Given | None = None,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    dims: Mapping[str, int] | None = None,
    assume_sizes: bool = False,
    max_drop: float = 0.01,
    budget: str | None = None,
    eval_data: str | Path | None = None,
    trust_pickle: bool = False,
    batches: Sequence[int] = (1, 8),
    duration: float = 1.0,
    example_inputs: Any = None,
    custom_export: str | Path | None = None,
    graph_outputs: Sequence[str] = (),
    bindings: Mapping[str, bool | int | float] | None = None,
) -> Report[Deployment]:
    """Convert, optimize within the budget, bench, and write ``outdir``. ``custom_export``:
    a Python file translating a torch model's custom layers (as ``convert`` takes it).
    ``dims`` sizes open dims by name for the budget and the timing (``sequence=128``);
    ``assume_sizes`` accepts sizes chosen for open dims nobody gave, as ``optimize`` does;
    ``graph_outputs`` and ``bindings`` are ``convert``'s."""
    out = Path(outdir)
    result = Deployment(source=str(source), outdir=str(out))
    with tempfile.TemporaryDirectory(prefix="onnxferry-deploy-") as tmp:
        converted = convert(
            source,
            Path(tmp) / "converted.onnx",
            framework=framework,
            input_shapes=input_shapes,
            inputs=inputs,
            dynamic=dynamic,
            trust_pickle=trust_pickle,
            example_inputs=example_inputs,
            custom_export=custom_export,
            graph_outputs=graph_outputs,
            bindings=bindings,
        )
        result.stages.append(converted.last_report(Conversion))
        final = optimize(
            converted,
            out / "model.onnx",
            auto=True,
            max_drop=max_drop,
            budget=budget,
            inputs=inputs,
            eval_data=eval_data,
            input_shapes=input_shapes,
            dims=dims,
            assume_sizes=assume_sizes,
        )
        optimization = final.last_report(ChainResult, SearchResult)
        result.stages.append(optimization)
        timing = bench(
            [converted, final],
            batches=batches,
            duration=duration,
            input_shapes=input_shapes,
            dims=dims,
            inputs=feed_sets(converted, inputs)[0][0] if inputs is not None else None,
        )
        result.stages.append(timing)
    report = Report("deploy", result)
    result.files = {
        "model": str(out / "model.onnx"),
        "recipe": str(recipe_path(out / "model.onnx")),
        "report (JSON)": str(out / "report.json"),
        "report (HTML)": str(out / "report.html"),
    }
    report.save(out / "report.json")
    # Each stage draws its own plots (bench: latency; the search: its candidates).
    report.save_html(out / "report.html", f"onnxferry deploy {source}", sections=result.stages)
    return report

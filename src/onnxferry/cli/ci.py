"""`ferry ci init TARGET`: write a CI/CD pipeline that runs ferry's gates.

    ferry ci init github --model model.py:build --golden golden
    ferry ci init gitlab --model model.onnx --golden golden --max-drop 0.02
    ferry ci init jenkins -o ci/Jenkinsfile --registry /srv/registry

TARGET is github (.github/workflows/ferry.yml), gitlab (.gitlab-ci.yml) or jenkins
(Jenkinsfile). The steps: convert (verified) -> check -> test on golden data -> optimize
within the budget -> sign -> registry add -> promote to staging (``onnxferry.ci``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


@click.group("ci")
def ci() -> None:
    """CI/CD pipelines that run ferry's gates."""


@ci.command("init")
@click.argument("target", type=click.Choice(["github", "gitlab", "jenkins"]))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: the target's usual file).",
)
@click.option(
    "--model",
    "source",
    default="model.py:build",
    show_default=True,
    help="The source model the pipeline converts (as for `ferry convert`).",
)
@click.option(
    "--golden",
    default="golden",
    show_default=True,
    help="Golden data (test_data_set_N folders or .npz) the model is tested on.",
)
@click.option("--name", help="The model's registry name (default: from --model).")
@click.option(
    "--registry",
    default="$FERRY_REGISTRY",
    show_default=True,
    help="The registry path (default: the CI variable FERRY_REGISTRY).",
)
@click.option(
    "--max-drop",
    type=float,
    default=0.01,
    show_default=True,
    help="The optimize budget: cosine >= 1 - drop on the golden inputs.",
)
@click.option(
    "--time-budget",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds the optimize search may start candidates in.",
)
@click.option("--workdir", default="build/ferry", show_default=True, help="The build folder.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(
    target: str,
    output: Path | None,
    source: str,
    golden: str,
    name: str | None,
    registry: str,
    max_drop: float,
    time_budget: float,
    workdir: str,
    force: bool,
) -> int:
    """Write the pipeline file for TARGET (github, gitlab, jenkins)."""
    from ..atomic import write_text_atomic
    from ..ci import TARGETS, ci_steps, render

    steps = ci_steps(
        source,
        golden,
        name=name,
        workdir=workdir,
        registry=registry,
        max_drop=max_drop,
        time_budget=time_budget,
    )
    path = output or Path(TARGETS[target][0])
    if path.exists() and not force:
        raise InputError(f"{path} exists", hint="--force to overwrite it, or -o another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render(target, steps, source))
    click.echo(f"wrote {path}: {' -> '.join(step.name for step in steps)}")
    return 0

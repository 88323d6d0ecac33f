"""`ferry package`: package a model for where it runs (docker, k8s, kserve, ...).

    ferry package model.onnx --target docker -o out/docker
    ferry package model.onnx --target k8s -o out/k8s --set replicas=3 --json

SOURCE is a model file, a Triton-layout repository or ``registry:PATH#name@alias``.

Target options are ``--set KEY=VALUE`` (repeatable; each target documents its keys).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from .options import report_options
from .render import emit


@click.command("package")
@click.argument("source")
@click.option("--target", "-t", required=True, help="Where it runs: docker, k8s, kserve, ...")
@click.option(
    "-o",
    "--outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder to write the package into.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A target option (repeatable), e.g. --set base_digest=sha256:...",
)
@report_options
def package_command(
    source: str,
    target: str,
    outdir: Path,
    settings: tuple[str, ...],
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Package SOURCE (a model, a repository or registry:PATH#name@alias) for --target."""
    from ..package import package

    options: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set replicas=3")
        options[key.strip()] = value
    return emit(package(source, target, outdir, options), as_json, report_path)

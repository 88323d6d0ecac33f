"""`ferry doctor`: what this machine can run (providers, CPU, cores, memory, GPUs, versions)
and advice.

    ferry doctor
    ferry doctor --json
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import report_options
from .render import emit


@click.command("doctor")
@report_options
def doctor_command(as_json: bool, report_path: Path | None) -> int:
    """Show the execution providers (and why one is not available), the CPU's flags, usable
    cores, memory, GPUs, CUDA/TensorRT and dependency versions, with advice."""
    from ..doctor import doctor

    return emit(doctor(), as_json, report_path)

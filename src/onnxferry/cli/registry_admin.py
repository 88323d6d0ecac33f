"""`ferry registry fsck`: check a registry's catalog and stored files, remove leftovers.

    ferry registry fsck
    ferry registry fsck --repair --json

Exit 0 when the catalog is sound and every version's files match their digests (leftovers of
killed processes are listed, and removed with ``--repair``), 1 when something is damaged.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import report_options
from .registry import registry_option
from .render import emit


@click.command("fsck")
@click.option(
    "--repair",
    is_flag=True,
    help="Remove leftovers of killed processes (orphan and abandoned staging folders); "
    "damaged versions are only reported.",
)
@registry_option
@report_options
def fsck_command(repair: bool, registry_path: Path, as_json: bool, report_path: Path | None) -> int:
    """Check the catalog's integrity and every version's files against their digests."""
    from ..registry import Registry

    return emit(Registry.open(registry_path).fsck(repair=repair), as_json, report_path)

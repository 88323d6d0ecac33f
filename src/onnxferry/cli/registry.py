"""`ferry registry ...`: versions, aliases and history of models (onnxferry.registry).

    ferry registry add out/model.onnx --name resnet --golden out/golden --sign-key k.pem
    ferry registry list
    ferry registry show resnet@production --json
    ferry registry history resnet --at 2026-12-01T14:03
    ferry registry rollback resnet --alias production

Every verb takes ``--registry PATH`` (default ``$FERRY_REGISTRY`` or ``./registry``) and
``--json``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import UsageError
from ..report import Report
from .options import report_options
from .render import emit

F = TypeVar("F", bound=Callable[..., Any])


def registry_option(fn: F) -> F:
    """``--registry PATH``: the registry directory."""
    return click.option(
        "--registry",
        "registry_path",
        envvar="FERRY_REGISTRY",
        default="registry",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The registry directory (catalog.db inside; env FERRY_REGISTRY).",
    )(fn)


@click.group()
def registry() -> None:
    """Versions, aliases, promotion gates and history of models."""


@registry.command("add")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="The model's name in the registry.")
@click.option(
    "--golden",
    type=click.Path(exists=True, path_type=Path),
    help="Golden data (test_data_set_N folders or .npz) the gates test the model on.",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the model with this ECDSA private key (else MODEL.sig is taken if present).",
)
@click.option(
    "--encrypt-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Store the model AES-256-GCM encrypted with this key (or env FERRY_REGISTRY_KEY "
    "with --encrypt).",
)
@click.option("--encrypt", is_flag=True, help="Encrypt with the key in $FERRY_REGISTRY_KEY.")
@click.option(
    "--source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The framework file the model came from (its digest goes into the lineage).",
)
@click.option("--parent", help="The registry version this one derives from (NAME:VERSION).")
@click.option(
    "--store",
    help="Where a new registry keeps its artifacts: a folder or s3://bucket/prefix.",
)
@registry_option
@report_options
def add(
    model: Path,
    name: str,
    golden: Path | None,
    sign_key: Path | None,
    encrypt_key_file: Path | None,
    encrypt: bool,
    source: Path | None,
    parent: str | None,
    store: str | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Register MODEL (with its external data) as the next version of --name."""
    from ..registry import Registry
    from ..registry.crypto import load_key

    key = None
    if encrypt_key_file is not None or encrypt:
        key = load_key(encrypt_key_file)
    reg = Registry.open(registry_path, store=store, create=True)
    record = reg.add(
        model,
        name,
        golden=golden,
        sign_key=sign_key,
        encrypt_key=key,
        source=source,
        parent=parent,
    )
    return emit(Report("registry add", record), as_json, report_path)


@registry.command("list")
@click.argument("name", required=False)
@registry_option
@report_options
def list_command(
    name: str | None, registry_path: Path, as_json: bool, report_path: Path | None
) -> int:
    """Every version (of NAME), with its aliases."""
    from ..registry import Listing, Registry

    reg = Registry.open(registry_path)
    return emit(Report("registry list", Listing(reg.versions(name))), as_json, report_path)


@registry.command("show")
@click.argument("ref")
@registry_option
@report_options
def show(ref: str, registry_path: Path, as_json: bool, report_path: Path | None) -> int:
    """One version: NAME (the latest), NAME:VERSION or NAME@ALIAS."""
    from ..registry import Registry

    record = Registry.open(registry_path).get(ref)
    return emit(Report("registry show", record), as_json, report_path)


@registry.command("history")
@click.argument("name", required=False)
@click.option("--alias", help="Only this alias.")
@click.option(
    "--at",
    "when",
    help="What each alias pointed at, at this time (ISO 8601; local time unless it has a zone).",
)
@registry_option
@report_options
def history(
    name: str | None,
    alias: str | None,
    when: str | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Every alias change (of NAME): version, time, actor, reason, gates."""
    from ..registry import History, Registry

    reg = Registry.open(registry_path)
    until = None if when is None else parse_time(when)
    changes = reg.history(name, alias, until=until)
    if until is not None:  # the last change of each alias before then: what it pointed at
        last = {(c.name, c.alias): c for c in changes}
        changes = [c for c in last.values() if c.version is not None]
    return emit(Report("registry history", History(changes)), as_json, report_path)


@registry.command("rollback")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="", help="Recorded in the history.")
@registry_option
@report_options
def rollback(
    name: str,
    alias: str,
    reason: str,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Return NAME@ALIAS to the version that held it before."""
    from ..registry import History, Registry

    change = Registry.open(registry_path).rollback(name, alias, reason=reason)
    return emit(Report("registry rollback", History([change])), as_json, report_path)


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (local time when it names no zone)."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time", hint="write ISO 8601, e.g. 2026-12-01T14:03"
        ) from None
    return moment.timestamp()


def _add_admin_commands() -> None:
    """The maintenance verbs of registry_admin (which imports registry_option from here)."""
    from .registry_admin import fsck_command

    registry.add_command(fsck_command)


_add_admin_commands()

from .registry_share import SHARE_VERBS  # noqa: E402 (they use registry_option, above)

for _verb in SHARE_VERBS:
    registry.add_command(_verb)

from .registry_gates import GATE_VERBS  # noqa: E402 (they use registry_option, above)

for _verb in GATE_VERBS:
    registry.add_command(_verb)

from .follow import registry_serve  # noqa: E402 (the read-only HTTP server for `ferry follow`)

registry.add_command(registry_serve)

"""`ferry registry export / import / new-key`: share versions between registries, and make the
key that encrypts models at rest (onnxferry.registry.bundle, onnxferry.registry.crypto).

    ferry registry new-key -o keys/registry.key   # AES-256 key (hex), mode 0600
    ferry registry export resnet:1 -o resnet-1.tar
    ferry registry import resnet-1.tar --registry other --public-key keys/public_key.pem

`import` checks the bundle before anything is registered: exit 2 for a bundle that is unsafe
(links, absolute names, ``..``) or not a bundle, 1 for files that do not match its manifest
or a signature that does not verify (an unsigned bundle with --public-key included). An
encrypted version stays encrypted; its key is needed only to check it (--encrypt-key-file or
$FERRY_REGISTRY_KEY, and always with --public-key).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..report import Report
from .options import encrypt_key_option, public_key_option, report_options
from .registry import registry_option
from .render import emit, emit_fields


@click.command("export")
@click.argument("ref")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    help="The bundle to write (a folder: NAME-VERSION.tar inside; default: that in .).",
)
@registry_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_command(ref: str, out: Path | None, registry_path: Path, as_json: bool) -> int:
    """Write version REF (NAME:VERSION, NAME@ALIAS or NAME) as one tar bundle: its model,
    external data, signature, golden data and lineage, as stored."""
    from ..registry import Registry
    from ..registry.bundle import export_version

    reg = Registry.open(registry_path)
    record = reg.get(ref)
    path = export_version(reg, record.ref, out if out is not None else Path("."))
    return emit_fields(
        {
            "bundle": str(path),
            "version": record.ref,
            "digest": record.digest,
            "bytes": str(path.stat().st_size),
            "signed": "yes" if record.signature else "no",
            "encrypted": "yes" if record.encrypted else "no",
        },
        as_json,
    )


@click.command("import")
@click.argument("bundle", type=click.Path(path_type=Path))
@public_key_option("to verify the bundle's signature with (an unsigned bundle is refused)")
@click.option("--name", help="Register it under this name (default: its own).")
@encrypt_key_option(
    "of an encrypted bundle, to check its model in memory (needed with --public-key)"
)
@registry_option
@report_options
def import_command(
    bundle: Path,
    public_key: Path | None,
    name: str | None,
    encrypt_key_file: Path | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Check BUNDLE (from `ferry registry export`) and register it as the next version of its
    name."""
    from ..registry import Registry
    from ..registry.bundle import import_bundle
    from ..registry.crypto import load_key

    key = load_key(encrypt_key_file) if encrypt_key_file is not None else None
    reg = Registry.open(registry_path, create=True)
    record = import_bundle(reg, bundle, public_key=public_key, name=name, key=key)
    return emit(Report("registry import", record), as_json, report_path)


@click.command("new-key")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key file to write (mode 0600; an existing file is kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the key's path as JSON.")
def new_key(out: Path, as_json: bool) -> int:
    """Make a random AES-256 key for `ferry registry add --encrypt-key-file`."""
    from ..registry.crypto import generate_key

    return emit_fields({"key": str(generate_key(out))}, as_json)


SHARE_VERBS: list[click.Command] = [export_command, import_command, new_key]
"""The verbs this module adds to `ferry registry`."""

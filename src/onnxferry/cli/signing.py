"""`ferry keygen`, `ferry sign`, `ferry verify`: OpenSSF model signing of a model and its data.

    ferry keygen -o keys                              # keys/private_key.pem (0600), public
    ferry sign model.onnx --key keys/private_key.pem  # model.onnx.sig, beside the model
    ferry verify model.onnx --public-key keys/public_key.pem

`verify` exits 0 when the model and its external data match the signature, 1 when they do
not (one line naming the file), 2 for a missing path or an unusable key.

Certificate mode: `ferry sign PATH --key KEY --certificate CERT.pem [--certificate-chain
INTERMEDIATE.pem ...]` and `ferry verify PATH --certificate-chain ROOT.pem` (instead of
--public-key: exactly one of the two). The signing certificate needs KeyUsage
digitalSignature or ExtendedKeyUsage codeSigning (model-signing's rule): `sign` refuses
another one (exit 2), and a signature made with one fails `verify` (exit 1).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..report import Report
from .options import certificate_chain_option, public_key_option, report_options
from .render import echo_json, emit_fields

_CHAIN_SIGN_HELP = (
    "A PEM file of certificates between the signing certificate and the root (repeat for "
    "more); they go into the signature with it."
)
_CHAIN_VERIFY_HELP = (
    "A PEM file of trusted certificates, including the self-signed root (repeat for more): "
    "verify a certificate signature with these instead of --public-key."
)


@click.command()
@click.option(
    "-o",
    "--outdir",
    "keydir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory for private_key.pem (mode 0600) and public_key.pem.",
)
@click.option(
    "--curve",
    type=click.Choice(["P-256", "P-384"]),
    default="P-256",
    show_default=True,
    help="The ECDSA curve (model-signing takes no Ed25519 or RSA keys).",
)
@click.option("--force", is_flag=True, help="Replace a key pair already in KEYDIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the key paths as JSON.")
def keygen(keydir: Path, curve: str, force: bool, as_json: bool) -> int:
    """Make an ECDSA key pair for `ferry sign` and `ferry verify`."""
    from ..signing import generate_keys

    private, public = generate_keys(keydir, "P-384" if curve == "P-384" else "P-256", force=force)
    return emit_fields({"private key": str(private), "public key": str(public)}, as_json)


@click.command("sign")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "private_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ECDSA private key (PEM), e.g. from `ferry keygen`.",
)
@click.option(
    "--certificate",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign in certificate mode with this X.509 certificate (PEM) for --key; it needs "
    "KeyUsage digitalSignature or ExtendedKeyUsage codeSigning.",
)
@certificate_chain_option(_CHAIN_SIGN_HELP)
@click.option(
    "-o",
    "--output",
    "signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signature (default: PATH.sig).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the signature's path as JSON.")
def sign_command(
    path: Path,
    private_key: Path,
    certificate: Path | None,
    certificate_chain: tuple[Path, ...],
    signature: Path | None,
    as_json: bool,
) -> int:
    """Sign a model file with its external data (or a directory, every file in it)."""
    from ..signing import sign

    out = sign(
        path, private_key, signature, certificate=certificate, certificate_chain=certificate_chain
    )
    return emit_fields({"path": str(path), "signature": str(out)}, as_json)


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@public_key_option("matching the signing key (or --certificate-chain)")
@certificate_chain_option(_CHAIN_VERIFY_HELP)
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The signature to check (default: PATH.sig).",
)
@report_options
def verify_command(
    path: Path,
    public_key: Path | None,
    certificate_chain: tuple[Path, ...],
    signature: Path | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Check a model (with its external data) against its signature: exit 0 verified, 1 not."""
    from ..signing import verify

    result = verify(path, public_key, signature, certificate_chain=certificate_chain)
    report = Report("verify", result)
    if as_json:
        echo_json(report.to_json())
    elif result.ok:
        signer = f", signed by {result.signer}" if result.signer else ""
        click.echo(f"verified: {path} ({', '.join(result.files)}){signer}")
    if report_path is not None:
        report.write(report_path)
    if not result.ok:
        click.echo(f"ferry: verification failed: {result.reason}", err=True)
    return report.exit_code

"""model-signing's certificate mode: the signing certificate and the chain that vouches for it.

    check_certificate(Path("pki/leaf.pem"), Path("pki/keys/private_key.pem"))  # for this key
    [leaf] = load_certificates(Path("pki/leaf.pem"), "certificate")
    assert can_sign(leaf), CERTIFICATE_USAGE
    trusted = load_certificates(Path("pki/root.pem"))   # what verify's chain must reach

``sign`` puts the signing certificate and the chain certificates given into the bundle
(``_certificate_signer``); ``verify`` checks that chain against the trusted certificates
given, which must include a self-signed root, then the signature with the certificate's key
(``_verified_with_chain``). The chain is checked at the signing certificate's notBefore time
(model-signing keeps no timestamp), so an expired certificate still verifies. model-signing
checks nothing of the signing certificate but its usage (``can_sign``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, one_line
from .files import PathLike

if TYPE_CHECKING:
    from cryptography import x509
    from model_signing import manifest as ms_manifest
    from model_signing._signing import sign_certificate, sign_sigstore_pb

    from .verifier import Signed, VerifyResult

CERTIFICATE_USAGE = (
    "model-signing accepts only a signing certificate with KeyUsage digitalSignature or "
    "ExtendedKeyUsage codeSigning"
)
"""What model-signing requires of the signing certificate (it checks nothing else of it)."""
_CERTIFICATE_HINT = "give PEM X.509 certificates (-----BEGIN CERTIFICATE-----)"


def _paths(paths: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    """One path or several (a lone str is one path, not a sequence of characters)."""
    if isinstance(paths, str | Path):
        return (Path(paths),)
    return tuple(Path(p) for p in paths)


def load_certificates(path: Path, what: str = "certificate chain") -> list[x509.Certificate]:
    """The PEM certificates in ``path`` (at least one); InputError otherwise."""
    from cryptography import x509

    if not path.is_file():
        raise InputError(f"{path}: no such {what} file", hint="check the path")
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as e:
        why = one_line(e, 120, line="first", period=False)
        raise InputError(f"{path}: not a PEM {what} ({why})", hint=_CERTIFICATE_HINT) from None


def can_sign(certificate: x509.Certificate) -> bool:
    """Whether model-signing accepts ``certificate`` as a signing certificate: KeyUsage
    digitalSignature, or ExtendedKeyUsage codeSigning (its check, which `sign` makes first)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    extensions = certificate.extensions
    try:
        if extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CODE_SIGNING in usages


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "an empty subject"


def check_certificate(path: Path, private_key: Path) -> None:
    """Check that ``path`` holds one PEM certificate, for ``private_key`` and one model-signing
    signs with (see ``can_sign``); InputError otherwise."""
    from cryptography.hazmat.primitives import serialization

    certificates = load_certificates(path, "certificate")
    if len(certificates) > 1:
        raise InputError(
            f"{path}: holds {len(certificates)} certificates, not one signing certificate",
            hint="pass the signing certificate alone and the others with --certificate-chain",
        )
    [certificate] = certificates
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    if certificate.public_key() != key.public_key():
        raise InputError(
            f"{path}: the certificate ({_subject(certificate)}) is not for the private key "
            f"{private_key}",
            hint="pass the certificate issued for this key",
        )
    if not can_sign(certificate):
        raise InputError(
            f"{path}: the certificate ({_subject(certificate)}) is not for signing: "
            f"{CERTIFICATE_USAGE}",
            hint="issue the signing certificate with one of these extensions",
        )


@contextmanager
def _quiet_certificate_checks() -> Iterator[None]:
    """model-signing logs (with the deprecated Logger.warn, a DeprecationWarning) when the
    signing certificate lacks KeyUsage or ExtendedKeyUsage; onnxferry gives its own reason."""
    logger = logging.getLogger("model_signing._signing.sign_certificate")
    disabled = logger.disabled
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The 'warn' method is deprecated", DeprecationWarning)
        logger.disabled = True
        try:
            yield
        finally:
            logger.disabled = disabled


def _certificate_signer(
    key: Path, certificate: Path, chain: Sequence[Path]
) -> sign_certificate.Signer:
    """model-signing's signer for the key and its certificate, the chain in the bundle."""
    from model_signing._signing import sign_certificate

    # model-signing 1.1.1 cannot load an empty chain (cryptography refuses empty PEM input):
    # load the certificate as the chain, then drop it, so the bundle carries it once.
    signer = sign_certificate.Signer(key, certificate, chain or [certificate])
    if not chain:
        signer._trust_chain = []
    return signer


def _verified_with_chain(
    bundle: sign_sigstore_pb.Signature,
    leaf: bytes,
    trusted: tuple[Path, ...],
    failed: Callable[[str], VerifyResult],
) -> Signed | VerifyResult:
    """The manifest ``bundle`` signs, once its signing certificate (``leaf``, DER) chains to a
    root in ``trusted`` and the signature verifies with it; ``failed(reason)`` otherwise."""
    from cryptography import x509
    from model_signing._signing import sign_certificate
    from OpenSSL import crypto

    try:
        certificate = x509.load_der_x509_certificate(leaf)
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"its signing certificate does not parse ({why})")
    subject = _subject(certificate)
    try:
        with _quiet_certificate_checks():
            manifest: ms_manifest.Manifest = sign_certificate.Verifier(trusted).verify(bundle)
    except crypto.X509StoreContextError as e:
        roots = ", ".join(str(p) for p in trusted)
        why = one_line(e, 200, line="first", period=False)
        return failed(
            f"the signing certificate ({subject}) does not chain to a self-signed root in {roots} "
            f"({why})"
        )
    except Exception as e:
        if not can_sign(certificate):
            return failed(
                f"the signing certificate ({subject}) is not for signing: {CERTIFICATE_USAGE}"
            )
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"the signature does not verify with its certificate ({subject}) ({why})")
    return manifest, subject

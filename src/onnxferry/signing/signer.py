"""Sign a model file with its external data, or a directory whole, into a model-signing bundle.

    signature = sign("model.onnx", "keys/private_key.pem")   # model.onnx.sig, beside the model
    assert signature == default_signature("model.onnx")
    sign("model.onnx", "keys/private_key.pem", "elsewhere.sig")

The bundle is model-signing's (a DSSE envelope over an in-toto statement), made in its
elliptic-key mode, or in its certificate mode with ``certificate=``. model-signing's public
API signs only whole directories, so ``sign`` drives its signer with a list of files through
its internal ``Payload``, EC-key ``Signer`` and bundle ``Signature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_text_atomic
from ..errors import InputError, UsageError
from .certificates import _certificate_signer, _paths, check_certificate, load_certificates
from .files import (
    PathLike,
    _existing,
    _hashing_config,
    _ignored,
    _model_files,
    _relative,
    default_signature,
)
from .keys import check_key

if TYPE_CHECKING:
    from model_signing._signing import sign_ec_key


def sign(
    path: PathLike,
    private_key: PathLike,
    signature: PathLike | None = None,
    *,
    certificate: PathLike | None = None,
    certificate_chain: PathLike | Sequence[PathLike] = (),
) -> Path:
    """Sign a model file with its external data (or a directory, whole) with an ECDSA private
    key; returns the signature's path (default ``<path>.sig``), written atomically.

    With ``certificate`` (PEM, for that key), model-signing's certificate mode: the bundle
    carries the certificate and the ``certificate_chain`` files' certificates (intermediates,
    optionally the root) for ``verify(..., certificate_chain=...)``.

    InputError for a missing path, key or certificate, a file that is not an ONNX model (or
    whose external data is unsafe), a key model-signing cannot use (Ed25519, RSA, encrypted),
    and a certificate that is not for the key or not for signing (``CERTIFICATE_USAGE``).
    """
    from model_signing._signing import sign_sigstore_pb
    from model_signing._signing import signing as ms_signing

    path = _existing(path, "model file or directory")
    key = Path(private_key)
    chain = _paths(certificate_chain)
    if chain and certificate is None:
        raise UsageError(
            "a certificate chain without a signing certificate",
            hint="pass the signing certificate too (--certificate CERT)",
        )
    check_key(key, private=True)
    if certificate is not None:
        check_certificate(Path(certificate), key)
        for file in chain:
            load_certificates(file)
    out = Path(signature) if signature is not None else default_signature(path)
    if path.is_dir():
        config = _hashing_config().set_ignored_paths(
            paths=_ignored(path, out), ignore_git_paths=True
        )
        try:
            manifest = config.hash(path)
        except ValueError as e:  # "Cannot use '<path>' because it is a symlink"
            if "symlink" not in str(e):
                raise
            raise InputError(
                f"{path}: {e.args[0].split(' because')[0].removeprefix('Cannot use ')} is a "
                "symbolic link, which a signature does not follow",
                hint="replace the link with the file it points to, or sign the model file",
            ) from None
        except OSError as e:
            raise InputError(f"{path}: cannot read {e.filename}: {e.strerror}") from None
    else:
        files = _relative(_model_files(path), path.parent)
        manifest = _hashing_config().hash(path.parent.resolve(), files_to_hash=files)
    signer = _signer(key, None if certificate is None else Path(certificate), chain)
    signed = signer.sign(ms_signing.Payload(manifest))
    assert isinstance(signed, sign_sigstore_pb.Signature)
    return write_text_atomic(out, signed.bundle.to_json())


def _signer(key: Path, certificate: Path | None, chain: Sequence[Path]) -> sign_ec_key.Signer:
    """model-signing's signer for the key, or for the key and its certificate."""
    from model_signing._signing import sign_ec_key

    if certificate is None:
        return sign_ec_key.Signer(key)
    return _certificate_signer(key, certificate, chain)

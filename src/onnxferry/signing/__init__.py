"""Sign a model with its external data (OpenSSF model-signing), and verify it before use.

    private, public = generate_keys("keys")          # ECDSA P-256; the private key is 0600
    signature = sign("model.onnx", private)          # model.onnx.sig, beside the model
    result = verify("model.onnx", public)
    assert result.ok, result.reason                  # reason names the file at fault

A model file is signed as the set of itself and its external data files (what
``Model.load(path).external_files`` lists), hashed file by file into a model-signing manifest
whose names are relative to the model's directory; other files in that directory are not
covered, so a stray file next to the model does not break its verification. A new external
data file can only come with a changed model file, which fails. A directory is signed whole:
every file in it (git files and the signature itself aside), so there an added file fails too.

The signature is model-signing's Sigstore bundle (a DSSE envelope over an in-toto statement),
made in its elliptic-key mode: the same file `model_signing verify key --ignore_unsigned_files`
accepts for a model file's directory. model-signing's public API signs only whole directories,
so ``sign`` drives its signer with a list of files through three of its internal classes
(``Payload``, the EC-key ``Signer``/``Verifier`` and the bundle ``Signature``), pinned by the
lock and exercised by tests/test_signing.py. model-signing accepts ECDSA keys on P-256, P-384
and P-521 only (not Ed25519 or RSA).

Certificate mode (model-signing's too): ``sign(..., certificate=CERT, certificate_chain=[...])``
puts the signing certificate and the chain certificates given into the bundle, and
``verify(path, certificate_chain=[ROOT])`` checks that chain against the trusted certificates
given, which must include a self-signed root (an intermediate alone is no trust anchor), then
the signature with the certificate's key. The chain is checked at the signing certificate's
notBefore time (model-signing keeps no timestamp), so an expired certificate still verifies.
model-signing accepts only a signing certificate with KeyUsage digitalSignature or
ExtendedKeyUsage codeSigning: ``sign`` refuses another one (InputError), and a signature
made with one fails ``verify``. A key signature is verified with a public key and a
certificate signature with a chain, never across (a failure saying which to use).

``verify`` never raises for a model that fails: every exception inside verification (a
corrupt signature, a wrong key, a certificate from another CA, an unreadable file) is a
failed ``VerifyResult`` with a one-line reason. Missing paths, and keys or certificates it
cannot use, are InputError (exit 2), before any verification starts.

Modules: ``keys`` (generate_keys, check_key), ``certificates`` (certificate mode),
``files`` (what a signature covers), ``signer`` (sign), ``verifier`` (verify,
verify_contents, VerifyResult).
"""

from .certificates import CERTIFICATE_USAGE, can_sign, check_certificate, load_certificates
from .files import PathLike, default_signature
from .keys import (
    CURVES,
    PRIVATE_KEY,
    PUBLIC_KEY,
    SUPPORTED_CURVES,
    Curve,
    check_key,
    generate_keys,
)
from .signer import sign
from .verifier import Signed, Trust, VerifyResult, load_verified, verify, verify_contents

__all__ = [
    "CERTIFICATE_USAGE",
    "CURVES",
    "PRIVATE_KEY",
    "PUBLIC_KEY",
    "SUPPORTED_CURVES",
    "Curve",
    "PathLike",
    "Signed",
    "Trust",
    "VerifyResult",
    "can_sign",
    "check_certificate",
    "check_key",
    "default_signature",
    "generate_keys",
    "load_certificates",
    "load_verified",
    "sign",
    "verify",
    "verify_contents",
]

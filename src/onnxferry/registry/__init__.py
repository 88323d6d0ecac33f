"""A model registry: signed, numbered versions, aliases with promotion gates, and history.

    from onnxferry.registry import Registry
    reg = Registry.open("registry/", create=True)
    v = reg.add("out/model.onnx", "resnet", golden="out/golden/", sign_key="keys/private_key.pem")
    reg.set_alias("resnet", "staging", v.version)

Modules: ``catalog`` (SQLite), ``store`` (fsspec artifacts), ``core`` (Registry), ``records``
(VersionRecord, AliasChange, Ref and the report bodies), ``adding`` (registering a version),
``crypto`` (AES-GCM at rest), ``bundle`` (export and import of a version as one checked tar),
``trust`` (the signature gate's trusted keys), ``gates`` (promotion gates), ``sidebyside``
(parity and interleaved latency of two versions), ``diff`` (two versions side by side).
"""

from .core import Registry
from .records import AliasChange, History, Listing, Ref, VersionRecord

__all__ = ["AliasChange", "History", "Listing", "Ref", "Registry", "VersionRecord"]

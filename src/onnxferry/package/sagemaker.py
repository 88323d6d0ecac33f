"""The ``sagemaker`` target: ``model.tar.gz`` as SageMaker unpacks it into /opt/ml/model, and
``sagemaker.json``, the container contract that serves it.

    result = build(PackageSource.resolve("model.onnx"), Path("out/sagemaker"), {})
    result.files            # ['model.tar.gz', 'sagemaker.json']
    result.ok               # the tarball re-opens, its members are safe and its model loads

The tarball holds a model repository (``<name>/1/model.onnx``, its external data beside it,
and ``<name>/ferry.toml`` when the source repository has one): regular files only, relative
names, owner root, mode 0644, a fixed mtime (the same model gives the same bytes), written
under a temporary name and renamed into place. The container runs ``ferry serve
--sagemaker``: port 8080, the model from ``$SM_MODEL_DIR`` (/opt/ml/model), ``GET /ping``
and ``POST /invocations`` (serve/sagemaker.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import atomic_write
from ..errors import InputError
from ..model import Model
from .base import Check, Options, Packaged, PackageSource, write_tree

TARBALL = "model.tar.gz"
CONTRACT = "sagemaker.json"
PORT = 8080
MODEL_DIR = "/opt/ml/model"
_MTIME = 315532800  # 1980-01-01, as zip and reproducible builds use


def build(source: PackageSource, outdir: Path, options: Mapping[str, Any]) -> Packaged:
    """Write ``model.tar.gz`` and ``sagemaker.json`` under ``outdir``, and check the tarball."""
    Options("sagemaker", options, ())  # it takes none
    result = Packaged("sagemaker", source.name, str(outdir))
    members = _members(source)
    target = outdir / TARBALL
    with atomic_write(target) as f:
        _write_tarball(f, members)
    result.files.append(TARBALL)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    contract = {
        "model": source.name,
        "model_data": {"file": TARBALL, "sha256": digest, "unpacks_to": MODEL_DIR},
        "container": {
            "command": ["ferry", "serve", "--sagemaker"],
            "port": PORT,
            "environment": {"SM_MODEL_DIR": MODEL_DIR},
            "health": "GET /ping",
            "invocations": "POST /invocations",
            "content_types": ["application/json", "application/x-npy"],
            "accept": ["application/json", "application/x-npy"],
        },
    }
    write_tree(outdir, {CONTRACT: json.dumps(contract, indent=2) + "\n"}, result)
    result.checks.extend(check_tarball(target, source.name))
    return result


def _members(source: PackageSource) -> dict[str, Path]:
    """{name in the tarball: file}: the model, its external data, and ferry.toml."""
    model = Model.load(source.model)
    folder = f"{source.name}/1"
    members = {f"{folder}/model.onnx": source.model}
    base = source.model.parent.resolve()
    for data in model.external_files:
        members[f"{folder}/{data.resolve().relative_to(base).as_posix()}"] = data
    if source.repository is not None:
        config = source.model.parents[1] / "ferry.toml"
        if config.is_file():
            members[f"{source.name}/ferry.toml"] = config
    return members


def _write_tarball(out: BinaryIO, members: Mapping[str, Path]) -> None:
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=_MTIME) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            path = members[name]
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode, info.mtime = 0o644, _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as f:
                tar.addfile(info, f)


def check_tarball(path: Path, name: str) -> list[Check]:
    """The tarball re-opens with only safe members, and the model it unpacks loads."""
    tool = f"tarfile, Model.load ({path.name})"
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            unsafe = [
                m.name
                for m in members
                if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/")
            ]
            if unsafe:
                return [Check("tarball", False, f"unsafe members: {unsafe[:5]}", tool)]
            with tempfile.TemporaryDirectory() as tmp:
                tar.extractall(tmp, filter="data")
                model = Model.load(Path(tmp) / name / "1" / "model.onnx")
                inputs = model.signature.input_names
    except (OSError, tarfile.TarError, InputError) as e:
        return [Check("tarball", False, f"{type(e).__name__}: {e}", tool)]
    detail = f"{len(members)} files; {name}/1/model.onnx loads (inputs {inputs})"
    return [Check("tarball", True, detail, tool)]

"""Torch model sources resolved to a module: an ``nn.Module``, an ``ExportedProgram``, a
``FILE.py:FUNCTION`` factory, a TorchScript file, a ``.pt2`` file, a trusted pickle or a
Hugging Face model folder (``pretrained``).

    loaded = resolve_source("models/net.py:make", options)  # make() -> module or (module, inputs)
    loaded = resolve_source("net.pt2", options)             # torch.export.save'd, with its inputs
    loaded.module, loaded.kind, loaded.program, loaded.example
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..base import ConversionError, ConvertOptions
from ..factory import is_factory, run_factory
from .pretrained import PRETRAINED_AXES, from_pretrained_dir, is_pretrained_dir
from .quiet import quiet, torch_error


@dataclass
class Loaded:
    module: Any  # nn.Module, ScriptModule, or an ExportedProgram's module()
    kind: str  # "module", "torchscript", "exported program"
    description: str
    program: Any = None  # the ExportedProgram, for that kind
    example: Any = None  # example inputs the factory or program brought
    notes: list[str] = field(default_factory=list)  # what a factory warned
    axes: Mapping[str, dict[int, str]] | None = None
    """Dynamic axes by input name where the source knows more than dim 0 (a Hugging Face
    folder: the sequence too); used when the user names none."""


def resolve_source(source: Any, options: ConvertOptions) -> Loaded:
    import torch

    if isinstance(source, torch.export.ExportedProgram):
        return _from_program(source, "a torch.export ExportedProgram")
    if isinstance(source, torch.nn.Module):
        return _from_module(source, None, f"a {type(source).__name__} module")
    if isinstance(source, (str, Path)):
        if is_factory(source):
            return _from_factory(str(source))
        if is_pretrained_dir(Path(source)):
            module, example, description = from_pretrained_dir(Path(source), options)
            loaded = _from_module(module, example, description)
            loaded.axes = PRETRAINED_AXES
            return loaded
        return _from_file(Path(source), options)
    raise InputError(
        f"a {type(source).__name__} is not a PyTorch model",
        hint="give a torch.nn.Module, an ExportedProgram, a FILE.py:FUNCTION factory, "
        "a TorchScript file or a .pt2 file",
    )


def _from_module(module: Any, example: Any, description: str) -> Loaded:
    import torch

    module.eval()
    kind = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "module"
    return Loaded(module, kind, description, None, example)


def _from_program(program: Any, description: str) -> Loaded:
    example = getattr(program, "example_inputs", None)
    if isinstance(example, tuple) and len(example) == 2 and not example[1]:
        example = tuple(example[0])
    elif isinstance(example, tuple) and len(example) == 2 and not example[0]:
        example = dict(example[1])
    else:
        example = None
    module = program.module()
    return Loaded(module, "exported program", description, program, example)


def _from_factory(spec: str) -> Loaded:
    import torch

    built = run_factory(spec)
    if isinstance(built.model, torch.export.ExportedProgram):
        loaded = _from_program(built.model, f"the ExportedProgram from {spec}")
        loaded.example = built.example if built.example is not None else loaded.example
    elif isinstance(built.model, torch.nn.Module):
        loaded = _from_module(built.model, built.example, built.description)
    else:
        raise ConversionError(
            f"the factory {spec} returned a {type(built.model).__name__}, not a torch.nn.Module",
            hint="return the module, or (module, example_inputs)",
        )
    loaded.notes += built.notes
    return loaded


def _from_file(path: Path, options: ConvertOptions) -> Loaded:
    import torch

    if not path.exists():
        raise InputError(f"{path}: no such file", hint="check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a file", hint="give a TorchScript or .pt2 file")
    if path.suffix == ".py":
        raise InputError(
            f"{path} is Python source; name the function that builds the model",
            hint=f"give {path}:FUNCTION (a function that returns the module)",
        )
    hint = (
        "save the model with torch.jit.save or torch.export.save, or give a factory "
        "FILE.py:FUNCTION that builds it"
    )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        if _legacy_torch_save(path):
            return _from_pickle(path, options, hint)
        raise InputError(
            f"{path}: not a TorchScript, torch.export or torch.save file (not a zip archive)",
            hint=hint,
        ) from None
    tails = {n.split("/", 1)[-1] for n in names}
    if ".data/extern_modules" in tails:
        return _from_torch_package(path, names, options, hint)
    try:
        if "archive_format" in tails or any(n.startswith("models/") for n in tails):
            with quiet():
                program = torch.export.load(str(path))
            return _from_program(program, f"the ExportedProgram in {path}")
        if "constants.pkl" in tails or any(n.startswith("code/") for n in tails):
            with quiet():  # torch 2.13 deprecates TorchScript, and says so on every load
                load = torch.jit.load
                module = load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            return _from_module(module, None, f"the TorchScript module in {path}")
    except Exception as e:
        raise InputError(f"{path}: torch cannot load it: {torch_error(e)}", hint=hint) from e
    if "data.pkl" in tails:
        return _from_pickle(path, options, hint)
    raise InputError(f"{path}: not a TorchScript, torch.export or torch.save file", hint=hint)


_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""How a torch.save file from before PyTorch 1.6 (not a zip) begins: pickle protocol 2, then
torch's magic number as a pickled long."""


def _legacy_torch_save(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def is_torch_save(path: Path) -> bool:
    """Whether ``torch.save`` wrote ``path``, whatever its name (``pytorch_model.bin``, a
    ``model.pkl``): a zip archive with a ``data.pkl``, or the format before PyTorch 1.6."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1] == "data.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return path.is_file() and _legacy_torch_save(path)


def _trusted(options: ConvertOptions, what: str, hint: str) -> None:
    """InputError unless the user trusts pickles: loading ``what`` runs code."""
    if not options.trust_pickle:
        raise InputError(
            f"{what}, and unpickling it runs code",
            hint=f"pass --trust-pickle if you trust its origin, or {hint.split(', or ')[-1]}",
        )


def _from_torch_package(path: Path, names: list[str], options: ConvertOptions, hint: str) -> Loaded:
    """The module pickled in a ``torch.package`` archive (Silero's models ship so): the
    archive carries its own Python code, so loading it needs ``trust_pickle``. Its pickles
    are the files outside ``.data/`` that are not source; the first that holds a module is
    taken."""
    import torch
    from torch.package.package_importer import PackageImporter

    _trusted(options, f"{path} is a torch.package archive (its own Python code and pickles)", hint)
    pickles: list[tuple[str, str]] = []
    for entry in names:  # ROOT/PACKAGE/DIRS/NAME: load_pickle("PACKAGE.DIRS", "NAME")
        if "/.data/" not in f"/{entry}" and not entry.endswith((".py", ".debug_pkl")):
            package, _, name = entry.split("/", 1)[-1].rpartition("/")
            if package:  # not torch's own files at the top (byteorder)
                pickles.append((package.replace("/", "."), name))
    try:
        with quiet():  # torch.package's storages warn that TypedStorage is deprecated
            importer = PackageImporter(str(path))
            loaded = {(pkg, name): importer.load_pickle(pkg, name) for pkg, name in pickles}
    except Exception as e:
        message = f"{path}: torch.package cannot load it: {torch_error(e)}"
        raise InputError(message, hint=hint) from e
    for (package, name), obj in loaded.items():
        if isinstance(obj, torch.nn.Module):
            where = f"{package}/{name}"
            return _from_module(obj, None, f"the {type(obj).__name__} in {path} ({where})")
    held = ", ".join(sorted({type(obj).__name__ for obj in loaded.values()})) or "nothing"
    package, name = pickles[0] if pickles else ("PACKAGE", "RESOURCE")
    raise InputError(
        f"{path} is a torch.package archive whose pickles hold {held}, not a torch.nn.Module",
        hint="give a factory FILE.py:FUNCTION that returns the network inside it "
        f"(from torch.package.PackageImporter(path).load_pickle({package!r}, {name!r}))",
    )


def _from_pickle(path: Path, options: ConvertOptions, hint: str) -> Loaded:
    import torch

    _trusted(options, f"{path} is a pickled torch.save file", hint)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{path}: torch cannot load it: {torch_error(e)}", hint=hint) from e
    where = str(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), torch.nn.Module):
        obj, where = obj["model"], f"{path} (its 'model' entry)"  # a training checkpoint's
    if isinstance(obj, torch.nn.Module):
        return _from_module(obj, None, f"the {type(obj).__name__} pickled in {where}")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        raise InputError(
            f"{path} holds a training checkpoint ({keys}): weights, not a model",
            hint="give a factory FILE.py:FUNCTION that builds the model and loads its "
            "checkpoint['state_dict']",
        )
    if isinstance(obj, Mapping):
        raise InputError(
            f"{path} holds a state_dict (weights only), not a model",
            hint="give a factory FILE.py:FUNCTION that builds the model and loads these weights",
        )
    raise InputError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module", hint=hint)


def module_label(module: Any, loaded: Loaded) -> str:
    if loaded.program is not None:
        return "ExportedProgram"
    name = getattr(module, "original_name", None) or type(module).__name__
    return str(name)

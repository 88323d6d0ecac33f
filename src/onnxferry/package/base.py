"""What every packaging target shares: the source it packages, the files it writes, the checks
it runs, and the report.

    source = PackageSource.resolve("model.onnx")       # or a repository, or registry:PATH#n@a
    result = Packaged("docker", source.name, "out/")
    result.files.append("Dockerfile")
    result.checks.append(Check("hadolint", True, "0 warnings", tool="hadolint 2.15"))
    result.ok, result.to_dict()
    opts = Options("k8s", {"replicas": "3"}, ("replicas", "cpu"))
    opts.integer("replicas", 2), opts.text("cpu", "1"), opts.has("cpu")

A source is a model file, a Triton-layout repository (``REPO/<name>/<version>/model.onnx``),
or a registry alias ``registry:PATH#name@alias`` (the version it points at, verified against
its digest). Targets write through ``write_tree`` (every file atomically, the folder made),
record each file they wrote and each check they ran (the tool, what it said); a failed check
makes the report fail (exit 1). Targets that run what they wrote against ONNX Runtime
(mobile, openvino, tflite) take their feed sets from ``package.checking``.

``Options`` is every target's ``--set KEY=VALUE`` parser: it refuses a key the target does not
take, and its readers (``text``, ``flag``, ``number``, ``integer``) refuse a value of the
wrong kind; each error is a UsageError on one line naming the target, the key and what it
takes. Target-specific checks (a platform's name, a digest's form) stay with the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..atomic import write_bytes_atomic
from ..errors import InputError, UsageError
from ..model import Model, resolve_model_path
from ..report import Table

REGISTRY_PREFIX = "registry:"


@dataclass(frozen=True)
class PackageSource:
    """The model a target packages: ``name``, a local ``model`` file (with its external data
    beside it) and, for a repository, the ``repository`` folder it came from."""

    name: str
    model: Path
    repository: Path | None = None
    registry_ref: str | None = None

    @classmethod
    def resolve(cls, text: str | Path) -> PackageSource:
        """A model file, a repository folder or ``registry:PATH#name@alias``; InputError with a
        hint for anything else."""
        text = str(text)
        if text.startswith(REGISTRY_PREFIX):
            return cls._from_registry(text[len(REGISTRY_PREFIX) :])
        path = Path(text)
        if path.is_dir() and not list(path.glob("*.onnx")) and not (path / "model.onnx").exists():
            found = sorted(path.glob("*/*/model.onnx"))
            if not found:
                raise InputError(
                    f"{path} holds no model: neither a .onnx file nor REPO/<name>/<version>/"
                    "model.onnx",
                    hint="give a model file, a model repository or registry:PATH#name@alias",
                )
            names = sorted({p.parents[1].name for p in found})
            if len(names) > 1:
                raise InputError(
                    f"{path} holds several models ({', '.join(names)})",
                    hint="package one model: give REPO/<name>",
                )
            newest = max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
            return cls(names[0], newest, repository=path)
        file = resolve_model_path(path)
        Model.load(file)  # the safe loader: a bad model is one line here, not in a container
        name = file.parent.name if file.stem == "model" and file.parent.name else file.stem
        return cls(name, file)

    @classmethod
    def _from_registry(cls, text: str) -> PackageSource:
        from ..registry import Ref, Registry

        path, _, ref = text.partition("#")
        if not path or not ref:
            raise InputError(
                f"registry:{text} names no model",
                hint="write registry:PATH#name@alias (or #name:version)",
            )
        registry = Registry(path)
        record = registry.get(Ref.parse(ref))
        if record.encrypted:
            raise InputError(
                f"{record.ref} is encrypted; packaging would write it in clear",
                hint="package an unencrypted version",
            )
        here = registry.store.local_path(record.location, record.model_file)
        if here is None:
            raise InputError(
                f"{record.ref} is in a remote store ({registry.store.url})",
                hint="export it (`ferry registry export`) and package the model file",
            )
        return cls(record.name, here, registry_ref=f"{record.name}:{record.version}")


@dataclass(frozen=True)
class Check:
    """One check a target ran on what it wrote: the ``tool`` and what it found."""

    name: str
    ok: bool
    detail: str
    tool: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "tool": self.tool}


@dataclass
class Packaged:
    """What one target wrote (paths relative to ``outdir``) and checked (ReportBody)."""

    target: str
    model: str
    outdir: str
    files: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "outdir": self.outdir,
            "files": list(self.files),
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
        }

    def tables(self) -> list[Table]:
        files = [(f,) for f in self.files]
        checks = [(c.name, "PASS" if c.ok else "FAIL", c.tool, c.detail) for c in self.checks]
        return [
            Table(
                f"package {self.model} --target {self.target} -> {self.outdir}", ("file",), files
            ),
            Table("checks", ("check", "result", "tool", "detail"), checks),
        ]


def write_tree(outdir: Path, files: Mapping[str, str | bytes], result: Packaged) -> None:
    """Write ``files`` (``{relative path: text or bytes}``) under ``outdir``, each atomically,
    and record them in ``result``."""
    for rel, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        write_bytes_atomic(outdir / rel, data)
        result.files.append(rel)


_N = TypeVar("_N", int, float)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Options:
    """A target's ``--set KEY=VALUE`` options: ``given`` checked against the ``known`` keys
    (UsageError naming the first unknown one and listing what ``target`` takes), read through
    typed readers that refuse a value of the wrong kind (UsageError, one line)."""

    def __init__(self, target: str, given: Mapping[str, object], known: Iterable[str]) -> None:
        self.target = target
        self.known = tuple(known)
        self._given = {key: str(value) for key, value in given.items()}
        unknown = sorted(set(self._given) - set(self.known))
        if unknown:
            raise UsageError(
                f"{target}: unknown option {unknown[0]!r}",
                hint=f"{target} takes: {', '.join(self.known) or 'no options'}",
            )

    def has(self, key: str) -> bool:
        """Whether ``key`` was given."""
        return key in self._given

    def text(self, key: str, default: str) -> str:
        """``key``'s value as given, else ``default``."""
        return self._given.get(key, default)

    def flag(self, key: str, default: bool) -> bool:
        """``key`` as a boolean: true/false, yes/no, on/off, 1/0 (any case)."""
        if key not in self._given:
            return default
        text = self._given[key].strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise self.refuse(key, "a boolean (true/false, yes/no, on/off, 1/0)", "true")

    def number(self, key: str, default: float, *, low: float | None = None) -> float:
        """``key`` as a float (at least ``low`` when given)."""
        return self._read(key, default, float, low, "a number")

    def integer(self, key: str, default: int, *, low: int | None = None) -> int:
        """``key`` as an int (at least ``low`` when given)."""
        return self._read(key, default, int, low, "an integer")

    def _read(
        self, key: str, default: _N, convert: Callable[[str], _N], low: _N | None, kind: str
    ) -> _N:
        if key not in self._given:
            return default
        try:
            value = convert(self._given[key])
        except ValueError:
            raise self.refuse(key, kind, f"{default:g}") from None
        if low is not None and not value >= low:
            raise self.refuse(key, f"{kind} >= {low:g}", f"{default:g}")
        return value

    def refuse(self, key: str, wanted: str, example: str) -> UsageError:
        """The one-line error (to raise) for ``key``'s value, which is not ``wanted``; also
        for a target's own checks (a choice among names, a digest's form)."""
        given = self._given.get(key, "")
        shown = given if given.isprintable() and given.strip() == given else repr(given)
        return UsageError(
            f"{self.target}: --set {key}={shown} is not {wanted}",
            hint=f"e.g. --set {key}={example}",
        )

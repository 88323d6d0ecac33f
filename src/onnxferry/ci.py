"""CI/CD gates: the ferry commands a pipeline runs, and the pipeline files that run them.

    steps = ci_steps("model.py:build", "golden", name="classifier")
    print([step.name for step in steps])  # convert, check, test, optimize, sign, add, promote
    print(render("github", steps)[:40])
    print(sorted(TARGETS))  # github, gitlab, jenkins

``ci_steps`` is the one source of truth: every writer (GitHub Actions, GitLab CI, a Jenkins
declarative pipeline) runs exactly its commands, one job step / stage each, so the first gate
that fails stops the pipeline with ferry's exit code (1 verification failed, 2 input error).
A command is a ``ferry`` argv list; an element that is a variable (``$FERRY_REGISTRY``) is
left to the CI's shell, which reads it from the CI's secrets and variables:

- ``FERRY_SIGNING_KEY_FILE``: the path of the ECDSA private key (PEM) that signs the model;
  GitHub writes it from the ``FERRY_SIGNING_KEY`` secret, GitLab takes a *File* variable,
  Jenkins a secret-file credential ``ferry-signing-key``.
- ``FERRY_REGISTRY``: the registry folder (GitHub: the ``FERRY_REGISTRY`` repository
  variable; GitLab: a CI/CD variable; Jenkins: a secret-text credential ``ferry-registry``).

The registry's trusted keys (``ferry registry trust``) are its administrator's to set: the
pipeline signs, the promotion's signature gate checks against them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ._version import __version__
from .errors import UsageError

KEY_VARIABLE = "FERRY_SIGNING_KEY_FILE"
REGISTRY_VARIABLE = "FERRY_REGISTRY"
_VARIABLE = re.compile(r"\$([A-Z_][A-Z0-9_]*)")

# The extras a source's framework needs, by the source file's suffix (torch for a factory).
_EXTRAS = {
    ".py": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
    ".ckpt": "torch",
    ".keras": "tf",
    ".tflite": "tf",
    ".pkl": "sklearn",
    ".joblib": "sklearn",
    ".onnx": "",
}


@dataclass(frozen=True)
class Step:
    """One gate: its name (a job step / stage) and its ``ferry`` argv list."""

    name: str
    command: list[str]

    def shell(self) -> str:
        """The command as one shell line; variables stay unquoted-expandable ("$NAME")."""
        return " ".join(
            f'"{word}"' if _VARIABLE.fullmatch(word) else shlex.quote(word) for word in self.command
        )

    def expand(self, values: Mapping[str, str]) -> list[str]:
        """The argv the shell runs: each ``$NAME`` element replaced by ``values[NAME]``."""
        out = []
        for word in self.command:
            match = _VARIABLE.fullmatch(word)
            out.append(values[match.group(1)] if match else word)
        return out


def _source_file(source: str) -> str:
    """The file part of a source (``model.py`` of ``model.py:build``)."""
    head, sep, tail = source.rpartition(":")
    return head if sep and head and tail.isidentifier() else source


def default_name(source: str) -> str:
    """A registry name for a source: its file's stem, or its folder's name for ``model.*``."""
    path = PurePosixPath(_source_file(source))
    stem = path.stem if path.suffix else path.name
    if stem == "model" and path.parent.name:
        stem = path.parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "model"


def ci_steps(
    source: str,
    golden: str,
    *,
    name: str | None = None,
    workdir: str = "build/ferry",
    registry: str = f"${REGISTRY_VARIABLE}",
    key: str = f"${KEY_VARIABLE}",
    max_drop: float = 0.01,
    time_budget: float = 600.0,
    alias: str = "staging",
) -> list[Step]:
    """The gates in order: convert (verified) -> check -> test on golden data -> optimize
    within ``max_drop`` -> sign -> registry add -> promote to ``alias``."""
    if not source.strip() or not golden.strip():
        raise UsageError("the model source and the golden data must be named", hint="--model")
    if not 0 <= max_drop < 1:
        raise UsageError(f"--max-drop {max_drop} is not in [0, 1)", hint="e.g. --max-drop 0.01")
    if time_budget <= 0:
        raise UsageError(f"--time-budget {time_budget} is not positive", hint="e.g. 600")
    name = name or default_name(source)
    work = PurePosixPath(workdir)
    model, release = str(work / "model.onnx"), str(work / "release" / "model.onnx")
    add = ["ferry", "registry", "add", release, "--name", name, "--golden", golden]
    file = _source_file(source)
    if PurePosixPath(file).suffix in _EXTRAS:  # a file: its digest goes into the lineage
        add += ["--source", file]
    report = str(work / "release" / "report.json")  # beside the model: the lineage takes it
    optimize = ["ferry", "optimize", model, "-o", release, "--auto", "--max-drop", f"{max_drop:g}"]
    optimize += ["--inputs", golden, "--time-budget", f"{time_budget:g}", "--report", report]
    # the gates judge golden data at the budget optimize recorded in the release
    promote = ["ferry", "registry", "promote", name, "--to", alias, "--reason", "ferry ci"]
    return [
        Step("convert", ["ferry", "convert", source, "-o", model]),
        Step("check", ["ferry", "check", model]),
        Step("test", ["ferry", "test", model, golden]),
        Step("optimize", optimize),
        Step("sign", ["ferry", "sign", release, "--key", key]),
        Step("registry add", [*add, "--registry", registry]),
        Step(f"promote to {alias}", [*promote, "--registry", registry]),
    ]


def install_command(source: str) -> str:
    """``pip install onnxferry[...]==<this version>`` with the extras the steps need."""
    from .convert.checkpoint import is_checkpoint
    from .convert.torch.pretrained import names_a_transformers_model

    file = _source_file(source)
    extra = _EXTRAS.get(PurePosixPath(file).suffix, "tf")
    folder = Path(file)
    if folder.is_dir() and not is_checkpoint(folder) and names_a_transformers_model(folder):
        extra = "hf"  # a Hugging Face model folder, not musicnn's checkpoint and its config
    extras = ",".join(e for e in (extra, "optimize", "sign", "registry") if e)
    return f"python -m pip install 'onnxferry[{extras}]=={__version__}'"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def github(steps: Sequence[Step], source: str) -> str:
    """A GitHub Actions workflow: one job, one step per gate."""
    lines = [
        "# Written by `ferry ci init github`: the ferry gates, one step each; the first that",
        "# fails stops the job with ferry's exit code (1 verification failed, 2 input error).",
        "# Secrets: FERRY_SIGNING_KEY (the PEM private key).",
        "# Variables: FERRY_REGISTRY (the registry path).",
        "name: ferry",
        "on:",
        "  push:",
        "    branches: [main]",
        "  workflow_dispatch: {}",
        "permissions:",
        "  contents: read",
        "jobs:",
        "  gates:",
        "    runs-on: ubuntu-latest",
        "    timeout-minutes: 120",
        "    env:",
        f"      {REGISTRY_VARIABLE}: {_q('${{ vars.FERRY_REGISTRY }}')}",
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - uses: actions/setup-python@v5",
        "        with:",
        '          python-version: "3.11"',
        "      - uses: actions/cache@v4",
        "        with:",
        "          path: ~/.cache/pip",
        f"          key: {_q(f'ferry-pip-{__version__}-${{{{ runner.os }}}}')}",
        "      - name: install ferry",
        f"        run: {_q(install_command(source))}",
        "      - name: signing key",
        "        env:",
        f"          FERRY_SIGNING_KEY: {_q('${{ secrets.FERRY_SIGNING_KEY }}')}",
        "        run: |",
        '          key="$RUNNER_TEMP/ferry-signing-key.pem"',
        '          (umask 077 && printf \'%s\\n\' "$FERRY_SIGNING_KEY" > "$key")',
        f'          echo "{KEY_VARIABLE}=$key" >> "$GITHUB_ENV"',
    ]
    for step in steps:
        lines += [f"      - name: {_q(step.name)}", f"        run: {_q(step.shell())}"]
    return "\n".join(lines) + "\n"


def gitlab(steps: Sequence[Step], source: str) -> str:
    """A GitLab CI pipeline: one stage (and job) per gate, the work folder passed on."""
    work = str(PurePosixPath(steps[0].command[-1]).parent)
    lines = [
        "# Written by `ferry ci init gitlab`: the ferry gates, one stage each; the first that",
        "# fails stops the pipeline with ferry's exit code (1 verification failed, 2 input error).",
        f"# CI/CD variables: {KEY_VARIABLE} (type File: the PEM private key), "
        f"{REGISTRY_VARIABLE} (registry path).",
        "stages:",
        *[f"  - {_q(_slug(step.name))}" for step in steps],
        "default:",
        '  image: "python:3.11"',
        "  cache:",
        f"    key: {_q(f'ferry-pip-{__version__}')}",
        "    paths:",
        "      - .cache/pip",
        "  before_script:",
        f"    - {_q(install_command(source))}",
        "variables:",
        '  PIP_CACHE_DIR: "$CI_PROJECT_DIR/.cache/pip"',
    ]
    for step in steps:
        slug = _slug(step.name)
        lines += [
            f"{_q(slug)}:",
            f"  stage: {_q(slug)}",
            "  script:",
            f"    - {_q(step.shell())}",
            "  artifacts:",
            "    paths:",
            f"      - {_q(work)}",
        ]
    return "\n".join(lines) + "\n"


def _groovy(text: str) -> str:
    """A Groovy single-quoted string: no interpolation, so ``$NAME`` reaches the shell."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def jenkins(steps: Sequence[Step], source: str) -> str:
    """A declarative Jenkinsfile: one stage per gate."""
    lines = [
        "// Written by `ferry ci init jenkins`: the ferry gates, one stage each; the first that",
        "// fails stops the build with ferry's exit code (1 verification failed, 2 input error).",
        "// Credentials: ferry-signing-key (secret file, PEM private key), ferry-registry",
        "// (secret text, registry path).",
        "pipeline {",
        "    agent any",
        "    options { timeout(time: 2, unit: 'HOURS') }",
        "    environment {",
        f"        {KEY_VARIABLE} = credentials('ferry-signing-key')",
        f"        {REGISTRY_VARIABLE} = credentials('ferry-registry')",
        '        PATH = "${env.WORKSPACE}/.ferry-venv/bin:${env.PATH}"',
        "    }",
        "    stages {",
        "        stage('install ferry') {",
        "            steps {",
        "                sh 'python3 -m venv .ferry-venv'",
        f"                sh {_groovy(install_command(source))}",
        "            }",
        "        }",
    ]
    for step in steps:
        lines += [
            f"        stage({_groovy(step.name)}) {{",
            "            steps {",
            f"                sh {_groovy(step.shell())}",
            "            }",
            "        }",
        ]
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


TARGETS: dict[str, tuple[str, Callable[[Sequence[Step], str], str]]] = {
    "github": (".github/workflows/ferry.yml", github),
    "gitlab": (".gitlab-ci.yml", gitlab),
    "jenkins": ("Jenkinsfile", jenkins),
}


def render(target: str, steps: Sequence[Step], source: str = "model.py:build") -> str:
    """The pipeline file for ``target`` (github, gitlab, jenkins) running ``steps``."""
    if target not in TARGETS:
        raise UsageError(f"unknown CI target {target!r}", hint=f"one of {', '.join(TARGETS)}")
    return TARGETS[target][1](steps, source)

"""uv's options for the package indexes pip is configured with on this machine, one per line.

    .venv/bin/uv pip install $(.venv/bin/python requirements/uv_options.py) -r requirements/dev.lock

The Makefile installs the locks with uv (seconds where pip took minutes: pip downloaded every
wheel again and compiled every module), but uv does not read pip's configuration: its index
URL, extra index URLs, find-links folders and CA certificate (from pip.conf or PIP_* variables,
as `pip config list` shows them) are passed on, so both install from the same places. uv picks
the best match across all of them, as pip does (it would otherwise stop at the first index
that has a package at all). pip's constraints are not: the locks pin every version exactly,
and uv's hash-checking mode takes a constraint such as ``torch<=2.14.1`` for a requirement.
"""

from __future__ import annotations

import subprocess
import sys

FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
}


def pip_settings(python: str) -> dict[str, str]:
    """pip's effective settings, ``{key: value}``; a PIP_* variable over the files."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in sorted(listed.splitlines(), key=lambda ln: ln.startswith(":env:")):
        name, _, value = line.partition("=")
        key = name.rpartition(".")[2]
        settings[key] = value.strip().strip("'\"")
    return settings


def uv_options(settings: dict[str, str]) -> list[str]:
    """uv's options for pip's ``settings``."""
    options = ["--index-strategy", "unsafe-best-match"]
    for key, flag in FLAGS.items():
        for value in settings.get(key, "").split():
            options += [flag, value]
    if settings.get("cert"):
        options.append("--native-tls")  # the system's CA store, where pip's bundle comes from
    return options


if __name__ == "__main__":
    print("\n".join(uv_options(pip_settings(sys.executable))))

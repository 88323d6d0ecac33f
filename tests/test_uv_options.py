"""requirements/uv_options.py: uv is given the indexes pip is configured with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "requirements" / "uv_options.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("uv_options", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_settings_become_uv_options_each_list_item_its_own_flag() -> None:
    settings = {
        "index-url": "https://mirror.example/simple",
        "extra-index-url": "file:///srv/a/simple file:///srv/b/simple",
        "find-links": "/opt/wheels",
        "constraint": "/etc/pip/constraints.txt",  # the locks pin every version: not passed
        "cert": "/etc/ssl/certs/ca-certificates.crt",
        "default-timeout": "180",
    }
    assert _module().uv_options(settings) == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///srv/a/simple",
        "--extra-index-url", "file:///srv/b/simple",
        "--find-links", "/opt/wheels",
        "--native-tls",
    ]  # fmt: skip
    assert _module().uv_options({}) == ["--index-strategy", "unsafe-best-match"]


def test_a_pip_variable_overrides_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nfind-links = /from/file\nextra-index-url = file:///x/simple\n")
    env = {"PIP_CONFIG_FILE": str(config), "PIP_FIND_LINKS": "/from/env", "PATH": "/usr/bin"}
    printed = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert printed[printed.index("--find-links") + 1] == "/from/env"
    assert printed[printed.index("--extra-index-url") + 1] == "file:///x/simple"

"""TOML text as a dict: recipes and ``ferry.toml``.

    parse_toml(text)                              # {"name": "fold"}
    parse_toml("models.resnet.max_batch_size = 8")  # {"models": {"resnet": {...}}}

tomllib reads it (tomli before Python 3.11); malformed text raises the library's
TOMLDecodeError, a ValueError, and the caller names the file.
"""

from __future__ import annotations

import sys
from typing import Any


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text (a recipe, ``ferry.toml``) as a dict, with tomllib (tomli before Python 3.11).
    Malformed text raises the library's TOMLDecodeError, a ValueError; callers name the file."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import tomli

    data: dict[str, Any] = tomli.loads(text)
    return data

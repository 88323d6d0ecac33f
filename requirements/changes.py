"""What changed between two lock files, one line per package.

python requirements/changes.py requirements/dev.lock build/lock/dev.lock
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.MULTILINE)


def pins(path: Path) -> dict[str, str]:
    """Package name (lower case) -> pinned version; empty when the file does not exist."""
    text = path.read_text() if path.exists() else ""
    return {name.lower(): version for name, version in _PIN.findall(text)}


def changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"  + {name} {after}")
        elif after is None:
            lines.append(f"  - {name} {before}")
        else:
            lines.append(f"  ~ {name} {before} -> {after}")
    return lines


def main(old_path: str, new_path: str) -> None:
    lines = changes(pins(Path(old_path)), pins(Path(new_path)))
    print(f"{old_path}: " + (f"{len(lines)} changed" if lines else "unchanged"))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main(*sys.argv[1:3])

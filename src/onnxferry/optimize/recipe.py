"""Recipes: an ordered list of passes with their parameters, as data (TOML).

    recipe = Recipe.parse('''
        [[pass]]
        name = "ort_graph"
        level = "extended"

        [[pass]]
        name = "int8_dynamic"
        per_channel = true
    ''')
    recipe.save("recipe.toml")             # atomic; replay with Recipe.load / --recipe
    Recipe([make_pass("slim")]).to_toml()
    Recipe.of(["my_pass", "fold"], catalog=BUILTIN.with_passes(MyPass))

Pass names are looked up in a catalog (default: the built-in one, see ``catalog``). Unknown
passes and wrong parameters fail on load (UsageError, exit 2), before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..data import parse_toml
from ..errors import UsageError, read_user_text
from .base import Pass
from .catalog import BUILTIN, Catalog

Step = tuple[str, dict[str, Any]] | str
"""A pass as ``Recipe.of`` takes it: a name, or (name, parameters)."""


@dataclass
class Recipe:
    """Passes applied in order."""

    passes: list[Pass] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.passes)

    def label(self) -> str:
        """E.g. "ort_graph(level='extended') -> int8_dynamic"; "none" when empty."""
        return " -> ".join(p.label() for p in self.passes) or "none"

    def to_data(self) -> dict[str, Any]:
        return {"pass": [{"name": p.name, **_plain(p.params())} for p in self.passes]}

    def to_toml(self) -> str:
        import tomli_w

        return str(tomli_w.dumps(self.to_data()))

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.to_toml())

    @classmethod
    def from_data(cls, data: Any, where: str = "recipe", catalog: Catalog = BUILTIN) -> Recipe:
        unknown = sorted(set(data) - {"pass"}) if isinstance(data, dict) else []
        if unknown:
            raise UsageError(
                f"{where}: unknown table or key {', '.join(map(repr, unknown))}",
                hint='a recipe holds only [[pass]] tables, e.g. [[pass]] name = "slim"',
            )
        steps = data.get("pass", []) if isinstance(data, dict) else None
        if not isinstance(steps, list):
            raise UsageError(
                f"{where}: expected a list of [[pass]] tables", hint='e.g. [[pass]] name = "slim"'
            )
        passes = []
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("name"), str):
                raise UsageError(f"{where}: pass {i + 1} has no name", hint='add name = "..."')
            params = {k: v for k, v in step.items() if k != "name"}
            passes.append(catalog.make(step["name"], params))
        return cls(passes)

    @classmethod
    def parse(cls, text: str, where: str = "recipe", catalog: Catalog = BUILTIN) -> Recipe:
        try:
            data = parse_toml(text)
        except Exception as e:
            raise UsageError(f"{where} is not valid TOML: {e}", hint="see `ferry passes`") from e
        return cls.from_data(data, where, catalog)

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog = BUILTIN) -> Recipe:
        return cls.parse(read_user_text(path, "recipe", UsageError), str(path), catalog)

    @classmethod
    def of(cls, steps: Sequence[Step], catalog: Catalog = BUILTIN) -> Recipe:
        """A recipe from (name, params) pairs or bare names, looked up in ``catalog``."""
        return cls([catalog.make(s) if isinstance(s, str) else catalog.make(*s) for s in steps])


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """TOML has no None and no tuples: drop unset values, make lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v is not None}

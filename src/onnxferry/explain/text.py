"""Texts as word positions: a model that takes strings is explained word by word.

    words = Words.split(np.array(["Great film, awful ending", "fine"], dtype=object))
    words.ids            # [[1, 2, 3, 4], [5, 0, 0, 0]]: piece ids, 0 = "" (hidden or padding)
    words.pieces[1:3]    # ["Great ", "film, "]: a word with what follows it up to the next
    words.join(words.ids[:, ::-1])   # rows of ids back to strings, for the model
    words, decode = text_positions(layout, texts, None)   # what ``explain`` uses

Each piece is a word with the spaces and punctuation after it (text before the first word is
a piece of its own), so joining a row's pieces gives its text back unchanged, and hiding a
piece (id 0) drops one word from it. Rows are padded with id 0 to the longest text; a
padded position changes nothing, so its attribution is 0. The explainers then work on the
ids as they do on a token sequence (positions, hidden by the empty piece).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from .kinds import Layout

_PIECE = re.compile(r"\w+\W*|\W+")


@dataclass(frozen=True)
class Words:
    """Texts split into pieces: ``ids`` (texts, longest) into ``pieces`` (``pieces[0]`` is "")."""

    ids: np.ndarray
    pieces: list[str]

    @classmethod
    def split(cls, texts: np.ndarray) -> Words:
        """Every text of ``texts`` (a 1-D array of str) into piece ids."""
        pieces: dict[str, int] = {"": 0}
        rows = [
            [pieces.setdefault(p, len(pieces)) for p in _PIECE.findall(_str(t))]
            for t in np.asarray(texts).reshape(-1)
        ]
        ids = np.zeros((len(rows), max((len(r) for r in rows), default=0) or 1), np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return cls(ids, list(pieces))

    def join(self, ids: np.ndarray) -> np.ndarray:
        """Rows of piece ids as strings: an object array of ``len(ids)`` texts."""
        table = np.asarray(self.pieces, dtype=object)
        texts = np.empty(len(ids), dtype=object)
        texts[:] = ["".join(row) for row in table[np.asarray(ids, np.int64)].tolist()]
        return texts

    def words(self, row: int) -> list[str]:
        """The pieces of text ``row``, without its padding."""
        return [self.pieces[i] for i in self.ids[row] if i]


def _str(text: object) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def text_positions(
    layout: Layout, texts: np.ndarray, background: Any
) -> tuple[Words, Callable[[np.ndarray], np.ndarray]]:
    """The texts' words, and ``decode(ids) -> texts`` shaped as the model takes a row
    (``layout.sample_shape``: one string, or ``[1]``). UsageError for a background: a hidden
    word is dropped, not replaced."""
    if background is not None:
        raise UsageError(
            "a text is explained by dropping words; it takes no background",
            hint="leave out --background",
        )
    words = Words.split(texts)
    shape = layout.sample_shape

    def decode(ids: np.ndarray) -> np.ndarray:
        return words.join(ids).reshape(len(ids), *shape)

    return words, decode

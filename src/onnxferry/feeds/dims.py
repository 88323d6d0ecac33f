"""Dims named by an expression of other dims: a decoder's ``attention_mask[batch_size,
past_sequence_length + sequence_length]`` (Hugging Face Optimum's exports), or the dynamo
exporter's ``s0 + s1``. Such a dim is computed from its terms, never chosen on its own.

    terms("past_sequence_length + sequence_length")   # ("past_sequence_length", "sequence_length")
    terms("sequence_length")                           # None: a plain name
    evaluate("past_sequence_length + 1", {"past_sequence_length": 16})   # 17

Chosen apart, the mask was given 1 column where the keys had 64 past positions plus one:
the model ran (the mask broadcast), on inputs no decoder ever sees.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import cache

_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)


@cache
def terms(symbol: str | None) -> tuple[str, ...] | None:
    """The names an expression dim is made of (in order, once each); None for a plain name,
    an unnamed dim, or text that is not ``+ - * //`` over names and integers."""
    if not symbol:
        return None
    try:
        tree = ast.parse(symbol.strip(), mode="eval").body
    except SyntaxError:
        return None
    if isinstance(tree, ast.Name) or not _arithmetic(tree):
        return None
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    return tuple(dict.fromkeys(names)) or None


def evaluate(symbol: str, sizes: Mapping[str, int]) -> int | None:
    """The expression's value at ``sizes`` (None when a term has no size)."""
    return _value(ast.parse(symbol.strip(), mode="eval").body, sizes)


def _arithmetic(node: ast.expr) -> bool:
    if isinstance(node, ast.BinOp):
        return (
            isinstance(node.op, _OPERATORS) and _arithmetic(node.left) and _arithmetic(node.right)
        )
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub) and _arithmetic(node.operand)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int) and not isinstance(node.value, bool)
    return isinstance(node, ast.Name)


def _value(node: ast.expr, sizes: Mapping[str, int]) -> int | None:
    if isinstance(node, ast.Name):
        return sizes.get(node.id)
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, int) else None
    if isinstance(node, ast.UnaryOp):
        inner = _value(node.operand, sizes)
        return None if inner is None else -inner
    assert isinstance(node, ast.BinOp)
    left, right = _value(node.left, sizes), _value(node.right, sizes)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    return left // right if right else None

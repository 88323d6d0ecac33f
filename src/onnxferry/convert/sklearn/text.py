r"""Text pipelines: a vectorizer at the head, so the ONNX model takes one string per row.

    vectorizer = text_vectorizer(pipeline)    # the TfidfVectorizer at its head, or None
    text_options(vectorizer)                  # {"tokenexp": "[\p{L}\p{N}_]{2,}", "locale": ...}
    text_vocabulary(vectorizer)               # the words generated texts are made of

skl2onnx turns CountVectorizer and TfidfVectorizer into ONNX's StringNormalizer, Tokenizer
and TfIdfVectorizer, with two defaults that make the model differ from scikit-learn or not
load at all, both set here through skl2onnx's own options:

- scikit-learn's default tokens, ``(?u)\b\w\w+\b``, are runs of two or more Unicode
  letters, digits or underscores. skl2onnx writes ``[a-zA-Z0-9_]+``, so "café" becomes "caf"
  (and one-letter tokens join n-grams). ONNX Runtime's Tokenizer uses RE2, whose ``\w`` is
  ASCII; ``[\p{L}\p{N}_]{2,}`` is the same tokens.
  Patterns of that family (``(?u)\b\w+\b`` keeps one-letter words) are translated the same
  way; any other pattern goes to RE2 as written, and parity shows whether RE2 reads it alike.
- The StringNormalizer that lowercases names no locale, and ONNX Runtime then builds
  ``en_US.UTF-8``, which slim container images lack: the model fails to load there.
  ``C.UTF-8`` lowercases Unicode the same way and ships with the C library itself
  (``onnxferry.locales``). (Python's ``str.lower`` still differs on a final capital sigma and
  a dotted capital I.)

One thing skl2onnx cannot do is refused before exporting (``text_problem``): stop words with
n-grams of two or more words. scikit-learn drops the stop words and then joins neighbours into
n-grams; ONNX's Tokenizer keeps them, so "waste of time" gives no "waste time".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...errors import InputError
from ...feeds import Vocabulary
from ...locales import PORTABLE_LOCALE
from ..base import ConvertOptions

SKLEARN_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
RE2_TOKEN_PATTERN = r"[\p{L}\p{N}_]{2,}"
"""scikit-learn's default token pattern, and the same tokens in RE2 (ONNX Runtime's)."""

_WORD_RUNS = re.compile(r"(?:\(\?u\))?\\b((?:\\w)+)\+\\b")
r"""Python patterns of runs of word characters: ``\b\w\w+\b``, ``(?u)\b\w+\b``, ..."""
_RE2_WORD = r"[\p{L}\p{N}_]"


def text_vectorizer(estimator: Any) -> Any | None:
    """The text vectorizer at the head of ``estimator`` (through nested Pipelines), or None."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    head = estimator
    while isinstance(getattr(head, "steps", None), list) and head.steps:
        head = head.steps[0][1]
    return head if isinstance(head, (CountVectorizer, HashingVectorizer)) else None


def text_options(vectorizer: Any) -> dict[str, Any]:
    """skl2onnx's options for the vectorizer: scikit-learn's tokens and a locale that loads.

    A token pattern of the user's own goes to RE2 as written, less Python's ``(?u)`` flag
    (RE2 is Unicode already); parity with scikit-learn shows whether RE2 reads it the same.
    """
    pattern = str(getattr(vectorizer, "token_pattern", "") or "")
    tokens = re2_token_pattern(pattern)
    options: dict[str, Any] = {"locale": PORTABLE_LOCALE}
    if tokens and getattr(vectorizer, "analyzer", "word") == "word":
        options["tokenexp"] = tokens
    return options


def re2_token_pattern(pattern: str) -> str:
    r"""A Python token pattern for RE2: runs of word characters in Unicode classes, else the
    pattern less ``(?u)``.

        re2_token_pattern(r"(?u)\b\w\w+\b")   # "[\p{L}\p{N}_]{2,}"
        re2_token_pattern(r"(?u)\b\w+\b")      # "[\p{L}\p{N}_]{1,}"
    """
    runs = _WORD_RUNS.fullmatch(pattern)
    if runs is None:
        return pattern.replace("(?u)", "")
    return f"{_RE2_WORD}{{{len(runs.group(1)) // 2},}}"  # group 1 is "\\w" k times


def text_problem(vectorizer: Any) -> str | None:
    """Why skl2onnx's export of the vectorizer cannot match scikit-learn, or None."""
    ngrams = getattr(vectorizer, "ngram_range", (1, 1))
    getter = getattr(vectorizer, "get_stop_words", None)
    analyzer = getattr(vectorizer, "analyzer", "word")
    if analyzer == "word" and ngrams[1] > 1 and callable(getter) and getter():
        return (
            f"n-grams of up to {ngrams[1]} words with stop words: scikit-learn joins the words "
            "around a dropped stop word, ONNX's Tokenizer keeps the stop word"
        )
    return None


def text_vocabulary(vectorizer: Any) -> Vocabulary:
    """The vectorizer's terms (n-grams as phrases) and stop words, for generated texts."""
    terms: dict[str, int] = getattr(vectorizer, "vocabulary_", None) or {}
    stop_words: tuple[str, ...] = ()
    getter = getattr(vectorizer, "get_stop_words", None)
    if callable(getter):
        stop_words = tuple(sorted(getter() or ()))
    return Vocabulary(tuple(sorted(terms, key=terms.__getitem__)), stop_words=stop_words)


def check_text_samples(options: ConvertOptions, input_name: str) -> None:
    """InputError unless every sample input is an array of strings, one text per row."""
    for sample in options.sample_inputs:
        array = np.asarray(sample.get(input_name, next(iter(sample.values()), None)))
        if array.dtype.kind not in "UO" or array.ndim != 1:
            raise InputError(
                f"sample input {input_name!r} of a text pipeline is {array.dtype} with shape "
                f"{list(array.shape)}; it takes one string per row",
                hint="save the texts as a 1-D str array, e.g. np.array(['first text', ...])",
            )

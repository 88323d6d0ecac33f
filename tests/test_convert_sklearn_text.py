"""scikit-learn text pipelines (a CountVectorizer or TfidfVectorizer at the head) to ONNX:
one string per row, tokenized as scikit-learn does, loadable without en_US, verified on texts
made of the vectorizer's own words.

The training texts mix English, accented, Greek, Cyrillic and digit-bearing words, so a
tokenizer that keeps to ASCII (skl2onnx's default) shows.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

from onnx.helper import get_attribute_value
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline

import onnxferry
from onnxferry.convert.base import ConversionError, ConvertOptions, ParityFailure
from onnxferry.convert.sklearn import load_sklearn
from onnxferry.convert.sklearn.text import (
    RE2_TOKEN_PATTERN,
    SKLEARN_TOKEN_PATTERN,
    re2_token_pattern,
    text_problem,
)
from onnxferry.data import save_npz
from onnxferry.errors import InputError, UsageError
from onnxferry.locales import PORTABLE_LOCALE as LOCALE
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

GOOD = ["good", "great", "fine", "lovely", "café", "naïve", "superb", "χαρά", "2024", "top_notch"]
BAD = ["bad", "awful", "poor", "horrible", "sucks", "terrible", "ugly", "слабо", "0_stars"]
FILLER = [
    "the",
    "a",
    "of",
    "and",
    "it",
    "is",
    "was",
    "this",
    "movie",
    "film",
    "book",
    "plot",
    "I",
    "we",
]


def reviews(count: int = 300, seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts of three sentiment words among six fillers, labelled by the sentiment."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(count):
        label = i % 2
        words = [*rng.choice(GOOD if label else BAD, 3), *rng.choice(FILLER, 6)]
        rng.shuffle(words)
        texts.append(" ".join(str(w) for w in words))
        labels.append(label)
    return texts, labels


def fitted(pipeline: Pipeline, regression: bool = False) -> Pipeline:
    texts, labels = reviews()
    target = np.asarray(labels, float) * 3.5 if regression else labels
    return pipeline.fit(texts, target)


def node_attributes(model: onnxferry.Model, op_type: str) -> dict[str, Any]:
    (node,) = [n for n in model.proto.graph.node if n.op_type == op_type]
    return {a.name: get_attribute_value(a) for a in node.attribute}


HELD_OUT = [
    "A naïve CAFÉ, lovely!",
    "слабо... the plot was ugly",
    "top_notch 2024 film",
    "",
    "words it never saw",
    "Χαρά",
]


@pytest.mark.parametrize(
    "pipeline",
    [
        make_pipeline(TfidfVectorizer(), LogisticRegression()),
        make_pipeline(CountVectorizer(), TfidfTransformer(), MultinomialNB()),
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()),
        make_pipeline(TfidfVectorizer(token_pattern=r"(?u)\b\w+\b"), LogisticRegression()),
    ],
    ids=["tfidf", "count-nb", "bigrams", "one-letter-words"],
)
def test_a_text_pipeline_converts_verified_and_tokenizes_unicode_as_sklearn(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The ONNX model takes string[batch], splits Unicode words as scikit-learn's pattern does
    (RE2 classes, not skl2onnx's ASCII ``[a-zA-Z0-9_]+``), lowercases in C.UTF-8, and gives
    scikit-learn's labels and probabilities on texts it was not verified on."""
    fitted(pipeline)
    model = onnxferry.convert(pipeline, tmp_path / "text.onnx")
    (spec,) = model.signature.inputs
    assert spec.dtype.kind == "string" and spec.shape == ("batch",)
    assert node_attributes(model, "StringNormalizer")["locale"] == LOCALE.encode()
    tokens = node_attributes(model, "Tokenizer")["tokenexp"].decode()
    assert tokens.startswith(r"[\p{L}\p{N}_]{"), tokens
    outputs = OrtRunner(model).run({"input": np.array(HELD_OUT, dtype=object)})
    np.testing.assert_array_equal(outputs["label"], pipeline.predict(HELD_OUT))
    np.testing.assert_allclose(
        outputs["probabilities"], pipeline.predict_proba(HELD_OUT), atol=1e-5
    )


def test_a_text_regressor_converts_verified(tmp_path: Path) -> None:
    pipeline = fitted(make_pipeline(TfidfVectorizer(), Ridge()), regression=True)
    model = onnxferry.convert(pipeline, tmp_path / "ridge.onnx")
    outputs = OrtRunner(model).run({"input": np.array(HELD_OUT, dtype=object)})
    np.testing.assert_allclose(outputs["variable"][:, 0], pipeline.predict(HELD_OUT), atol=1e-4)


def test_the_generated_texts_catch_skl2onnx_s_ascii_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With skl2onnx's own token pattern (ASCII), verification on texts of the vectorizer's
    words fails: the generated texts reach the accented, Greek and Cyrillic terms."""
    export = importlib.import_module("onnxferry.convert.sklearn.export")
    monkeypatch.setattr(export, "text_options", lambda vectorizer: {"locale": LOCALE})
    pipeline = fitted(make_pipeline(TfidfVectorizer(), LogisticRegression()))
    with pytest.raises(ParityFailure, match=r"skl2onnx vs scikit-learn .*: worst output"):
        onnxferry.convert(pipeline, tmp_path / "ascii.onnx")
    assert not (tmp_path / "ascii.onnx").exists()


def test_the_source_generates_texts_of_its_vocabulary() -> None:
    pipeline = fitted(make_pipeline(TfidfVectorizer(stop_words=["the", "of"]), MultinomialNB()))
    source = load_sklearn(pipeline, ConvertOptions())
    assert "text in" in source.description
    (vocabulary,) = source.vocabularies.values()
    assert set(vocabulary.words) == set(pipeline[0].vocabulary_)
    assert set(vocabulary.stop_words) == {"the", "of"}
    texts = [str(t) for feeds in source.verification_feeds() for t in feeds["input"]]
    assert len(texts) >= 2 and "" in texts
    words = {w.strip(".,!?;-'s").lower() for t in texts for w in t.split()}
    assert words & {"café", "naïve", "χαρά", "слабо"}, texts
    assert words & {"the", "of"}, texts


def test_text_samples_are_used_and_other_samples_refused(tmp_path: Path) -> None:
    pipeline = fitted(make_pipeline(TfidfVectorizer(), LogisticRegression()))
    texts = save_npz(tmp_path / "texts.npz", {"input": np.array(HELD_OUT)})
    onnxferry.convert(pipeline, tmp_path / "given.onnx", inputs=texts)
    numbers = {"input": np.zeros((2, 3), np.float32)}
    with pytest.raises(InputError, match="one string per row"):
        onnxferry.convert(pipeline, tmp_path / "numbers.onnx", inputs=numbers)
    with pytest.raises(UsageError, match=r"\[batch\], one string per row"):
        onnxferry.convert(pipeline, tmp_path / "shape.onnx", input_shapes={"input": (4, 3)})


def test_a_fixed_batch_text_model(tmp_path: Path) -> None:
    pipeline = fitted(make_pipeline(TfidfVectorizer(), LogisticRegression()))
    model = onnxferry.convert(
        pipeline, tmp_path / "fixed.onnx", input_shapes={"input": (3,)}, dynamic={}
    )
    assert model.signature.inputs[0].shape == (3,)


def test_stop_words_with_ngrams_are_refused_in_one_line(ferry: Run, tmp_path: Path) -> None:
    """skl2onnx keeps the stop words an n-gram of scikit-learn's skips: said before export."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), stop_words="english")
    pipeline = fitted(make_pipeline(vectorizer, LogisticRegression()))
    assert text_problem(pipeline[0]) is not None
    with pytest.raises(ConversionError, match=r"'tfidfvectorizer'.*stop word"):
        onnxferry.convert(pipeline, tmp_path / "refused.onnx")
    import joblib

    joblib.dump(pipeline, tmp_path / "bigrams.joblib")
    out = tmp_path / "bigrams.onnx"
    code, _, err = ferry("convert", tmp_path / "bigrams.joblib", "--trust-pickle", "-o", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "ngram_range=(1, 1)" in err and not out.exists()


def test_token_patterns_for_re2() -> None:
    assert re2_token_pattern(SKLEARN_TOKEN_PATTERN) == RE2_TOKEN_PATTERN
    assert re2_token_pattern(r"(?u)\b\w+\b") == r"[\p{L}\p{N}_]{1,}"
    assert re2_token_pattern(r"\b\w\w\w+\b") == r"[\p{L}\p{N}_]{3,}"
    assert re2_token_pattern(r"\b\w\w\b") == r"\b\w\w\b"  # whole words of two: left as is
    assert re2_token_pattern(r"(?u)[a-z]+") == "[a-z]+"


def test_every_verb_reads_the_words_from_the_onnx_graph(tmp_path: Path) -> None:
    """An ONNX text model alone (no scikit-learn) gets texts of its TfIdfVectorizer's n-grams,
    bigrams as phrases, in every verb's generated feeds."""
    from onnxferry.feeds import input_vocabularies, plan_feeds

    pipeline = fitted(make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()))
    model = onnxferry.convert(pipeline, tmp_path / "bigrams.onnx")
    (vocabulary,) = input_vocabularies(model.proto, model.signature).values()
    assert set(vocabulary.words) == set(pipeline[0].vocabulary_)
    feeds = plan_feeds(model).with_batch(4).feeds(seed=0)
    texts = [str(t) for t in feeds["input"]]
    assert pipeline[0].transform(texts[:-1]).nnz > 0, texts  # the model sees words it knows
    onnx.checker.check_model(model.proto)

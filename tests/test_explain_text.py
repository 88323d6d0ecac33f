"""Explaining a model that takes strings (a converted scikit-learn text classifier), word by
word: every method ranks the one word the labels depend on first, SHAP's efficiency holds,
the files, the CLI and the served endpoint name the words."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import onnxferry
from onnxferry.data import save_npz
from onnxferry.explain import write_explanation
from onnxferry.explain.text import Words
from onnxferry.serve.server import running
from tests.helpers import Run

FILLER = ["the", "plot", "was", "film", "and", "it", "we", "saw", "a", "book", "today", "then"]
TEXTS = np.array(
    [
        "We saw the film today, and it was splendid!",
        "The plot was dreadful; we saw it then.",
    ]
)
"""Each holds one word the model reads: "splendid" (class 1) or "dreadful" (class 0)."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("skl2onnx")
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(200):
        words = [*rng.choice(FILLER, 7), "splendid" if i % 2 else "dreadful"]
        rng.shuffle(words)
        texts.append(" ".join(str(w) for w in words))
        labels.append(i % 2)
    pipeline = make_pipeline(CountVectorizer(), LogisticRegression(C=10)).fit(texts, labels)
    path = tmp_path_factory.mktemp("text") / "sentiment.onnx"
    onnxferry.convert(pipeline, path)
    return path


def test_words_join_back_to_the_text_and_hiding_drops_one() -> None:
    texts = np.array(["¡Hola! A  café, naïve…", "", "one"], dtype=object)
    words = Words.split(texts)
    assert words.join(words.ids).tolist() == texts.tolist()
    assert words.words(0) == ["¡", "Hola! ", "A  ", "café, ", "naïve…"]
    hidden = words.ids[:1].copy()
    hidden[0, 3] = 0
    assert words.join(hidden).tolist() == ["¡Hola! A  naïve…"]


@pytest.mark.parametrize("method", ["occlusion", "kernelshap", "permutation", "lime"])
def test_every_method_ranks_the_word_the_model_reads_first(model: Path, method: str) -> None:
    explanation = onnxferry.explain(model, {"input": TEXTS}, method=method, target=1)
    assert explanation.kind == "text"
    for row, word in enumerate(["splendid!", "dreadful; "]):
        top = explanation.to_dict()["explanations"][row]["top"][0]
        assert top["value"] == word, explanation.to_dict()["explanations"][row]
    assert explanation.attributions[0].max() > 0 > explanation.attributions[1].min()


def test_kernelshap_adds_up_and_padding_gets_nothing(model: Path) -> None:
    explanation = onnxferry.explain(model, {"input": TEXTS}, method="kernelshap")
    for row in range(2):
        assert abs(explanation.additivity_gap(row)) < 1e-6
    assert explanation.inputs.shape == (2, 9)  # the longer text's nine words
    assert abs(explanation.attributions[1, 8]) < 1e-6  # the shorter one's padding


def test_the_files_colour_the_words(model: Path, tmp_path: Path) -> None:
    explanation = onnxferry.explain(model, {"input": TEXTS}, method="occlusion", target=1)
    files = write_explanation(explanation, tmp_path)
    page = files["tokens"].read_text()
    spans = re.findall(r"data-attribution='([^']+)'[^>]*>([^<]*)</span>", page)
    assert len(spans) == 17  # 9 + 8 words, no padding
    strongest = max(spans[:9], key=lambda s: abs(float(s[0])))
    assert strongest[1] == "splendid!"
    rows = json.loads(files["json"].read_text())["result"]["explanations"]
    assert rows[1]["words"][:3] == ["The ", "plot ", "was "] and rows[1]["words"][-1] == ""
    assert "splendid" in files["report"].read_text()


def test_the_cli_explains_texts_from_an_npz_and_refuses_a_background(
    ferry: Run, model: Path, tmp_path: Path
) -> None:
    inputs = save_npz(tmp_path / "texts.npz", {"input": TEXTS})
    code, out, err = ferry("explain", model, "--inputs", inputs, "-o", tmp_path / "out")
    assert code == 0, err
    assert "'splendid!'" in out and (tmp_path / "out" / "tokens.html").is_file()
    code, _, err = ferry(
        "explain", model, "--inputs", inputs, "--background", inputs, "-o", tmp_path / "bg"
    )
    assert code == 2 and err.count("\n") == 1 and "takes no background" in err, err


def test_the_served_explanation_names_its_words(model: Path) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": TEXTS.tolist()}],
        "parameters": {"method": "occlusion", "target": 1},
    }
    with running(model) as url:
        response = httpx.post(f"{url}/v2/models/sentiment/explain", json=body, timeout=60)
    assert response.status_code == 200, response.text
    found = {o["name"]: o for o in response.json()["outputs"]}
    assert found["words"]["shape"] == found["attributions"]["shape"] == [2, 9]
    values = np.asarray(found["attributions"]["data"]).reshape(2, 9)
    words = np.asarray(found["words"]["data"], dtype=object).reshape(2, 9)
    assert words[0, int(np.argmax(values[0]))] == "splendid!"

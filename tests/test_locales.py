"""Text models whose StringNormalizer needs a locale this machine lacks: skl2onnx's text
pipelines, written outside ferry, name no locale, and ONNX Runtime then builds en_US.UTF-8,
which slim images (and the CI machine) lack. Every verb says so in one line, `ferry check`
names it, `ferry convert` sets C.UTF-8 (the same case mapping, so the output matches
scikit-learn's), and `ferry package` installs the locale in the image.

The models name the locale explicitly (``xx_XX.UTF-8`` and ``tr_TR.UTF-8`` are absent
everywhere these tests run; ``en_US.UTF-8``, ONNX Runtime's default, only where the machine
lacks it), so the tests hold on a machine that has en_US too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("skl2onnx")

from onnx.helper import get_attribute_value, make_attribute
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import onnxferry
from onnxferry.convert import Conversion, convert
from onnxferry.errors import ModelLoadError
from onnxferry.locales import (
    ORT_DEFAULT_LOCALE,
    PORTABLE_LOCALE,
    has_locale,
    missing_locales,
    needed_locales,
    portable_locales,
    same_case_mapping,
)
from onnxferry.model import Model
from onnxferry.package import package
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

ABSENT = "xx_XX.UTF-8"
"""A locale no C library has (a language code that does not exist)."""
TEXTS = ["Great CAFÉ, Über good", "AWFUL ΧΑΡΆ film", "fine Naïve plot", "bad, ugly ÉCOLE"] * 5
LABELS = [1, 0, 1, 0] * 5


def _pipeline() -> Any:
    return make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)


def _skl2onnx_text_model(path: Path, locale: str | None) -> Path:
    """skl2onnx's own conversion of a TF-IDF classifier, as a user outside ferry writes it
    (no zipmap; scikit-learn's Unicode tokens, in RE2), with its StringNormalizer's locale
    set to ``locale`` (None: none named)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    pipeline = _pipeline()
    proto = convert_sklearn(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={
            id(pipeline): {"zipmap": False},
            id(pipeline.steps[0][1]): {"tokenexp": r"[\p{L}\p{N}_]{2,}"},
        },
    )
    for node in proto.graph.node:
        if node.op_type == "StringNormalizer" and locale is not None:
            node.attribute.append(make_attribute("locale", locale))
    onnx.save(proto, str(path))
    return path


def _locales_of(path: Path) -> list[str]:
    proto = onnx.load(str(path))
    return [
        get_attribute_value(a).decode()
        for n in proto.graph.node
        if n.op_type == "StringNormalizer"
        for a in n.attribute
        if a.name == "locale"
    ]


def _missing_here() -> list[str]:
    """The locales to test the missing case with: ONNX Runtime's default where this machine
    lacks it, and a locale no machine has."""
    return [ABSENT] + ([] if has_locale(ORT_DEFAULT_LOCALE) else [ORT_DEFAULT_LOCALE])


def test_the_c_library_says_which_locales_it_has() -> None:
    assert has_locale("C.UTF-8") and has_locale("C")
    assert not has_locale(ABSENT)
    assert same_case_mapping("en_US.UTF-8") and same_case_mapping("de_DE.UTF-8")
    assert not same_case_mapping("tr_TR.UTF-8") and not same_case_mapping("az_AZ.UTF-8")
    assert not same_case_mapping("ku_TR.UTF-8") and same_case_mapping("tt_RU.UTF-8")
    assert not same_case_mapping("en_US.ISO-8859-1")  # another charset: wide chars differ


@pytest.mark.parametrize("locale", _missing_here())
def test_a_missing_locale_is_one_line_in_every_verb(
    tmp_path: Path, ferry: Run, locale: str
) -> None:
    """exit 2, one line that names the node, the locale and both fixes; not ONNX Runtime's
    C++ message, and no ONNX Runtime log on stderr (a separate process, so fd 2 is its own)."""
    model = _skl2onnx_text_model(
        tmp_path / "text.onnx", None if locale == ORT_DEFAULT_LOCALE else locale
    )
    assert missing_locales(Model.load(model).proto) == {"StringNormalizer": locale}
    for verb in (["compare", model, model], ["bench", model, "--duration", "0.1"]):
        code, _, err = ferry(*verb)
        assert code == 2, err
        assert f"StringNormalizer 'StringNormalizer' needs locale {locale}" in err
        assert "locale-gen" in err and f"ferry convert {model}" in err
        assert "_S_create_c_locale" not in err
    done = subprocess.run(
        [sys.executable, "-m", "onnxferry", "compare", str(model), str(model)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line: no onnxruntime log
    assert done.stderr.startswith("ferry: error: onnxruntime cannot load")


@pytest.mark.parametrize("locale", _missing_here())
def test_check_fails_the_missing_locale_and_convert_sets_c_utf8(
    tmp_path: Path, ferry: Run, locale: str
) -> None:
    """The converted model loads here, names C.UTF-8, and gives scikit-learn's probabilities
    on texts with capitals outside ASCII (É, Ü, Χ, Ά), which a case mapping that left them
    would change."""
    named = None if locale == ORT_DEFAULT_LOCALE else locale
    model = _skl2onnx_text_model(tmp_path / "text.onnx", named)
    findings = {f.check: f for f in onnxferry.check(model).result.findings}
    assert findings["locales"].status == "fail" and locale in findings["locales"].detail
    assert findings["load on cpu"].status == "fail"

    code, _, err = ferry("convert", model, "-o", tmp_path / "fixed.onnx", "--json")
    assert code == 0, err
    assert _locales_of(tmp_path / "fixed.onnx") == [PORTABLE_LOCALE]
    report = convert(model, tmp_path / "again.onnx").last_report(Conversion)
    assert report.result.details["locales"] == {"StringNormalizer": f"{locale} -> C.UTF-8"}
    fixed = OrtRunner(Model.load(tmp_path / "fixed.onnx"))
    texts = np.array(TEXTS, dtype=object).reshape(-1, 1)
    got = fixed.run({"text": texts})["probabilities"]
    np.testing.assert_allclose(got, _pipeline().predict_proba(TEXTS), atol=1e-5)
    findings = {f.check: f for f in onnxferry.check(tmp_path / "fixed.onnx").result.findings}
    assert findings["locales"].status == "pass" and onnxferry.check(tmp_path / "fixed.onnx").ok


def test_a_locale_that_case_maps_otherwise_is_not_rewritten(tmp_path: Path, ferry: Run) -> None:
    """Turkish lowercases I to dotless ı, unlike C.UTF-8: convert leaves it and says to
    install the locale (where tr_TR is installed, the model simply loads)."""
    model = _skl2onnx_text_model(tmp_path / "text.onnx", "tr_TR.UTF-8")
    proto = Model.load(model).proto
    assert portable_locales(proto) == {} and _locales_of(model) == ["tr_TR.UTF-8"]
    if has_locale("tr_TR.UTF-8"):
        pytest.skip("this machine has tr_TR.UTF-8: the model loads as it is")
    code, _, err = ferry("convert", model, "-o", tmp_path / "out.onnx")
    assert code == 2
    assert "needs locale tr_TR.UTF-8" in err and "case-maps unlike C.UTF-8" in err
    with pytest.raises(ModelLoadError, match=r"tr_TR\.UTF-8"):
        OrtRunner(Model.load(model))


def test_docker_package_installs_the_locale_the_model_needs(tmp_path: Path) -> None:
    """The slim base has only C.UTF-8: the image builds the model's locale, hadolint clean;
    a model in C.UTF-8 gets no such step."""
    model = _skl2onnx_text_model(tmp_path / "text.onnx", "de_DE.UTF-8")
    assert needed_locales(Model.load(model).proto) == {"StringNormalizer": "de_DE.UTF-8"}
    report = package(model, "docker", tmp_path / "docker", {"install": "pypi"})
    dockerfile = (tmp_path / "docker" / "Dockerfile").read_text()
    assert "localedef -i de_DE -f UTF-8 de_DE.UTF-8" in dockerfile
    assert "apt-get install -y --no-install-recommends locales" in dockerfile
    assert report.ok, report.result.checks
    assert any("de_DE.UTF-8" in note for note in report.result.notes)

    fixed = _skl2onnx_text_model(tmp_path / "fixed.onnx", PORTABLE_LOCALE)
    package(fixed, "docker", tmp_path / "plain", {"install": "pypi"})
    assert "localedef" not in (tmp_path / "plain" / "Dockerfile").read_text()

"""ferry's vectorized ``data_labels`` against lime's own: the same rows, the same images in the
same batches, the same explanation."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from onnxferry.explain.vectorized import lime_image_explainer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # lime's dependencies' deprecations
    lime_image = pytest.importorskip("lime.lime_image")


def _recording(batches: list[np.ndarray]) -> Any:
    def classify(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        batches.append(images.copy())
        flat = images.reshape(len(images), -1)
        return np.stack([flat.mean(axis=1), flat.max(axis=1)], axis=1)

    return classify


@pytest.mark.parametrize(
    ("shape", "labels", "batch_size"),
    [
        ((12, 10, 3), np.arange(12 * 10).reshape(12, 10) % 7, 16),  # RGB, batches with a rest
        ((9, 8), np.arange(9 * 8).reshape(9, 8) // 20, 5),  # grey, no channel axis
        ((8, 8, 3), np.where(np.arange(64).reshape(8, 8) < 32, 0, 9), 64),  # label 9, 2 labels
        ((6, 6, 3), np.arange(36).reshape(6, 6) // 9, 0),  # no batch size: one batch
        ((6, 6, 3), np.arange(36).reshape(6, 6) // 9 - 1, 7),  # label -1: lime's own loop
    ],
)
def test_the_same_rows_and_batches_as_limes_own_loop(
    shape: tuple[int, ...], labels: np.ndarray, batch_size: int
) -> None:
    image = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    fudged = np.full_like(image, 0.5)
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    rows, scores = lime_image_explainer()(random_state=3).data_labels(
        image, fudged, labels, _recording(ours), 50, batch_size=batch_size
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = lime_image.LimeImageExplainer(random_state=3)
        stock_rows, stock_scores = stock.data_labels(
            image, fudged, labels, _recording(theirs), 50, batch_size=batch_size
        )
    np.testing.assert_array_equal(rows, stock_rows)
    np.testing.assert_array_equal(scores, stock_scores)
    assert [b.shape for b in ours] == [b.shape for b in theirs]
    for mine, its in zip(ours, theirs, strict=True):
        assert mine.dtype == its.dtype
        np.testing.assert_array_equal(mine, its)


def test_the_explanation_is_limes_own() -> None:
    image = np.random.default_rng(1).uniform(size=(16, 16, 3))
    segments = np.arange(256).reshape(16, 16) // 16 // 4 * 4 + np.arange(16) // 4
    weights = np.random.default_rng(2).normal(size=(16, 16, 3))

    def classify(images: np.ndarray) -> np.ndarray:
        scores: np.ndarray = (np.asarray(images) * weights).sum(axis=(1, 2, 3))
        return scores[:, None]

    def explained(explainer: Any) -> Any:
        return explainer.explain_instance(
            image,
            classify,
            labels=(0,),
            top_labels=None,
            hide_color=0.0,
            num_samples=300,
            batch_size=32,
            segmentation_fn=lambda _: segments,
            random_seed=0,
        )

    ours = explained(lime_image_explainer()(random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = explained(lime_image.LimeImageExplainer(random_state=0))
    assert ours.local_exp == theirs.local_exp
    assert ours.intercept == theirs.intercept

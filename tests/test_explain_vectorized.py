"""ferry's vectorized ``data_labels`` against lime's own: the same rows, the same images in the
same batches, the same explanation."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from onnxferry.explain.vectorized import kernel_explainer, lime_image_explainer, write_coalitions

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


# --- shap's KernelExplainer -------------------------------------------------------------------

shap = pytest.importorskip("shap")


def _kernel_run(cls: Any, model: Any, background: Any, x: Any, **options: Any) -> Any:
    """(shap values, expected value, every batch the model was given) of one explanation."""
    batches: list[np.ndarray] = []

    def f(rows: Any) -> Any:
        batches.append(np.array(rows, copy=True))
        return model(np.asarray(rows))

    np.random.seed(0)
    explainer = cls(f, background)
    phi = explainer.shap_values(x, l1_reg=False, silent=True, **options)
    return phi, explainer.expected_value, batches


_W = np.random.default_rng(4).normal(size=(6, 3))


@pytest.mark.parametrize(
    ("background", "x", "model", "nsamples"),
    [
        # tabular: background rows, a vector output
        (
            np.random.default_rng(5).normal(size=(7, 6)),
            np.arange(12.0).reshape(2, 6),
            lambda z: np.tanh(z @ _W),
            40,
        ),
        # 0/1 masks over groups (ferry's images): one hidden row, one output, all subsets
        (np.zeros((1, 6)), np.ones((1, 6)), lambda z: z @ _W[:, 0] ** 2, 100),
        # features equal to the background do not vary: fewer columns are sampled
        (np.zeros((3, 6)), np.array([[1.0, 0.0, 2.0, 0.0, 3.0, 4.0]]), lambda z: z @ _W, 12),
        # integer background, float instance: written as assignment casts
        (np.arange(12).reshape(2, 6), np.linspace(0.5, 3, 6)[None], lambda z: z @ _W, 30),
        # one varying feature, none: shap's shortcuts
        (np.zeros((1, 6)), np.eye(1, 6), lambda z: z @ _W, 10),
        (np.zeros((1, 6)), np.zeros((1, 6)), lambda z: z @ _W, 10),
    ],
    ids=["tabular", "masks", "some-constant", "int-background", "one-varies", "none-vary"],
)
def test_kernel_explainer_is_shaps_own(
    background: np.ndarray, x: np.ndarray, model: Any, nsamples: int, monkeypatch: Any
) -> None:
    """Same draws, the same rows given to the model in the same batch, the same values; and
    shap's per-sample ``addsample`` is not what wrote them."""
    stock_writes: list[int] = []
    stock = shap.KernelExplainer.addsample

    def counted(self: Any, *args: Any) -> None:
        stock_writes.append(1)
        stock(self, *args)

    monkeypatch.setattr(shap.KernelExplainer, "addsample", counted)
    ours = _kernel_run(kernel_explainer(), model, background, x, nsamples=nsamples)
    assert not stock_writes
    theirs = _kernel_run(shap.KernelExplainer, model, background, x, nsamples=nsamples)
    np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(theirs[0]))
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert len(ours[2]) == len(theirs[2])
    for mine, its in zip(ours[2], theirs[2], strict=True):
        assert mine.dtype == its.dtype
        np.testing.assert_array_equal(mine, its)


def test_kernel_explainer_takes_shaps_path_outside_the_plain_case() -> None:
    """A DataFrame background (a pandas index kept) and sparse data go through shap's own
    ``addsample`` and ``varying_groups``; the values are shap's all the same."""
    pandas = pytest.importorskip("pandas")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    background = np.random.default_rng(6).normal(size=(4, 6))
    x = np.arange(6.0)[None]

    def model(z: Any) -> Any:
        dense = z.toarray() if hasattr(z, "toarray") else np.asarray(z)
        return dense @ _W[:, 0]

    for bg, inst, options in [
        (
            pandas.DataFrame(background).rename_axis("id"),
            pandas.DataFrame(x).rename_axis("id"),
            {"keep_index": True},
        ),
        (scipy_sparse.csr_matrix(background), scipy_sparse.csr_matrix(x), {}),
    ]:
        results = []
        classes: tuple[Any, ...] = (kernel_explainer(), shap.KernelExplainer)
        for cls in classes:
            np.random.seed(0)
            explainer = cls(model, bg, **options)
            results.append(explainer.shap_values(inst, nsamples=30, l1_reg=False, silent=True))
        np.testing.assert_array_equal(np.asarray(results[0]), np.asarray(results[1]))


def test_write_coalitions_writes_kept_features_of_each_block() -> None:
    rows = np.zeros((4, 3))  # 2 samples x 2 background rows, 3 columns
    masks = np.array([[1.0, 0.0], [0.0, 1.0]])  # over features 0 and 2 (1 never varies)
    write_coalitions(rows, masks, np.array([0, 2]), np.array([7.0, 8.0, 9.0]))
    np.testing.assert_array_equal(rows, [[7, 0, 0], [7, 0, 0], [0, 0, 9], [0, 0, 9]])

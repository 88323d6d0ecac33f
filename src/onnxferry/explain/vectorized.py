"""Library explainers with their per-sample Python loops done as array operations: the same
random draws, the same perturbed inputs in the same batches, so the same explanation.

    explainer = lime_image_explainer()(random_state=0)   # a lime_image.LimeImageExplainer
    found = explainer.explain_instance(image, classify, labels=(0,), top_labels=None,
                                       hide_color=0.0, num_samples=200,
                                       segmentation_fn=lambda image: segments)
    weights = dict(found.local_exp[0])                   # superpixel -> weight, as lime's

    explainer = kernel_explainer()(score, background)    # a shap.KernelExplainer
    phi = explainer.shap_values(x, nsamples=500, l1_reg=False, silent=True)

lime's ``LimeImageExplainer.data_labels`` builds each perturbed image in Python: a deep copy,
then one boolean mask per hidden superpixel. That costs more than a small model's run (about
150 us a sample on a 16x16 image, 0.5 ms on 64x64), the same whether the model runs in batches
or not. Here the hidden superpixels of a whole batch are looked up at once and the batch made
by one ``np.where``; the draws from lime's generator are the same calls in the same order.

shap's ``KernelExplainer`` writes each sampled coalition into its synthetic rows as it draws
it (``addsample``: fancy indexing per sample, about 10 us) and compares the instance with the
background one feature at a time (``varying_groups``: ``np.allclose`` per feature). Here a
sample only records its mask and weight, and the rows of all of them are written at once
before the model runs; the comparison is one ``np.isclose``. Its sampling loop and solve are
shap's own. Anything outside the plain case (sparse data, feature groups, a pandas index)
takes shap's own path.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np


@functools.cache
def lime_image_explainer() -> type[Any]:
    """``lime_image.LimeImageExplainer`` with ``data_labels`` vectorized (lime is imported
    here, on first use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its dependencies' deprecations, on import
        from lime.lime_image import LimeImageExplainer

    class BatchedLimeImageExplainer(LimeImageExplainer):  # type: ignore[misc]
        def data_labels(
            self,
            image: np.ndarray,
            fudged_image: np.ndarray,
            segments: np.ndarray,
            classifier_fn: Callable[[np.ndarray], Any],
            num_samples: int,
            batch_size: int = 10,
            **options: Any,
        ) -> tuple[np.ndarray, np.ndarray]:
            if segments.min() < 0:  # never hidden by lime's loop, wrapped by np.take: lime's
                return super().data_labels(  # type: ignore[no-any-return]
                    image,
                    fudged_image,
                    segments,
                    classifier_fn,
                    num_samples,
                    batch_size,
                    **options,
                )
            return perturbed_labels(
                self.random_state,
                image,
                fudged_image,
                segments,
                classifier_fn,
                num_samples,
                batch_size,
            )

    return BatchedLimeImageExplainer


def perturbed_labels(
    random_state: np.random.RandomState,
    image: np.ndarray,
    fudged_image: np.ndarray,
    segments: np.ndarray,
    classifier_fn: Callable[[np.ndarray], Any],
    num_samples: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """lime's ``data_labels``: ``num_samples`` random 0/1 rows over the superpixels (the first
    all ones), each image with its 0 superpixels taken from ``fudged_image``, scored by
    ``classifier_fn`` ``batch_size`` images at a time. Returns (rows, scores)."""
    n_features = np.unique(segments).shape[0]
    data = random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
    data[0, :] = 1
    # lime hides label z for each 0 in column z: labels past the columns are never hidden.
    hidden_labels = np.zeros((num_samples, max(int(segments.max()) + 1, n_features)), bool)
    hidden_labels[:, :n_features] = data == 0
    channels = (1,) * (image.ndim - segments.ndim)
    step = batch_size if batch_size > 0 else num_samples  # lime's loop: one batch at the end
    scores = []
    for start in range(0, num_samples, step):
        hidden = np.take(hidden_labels[start : start + step], segments, axis=1)
        batch = np.where(hidden.reshape(*hidden.shape, *channels), fudged_image, image)
        scores.append(np.asarray(classifier_fn(batch)))
    return data, np.concatenate(scores)


@functools.cache
def kernel_explainer() -> type[Any]:
    """``shap.KernelExplainer`` with ``addsample`` deferred to one array write per run and
    ``varying_groups`` vectorized (shap is imported here, on first use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib's deprecations, on import
        from shap import KernelExplainer

    class BatchedKernelExplainer(KernelExplainer):  # type: ignore[misc]
        _pending: np.ndarray | None = None
        """The instance whose features the recorded, not yet written samples keep."""

        def allocate(self) -> None:
            super().allocate()
            self._pending = None

        def addsample(self, x: Any, m: np.ndarray, w: float) -> None:
            if not self._plain(x):
                super().addsample(x, m, w)
                return
            self.maskMatrix[self.nsamplesAdded, :] = m
            self.kernelWeights[self.nsamplesAdded] = w
            self.nsamplesAdded += 1
            self._pending = x

        def run(self) -> None:
            if self._pending is not None:
                first, last = self.nsamplesRun, self.nsamplesAdded
                write_coalitions(
                    self.synth_data[first * self.N : last * self.N],
                    self.maskMatrix[first:last],
                    self.varyingFeatureGroups,
                    self._pending[0],
                )
                self._pending = None
            super().run()

        def varying_groups(self, x: Any) -> Any:
            data = self.data.data
            if not (self._dense_numeric(x) and self._dense_numeric(data) and self._one_each()):
                return super().varying_groups(x)
            same = np.isclose(x[0][None, :], data, equal_nan=True).all(axis=0)
            return np.nonzero(~same)[0]

        def _plain(self, x: Any) -> bool:
            """Samples shap would write one feature per group into a dense array."""
            groups = self.varyingFeatureGroups
            return (
                not self.keep_index
                and type(self.synth_data) is np.ndarray
                and type(x) is np.ndarray
                and isinstance(groups, np.ndarray)
                and groups.ndim == 1
            )

        @staticmethod
        def _dense_numeric(a: Any) -> bool:
            return type(a) is np.ndarray and a.ndim == 2 and np.issubdtype(a.dtype, np.number)

        def _one_each(self) -> bool:
            """Each feature its own group, in order (shap's groups when none are given)."""
            groups = self.data.groups
            return len(groups) == self.data.data.shape[1] and all(
                len(g) == 1 and g[0] == i for i, g in enumerate(groups)
            )

    return BatchedKernelExplainer


def write_coalitions(
    rows: np.ndarray, masks: np.ndarray, features: np.ndarray, instance: np.ndarray
) -> None:
    """``KernelExplainer.addsample``'s writes for many samples at once, in place: ``rows``
    holds each sample's copy of the background (``len(masks)`` blocks of equal size); where a
    sample's mask is 1.0, feature ``features[j]`` takes the instance's value in its block."""
    blocks = np.reshape(rows, (len(masks), -1, rows.shape[-1]), copy=False)
    kept = np.zeros((len(masks), rows.shape[-1]), bool)
    kept[:, features] = masks == 1.0
    np.copyto(blocks, instance, casting="unsafe", where=kept[:, None, :])  # as assignment

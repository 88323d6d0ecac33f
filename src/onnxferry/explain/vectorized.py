"""Library explainers with their per-sample Python loops done as array operations: the same
random draws, the same perturbed inputs in the same batches, so the same explanation.

    explainer = lime_image_explainer()(random_state=0)   # a lime_image.LimeImageExplainer
    found = explainer.explain_instance(image, classify, labels=(0,), top_labels=None,
                                       hide_color=0.0, num_samples=200,
                                       segmentation_fn=lambda image: segments)
    weights = dict(found.local_exp[0])                   # superpixel -> weight, as lime's

lime's ``LimeImageExplainer.data_labels`` builds each perturbed image in Python: a deep copy,
then one boolean mask per hidden superpixel. That costs more than a small model's run (about
150 us a sample on a 16x16 image, 0.5 ms on 64x64), the same whether the model runs in batches
or not. Here the hidden superpixels of a whole batch are looked up at once and the batch made
by one ``np.where``; the draws from lime's generator are the same calls in the same order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np


@functools.cache
def lime_image_explainer() -> type[Any]:
    """``lime_image.LimeImageExplainer`` with ``data_labels`` vectorized (lime is imported
    here, on first use)."""
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

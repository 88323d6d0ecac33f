"""What an explanation starts from: the model's session, every input's array, the background.

    loaded, session = open_session("model.onnx", None)          # or an OrtRunner, a Model
    name = input_name_of(loaded.signature, None)                  # the first input
    feeds = feeds_of("x.npz", loaded.signature, name)             # every input's array

Inputs come as arrays by input name, one array for the explained input, or a feeds file
(``data.load_feeds``); the background as rows like the explained input, or an .npz / mapping
holding them under its name. Each problem is one line: a DataError naming the array, a
UsageError naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, UsageError
from ..model import Model
from ..runtime import OrtRunner, create_session
from ..signature import Signature, TensorSpec
from .kinds import Layout, plan_layout

if TYPE_CHECKING:
    from .evaluate import Session

Arrays = Mapping[str, np.ndarray] | np.ndarray | str | Path
"""Arrays by input name, one array, or a file that holds them."""

MAX_SHAP_BACKGROUND = 100
"""Background rows SHAP takes at most (more are sampled down, with a note)."""


def open_session(
    model: Model | str | Path | OrtRunner, session: Session | None
) -> tuple[Model, Session]:
    """The model and a session for it: the one given, the runner's, or a new cpu session."""
    if isinstance(model, OrtRunner):
        return model.model, session or model.session
    loaded = model if isinstance(model, Model) else Model.load(model)
    return loaded, session or create_session(loaded)


def input_name_of(signature: Signature, name: str | None) -> str:
    """The explained input: ``name``, or the model's first input."""
    names = signature.input_names
    if not names:
        raise UsageError("the model takes no inputs, so there is nothing to explain")
    if name is None:
        return names[0]
    if name not in names:
        raise UsageError(f"the model has no input {name!r}", hint=f"its inputs are {names}")
    return name


def feeds_of(inputs: Arrays, signature: Signature, name: str) -> dict[str, np.ndarray]:
    """Every input's array: from a feeds file (load_feeds), one array, or a mapping."""
    from ..data import load_feeds

    if isinstance(inputs, (str, Path)):
        return load_feeds(inputs, signature)[0]
    given = {name: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    unknown = [k for k in given if k not in signature.input_names]
    if unknown:
        raise DataError(
            f"the inputs hold {unknown}, not inputs of the model",
            hint=f"name the arrays after the model's inputs: {signature.input_names}",
        )
    missing = [k for k in signature.input_names if k not in given]
    if missing:
        raise DataError(
            f"the inputs have no array for {missing}",
            hint=f"give every input of the model: {signature.input_names}",
        )
    return {k: np.asarray(v) for k, v in given.items()}


def background_of(
    background: Arrays | None,
    spec: TensorSpec,
    layout: Layout,
    rows: np.ndarray,
    notes: list[str],
) -> np.ndarray | None:
    """The background as rows like ``rows``; for tabular rows without one, the rows
    themselves when there are several (with a note)."""
    from ..data import load_npz_arrays

    if background is None:
        return default_background(layout, rows, notes)
    if isinstance(background, (str, Path)):
        background = load_npz_arrays(background)
    if isinstance(background, Mapping):
        if spec.name not in background:
            raise DataError(
                f"the background has no array {spec.name!r}",
                hint=f"name it after the explained input; it holds {sorted(background)}",
            )
        background = background[spec.name]
    _, data = plan_layout(spec, np.asarray(background), layout.kind, layout.batch_axis)
    if data.shape[1:] != rows.shape[1:]:
        raise DataError(
            f"background rows have shape {list(data.shape[1:])}, the inputs {list(rows.shape[1:])}",
            hint="give background rows shaped like the inputs",
        )
    return data


def default_background(layout: Layout, rows: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """Without a background: for tabular rows, the rows themselves when there are several
    (with a note); else none."""
    if layout.kind == "tabular" and len(rows) > 1:
        notes.append(f"background: the {len(rows)} inputs themselves (no --background given)")
        return rows
    return None


def shap_background(
    data: np.ndarray | None, method: str, seed: int, notes: list[str]
) -> np.ndarray | None:
    """At most ``MAX_SHAP_BACKGROUND`` rows for the SHAP methods (sampled, with a note)."""
    if data is None or method not in ("kernelshap", "permutation"):
        return data
    if len(data) <= MAX_SHAP_BACKGROUND:
        return data
    chosen = np.random.default_rng(seed).choice(len(data), MAX_SHAP_BACKGROUND, replace=False)
    notes.append(f"background: {MAX_SHAP_BACKGROUND} of {len(data)} rows, sampled for SHAP")
    return data[np.sort(chosen)]

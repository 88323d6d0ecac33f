"""An explanation on disk: pictures by input kind, the raw arrays, JSON, and one HTML report.

    files = write_explanation(explanation, "explain/", vocabulary=load_vocabulary("vocab.txt"))
    files["report"]          # explain/report.html: self-contained (pictures inline)

What is written: ``explanation.json`` (the Report), ``attributions.npz`` (inputs, attributions,
base values, scores, superpixels), then by kind: images ``heatmap_N.png`` (the input beside
its attribution overlay); tabular ``importance.png`` (mean |attribution| per feature) and
``beeswarm.png`` (each input's attribution per feature, coloured by the feature's value);
signals ``signal_N.png`` (the input above its attributions along time: a trace for one channel,
a map for more); volumes ``volume_N.png`` (the three planes through the strongest voxel, the
attributions over the scan); tokens ``tokens.html`` (tokens coloured by attribution: red raises the
target, blue lowers it). Every file is written atomically; pictures are drawn with
matplotlib's Agg renderer (no display).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic
from ..data import save_npz
from ..errors import DataError, InputError, read_user_text
from ..report import render_html
from .result import SHAP_METHODS, Explanation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MOST_FEATURES = 20
"""Features drawn in the tabular charts (the largest mean |attribution|)."""


TEXTUAL = ("tokens", "text")
"""Kinds shown as coloured words in HTML, not pictures."""


def write_explanation(
    explanation: Explanation, outdir: str | Path, vocabulary: list[str] | None = None
) -> dict[str, Path]:
    """Write the explanation's files into ``outdir`` (created); returns them by role:
    "json", "arrays", "report", and "heatmap_N", "signal_N", "volume_N", "importance",
    "beeswarm" or "tokens"."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None and explanation.kind not in TEXTUAL:
        raise InputError(
            "the explanation's pictures need matplotlib, which is not installed",
            hint="pip install 'onnxferry[explain]'",
        )
    out = Path(outdir)
    files: dict[str, Path] = {}
    pictures: dict[str, bytes] = {}
    files["json"] = explanation.report.save(out / "explanation.json")
    files["arrays"] = save_npz(out / "attributions.npz", _arrays(explanation))
    tokens = None
    if explanation.kind == "image":
        for i in range(len(explanation.inputs)):
            pictures[f"heatmap_{i}"] = heatmap_png(explanation, i)
    elif explanation.kind == "signal":
        for i in range(len(explanation.inputs)):
            pictures[f"signal_{i}"] = signal_png(explanation, i)
    elif explanation.kind == "volume":
        for i in range(len(explanation.inputs)):
            pictures[f"volume_{i}"] = volume_png(explanation, i)
    elif explanation.kind == "tabular":
        pictures["importance"] = importance_png(explanation)
        pictures["beeswarm"] = beeswarm_png(explanation)
    else:
        tokens = tokens_html(explanation, explanation.words or vocabulary)
        files["tokens"] = write_text_atomic(
            out / "tokens.html", _page(f"tokens: {explanation.model}", tokens)
        )
    for name, png in pictures.items():
        files[name] = write_bytes_atomic(out / f"{name}.png", png)
    page = report_html(explanation, pictures, tokens, [p.name for p in files.values()])
    files["report"] = write_text_atomic(out / "report.html", page)
    return files


def load_vocabulary(path: str | Path) -> list[str]:
    """Tokens by id: one a line, line N for id N. DataError when the file cannot be read."""
    hint = "give a UTF-8 text file with one token a line"
    return read_user_text(path, "the vocabulary", DataError, hint).splitlines()


# --- pictures -------------------------------------------------------------------------------


def heatmap_png(explanation: Explanation, index: int) -> bytes:
    """Input ``index`` (an image) beside its attributions over it (red raises the target)."""
    from matplotlib.figure import Figure

    layout = explanation.layout
    image = explanation.inputs[index]
    image = image if layout.channels_last else np.moveaxis(image, 0, -1)
    shown = _unit(image.astype(np.float64))
    heat = explanation.heatmap(index)
    limit = float(np.abs(heat).max()) or 1.0
    figure = Figure(figsize=(8, 4), dpi=100)
    left, right = figure.subplots(1, 2)
    gray = shown[..., 0] if shown.shape[-1] == 1 else shown.mean(axis=-1)
    left.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", vmin=0, vmax=1)
    left.set_title(f"input {index}")
    right.imshow(gray, cmap="gray", vmin=0, vmax=1)
    drawn = right.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.65)
    right.set_title(f"{explanation.method}: {explanation.targets[index]}")
    for axis in (left, right):
        axis.set_axis_off()
    figure.colorbar(drawn, ax=right, fraction=0.046, pad=0.04)
    return _png(figure)


def volume_png(explanation: Explanation, index: int) -> bytes:
    """Input ``index`` (a volume) in the three planes through its strongest voxel: each slice
    of the scan (its channels' mean) under the attributions there (red raises the target)."""
    from matplotlib.figure import Figure

    layout = explanation.layout
    volume = explanation.inputs[index].astype(np.float64)
    if len(layout.spatial_axes) < volume.ndim:  # channels: their mean
        volume = volume.mean(axis=-1 if layout.channels_last else 0)
    shown = _unit(volume)
    heat = explanation.heatmap(index)
    limit = float(np.abs(heat).max()) or 1.0
    centre = [int(i) for i in np.unravel_index(int(np.argmax(np.abs(heat))), heat.shape)]
    figure = Figure(figsize=(12, 4), dpi=100)
    drawn = None
    for axis, (plane, name) in zip(figure.subplots(1, 3), enumerate("dhw"), strict=True):
        picked = tuple(centre[a] if a == plane else slice(None) for a in range(3))
        axis.imshow(shown[picked], cmap="gray", vmin=0, vmax=1)
        drawn = axis.imshow(heat[picked], cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.65)
        axis.set_title(f"plane {name} = {centre[plane]}")
        axis.set_axis_off()
    figure.suptitle(f"input {index}, {explanation.method}: {explanation.targets[index]}")
    if drawn is not None:
        figure.colorbar(drawn, ax=figure.axes, fraction=0.02, pad=0.02)
    return _png(figure)


def signal_png(explanation: Explanation, index: int) -> bytes:
    """Input ``index`` (a signal) above its attributions: traces when it has one axis longer
    than 1 (red raises the target, blue lowers it), maps when it has two (more axes are
    summed into the second)."""
    from matplotlib.figure import Figure

    signal = np.squeeze(explanation.inputs[index].astype(np.float64))
    values = np.squeeze(explanation.attributions[index])
    if signal.ndim > 2:
        signal = signal.reshape(signal.shape[0], -1)
        values = values.reshape(values.shape[0], -1)
    figure = Figure(figsize=(9, 5), dpi=100)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.set_title(f"input {index}")
    bottom.set_title(f"{explanation.method}: {explanation.targets[index]}")
    limit = float(np.abs(values).max()) or 1.0
    if signal.ndim <= 1:
        steps = np.arange(signal.size)
        top.plot(steps, signal.reshape(-1), color="#444", linewidth=0.6)
        line = values.reshape(-1)
        bottom.fill_between(steps, line, where=line >= 0, color="#d62728", step="mid")
        bottom.fill_between(steps, line, where=line < 0, color="#1f77b4", step="mid")
        bottom.set_ylim(-limit * 1.05, limit * 1.05)
    else:
        top.imshow(signal, aspect="auto", cmap="gray", origin="lower")
        drawn = bottom.imshow(
            values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower"
        )
        figure.colorbar(drawn, ax=[top, bottom], fraction=0.03, pad=0.02)
    return _png(figure)


def importance_png(explanation: Explanation) -> bytes:
    """Mean |attribution| per feature over the inputs, largest on top."""
    from matplotlib.figure import Figure

    values = explanation.attributions.reshape(len(explanation.inputs), -1)
    mean = np.abs(values).mean(axis=0)
    order = np.argsort(-mean, kind="stable")[:MOST_FEATURES][::-1]
    figure = Figure(figsize=(7, 0.35 * len(order) + 1.2), dpi=100)
    axis = figure.subplots()
    axis.barh([_feature(explanation, int(j)) for j in order], mean[order], color="#d62728")
    axis.set_xlabel("mean |attribution|")
    axis.set_title(f"{explanation.method}: {_targets(explanation)}")
    figure.tight_layout()
    return _png(figure)


def beeswarm_png(explanation: Explanation) -> bytes:
    """Each input's attribution per feature (a dot each), coloured by the feature's value."""
    from matplotlib.figure import Figure

    count = len(explanation.inputs)
    values = explanation.attributions.reshape(count, -1)
    features = explanation.inputs.reshape(count, -1).astype(np.float64)
    order = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:MOST_FEATURES][::-1]
    figure = Figure(figsize=(7, 0.35 * len(order) + 1.2), dpi=100)
    axis = figure.subplots()
    jitter = (np.argsort(np.argsort(values, axis=0), axis=0) / max(count, 1) - 0.5) * 0.6
    drawn = None
    for row, j in enumerate(order):
        column = features[:, j]
        span = float(column.max() - column.min()) or 1.0
        colours = (column - column.min()) / span
        drawn = axis.scatter(
            values[:, j], row + jitter[:, j], c=colours, cmap="coolwarm", vmin=0, vmax=1, s=14
        )
    axis.axvline(0, color="#888", linewidth=0.8)
    axis.set_yticks(range(len(order)), [_feature(explanation, int(j)) for j in order])
    axis.set_xlabel("attribution")
    axis.set_title("attribution per input (colour: feature value, low blue, high red)")
    if drawn is not None:
        figure.colorbar(drawn, ax=axis, label="feature value (scaled)")
    figure.tight_layout()
    return _png(figure)


def tokens_html(explanation: Explanation, vocabulary: list[str] | None = None) -> str:
    """Each input's tokens as coloured spans (``data-attribution`` holds the value): red raises
    the target, blue lowers it, stronger for a larger share of the row's largest |value|."""
    rows = []
    for i in range(len(explanation.inputs)):
        ids = explanation.inputs[i].reshape(-1)
        values = explanation.attributions[i].reshape(-1)
        limit = float(np.abs(values).max()) or 1.0
        spans = []
        for position, (token, value) in enumerate(zip(ids, values, strict=True)):
            if explanation.words is not None and not token:
                continue  # padding after a shorter text
            word = _word(int(token), vocabulary)
            alpha = abs(float(value)) / limit
            colour = (214, 39, 40) if value > 0 else (31, 119, 180)
            style = f"background:rgba({colour[0]},{colour[1]},{colour[2]},{alpha:.3f})"
            spans.append(
                f"<span class='token' data-position='{position}' data-id='{int(token)}' "
                f"data-attribution='{float(value):.6g}' style='{style};padding:1px 3px;"
                f"margin:1px;border-radius:3px' title='id {int(token)}: {float(value):.4g}'>"
                f"{html.escape(word)}</span>"
            )
        caption = html.escape(f"input {i}: {explanation.targets[i]} = {explanation.scores[i]:.4g}")
        rows.append(
            f"<div class='tokens' data-input='{i}'><p>{caption}</p>"
            f"<p style='line-height:2'>{' '.join(spans)}</p></div>"
        )
    return "\n".join(rows)


def report_html(
    explanation: Explanation,
    pictures: dict[str, bytes],
    tokens: str | None,
    files: list[str],
) -> str:
    """One self-contained page: the report's tables and notes, the pictures inline, the tokens,
    and links to the files beside it."""
    figures = []
    for name, png in pictures.items():
        data = base64.b64encode(png).decode("ascii")
        figures.append(
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}' "
            f"style='max-width:100%'><figcaption>{html.escape(name)}.png</figcaption>"
        )
    if tokens is not None:
        figures.append(tokens)
    if explanation.method in SHAP_METHODS:
        gaps = [abs(explanation.additivity_gap(i)) for i in range(len(explanation.inputs))]
        figures.append(
            "<p>SHAP efficiency: attributions add up to score minus base value within "
            f"{max(gaps, default=0.0):.3g} on every input.</p>"
        )
    links = ", ".join(f"<a href='{html.escape(f)}'>{html.escape(f)}</a>" for f in files)
    figures.append(f"<p class='files'>Files: {links}</p>")
    title = f"onnxferry explain: {explanation.model} ({explanation.method})"
    return render_html([explanation.report], title, figures)


# --- parts ----------------------------------------------------------------------------------


def _arrays(explanation: Explanation) -> dict[str, np.ndarray]:
    arrays = {
        "inputs": explanation.inputs,
        "attributions": explanation.attributions.astype(np.float32),
        "base_values": explanation.base_values,
        "scores": explanation.scores,
    }
    if explanation.segments is not None:
        arrays["segments"] = explanation.segments
    return arrays


def _feature(explanation: Explanation, flat: int) -> str:
    if explanation.table is not None:
        return explanation.table.columns[flat]
    shape = explanation.layout.sample_shape
    if len(shape) <= 1:
        return f"{explanation.input_name}[{flat}]"
    return (
        f"{explanation.input_name}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"
    )


def _targets(explanation: Explanation) -> str:
    """The target, or the targets when the inputs' top classes differ."""
    distinct = sorted(set(explanation.targets))
    return distinct[0] if len(distinct) == 1 else ", ".join(distinct[:4])


def _word(token: int, vocabulary: list[str] | None) -> str:
    if vocabulary is not None and 0 <= token < len(vocabulary):
        return vocabulary[token]
    return str(token)


def _unit(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _page(title: str, body: str) -> str:
    escaped = html.escape(title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escaped}</title></head>"
        f"<body style='font-family:system-ui,sans-serif;margin:2em'><h1>{escaped}</h1>"
        f"{body}</body></html>\n"
    )

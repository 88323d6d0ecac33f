"""Hugging Face model folders (``save_pretrained``'s config.json and weights) converted by
``ferry convert DIR``: the class from the config, example inputs from the config, the
sequence and the audio length left open; one line for a folder it cannot read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from tests.helpers import Run
from tests.real_models import save_pretrained

pytest.importorskip("transformers")
pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("bert_cls", {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}),
        (
            "t5",
            {
                "input_ids": ["batch", "sequence"],
                "attention_mask": ["batch", "sequence"],
                "decoder_input_ids": ["batch", "decoder_sequence"],
            },
        ),
        ("wav2vec2", {"input_values": ["batch", "samples"]}),
    ],
)
def test_a_saved_folder_converts_verified_with_its_lengths_open(
    ferry: Run, tmp_path: Path, name: str, dims: dict[str, list[str]]
) -> None:
    """A fine-tuned model as ``save_pretrained`` leaves it was "a directory with neither
    saved_model.pb nor an .onnx model". Token ids keep their length open (a decoder's apart),
    and raw audio its samples, verified at 16000 and 12000 (8 and 13 samples are shorter
    than wav2vec2's first convolution); the ONNX model runs at a length it was not
    exported at."""
    folder = save_pretrained(name, tmp_path / "model")
    out = tmp_path / "model.onnx"
    code, _, err = ferry("convert", folder, "-o", out, "--json")
    assert code == 0, err
    model = Model.load(out)
    assert {s.name: list(s.shape or ()) for s in model.signature.inputs} == dims
    lengths = {"sequence": 5, "decoder_sequence": 3, "samples": 8000, "batch": 3}
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in model.signature.inputs:
        shape = [lengths[str(d)] for d in spec.shape or ()]
        integer = spec.dtype.kind == "int"
        feeds[spec.name] = np.ones(shape, np.int64) if integer else rng.normal(0, 0.1, shape)
        feeds[spec.name] = feeds[spec.name].astype(spec.dtype.numpy)
    outputs = OrtRunner(model).run(feeds)
    assert all(value.shape[0] == 3 for value in outputs.values())


def test_the_folder_s_class_is_the_config_s_architecture(tmp_path: Path) -> None:
    """The class comes from ``architectures``, the example from the config: ids inside its
    vocabulary, an all-ones mask."""
    from onnxferry.convert.base import ConvertOptions
    from onnxferry.convert.torch.pretrained import from_pretrained_dir

    folder = save_pretrained("bert_cls", tmp_path / "bert")
    module, example, description = from_pretrained_dir(folder, ConvertOptions())
    assert type(module).__name__ == "BertForSequenceClassification" and not module.training
    assert set(example) == {"input_ids", "attention_mask"}
    assert int(example["input_ids"].max()) < 300 and bool((example["attention_mask"] == 1).all())
    assert description.startswith("the BertForSequenceClassification in ")


def test_a_text_and_image_model_s_example_has_both(tmp_path: Path) -> None:
    """CLIP's main input is its token ids, and its forward needs the image too ("'NoneType'
    object has no attribute 'shape'" on the ids alone): both come from its two configs."""
    from onnxferry.convert.base import ConvertOptions
    from onnxferry.convert.torch.pretrained import from_pretrained_dir

    _, example, _ = from_pretrained_dir(
        save_pretrained("clip", tmp_path / "clip"), ConvertOptions()
    )
    assert sorted(example) == ["attention_mask", "input_ids", "pixel_values"]
    assert tuple(example["pixel_values"].shape) == (2, 3, 32, 32)
    assert int(example["input_ids"].max()) < 100


def _config_only(folder: Path, config: dict[str, Any], weights: bool = True) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        ({"architectures": ["BertModel"]}, False, "a Hugging Face model folder without PyTorch"),
        ({"architectures": []}, True, "names no architecture"),
        ({"architectures": ["NoSuchModelForAnything"]}, True, "has no class"),
        (
            {"architectures": ["MyNet"], "auto_map": {"AutoModel": "modeling_my.MyNet"}},
            True,
            "names its own Python code (auto_map)",
        ),
        ({"architectures": ["BertModel"], "model_type": "bert"}, True, "cannot load it"),
    ],
    ids=["no weights", "no architecture", "unknown class", "remote code", "empty weights"],
)
def test_a_folder_it_cannot_read_is_one_line(
    ferry: Run, tmp_path: Path, config: dict[str, Any], weights: bool, message: str
) -> None:
    folder = _config_only(tmp_path / "model", config, weights)
    code, _, err = ferry("convert", folder, "-o", tmp_path / "m.onnx")
    assert code == 2 and message in err and err.count("\n") == 1, err

"""A Hugging Face model folder (what ``save_pretrained`` and ``Trainer.save_model`` write:
``config.json`` beside ``model.safetensors`` or ``pytorch_model.bin``) as a torch source, with
example inputs made from its config.

    module, example, description = from_pretrained_dir(Path("checkpoints/bert"), options)
    module      # BertForSequenceClassification, in eval mode, read offline
    example     # {"input_ids": int64[2, 16], "attention_mask": ones like it}

The class is the config's first ``architectures`` entry, read with ``local_files_only`` (no
hub). The example's main input is the model's ``main_input_name``: token ids (with an all-ones
mask; a decoder's ids too for an encoder-decoder), an image of the config's size and
channels, raw audio, or a log-mel spectrogram; a text-and-image model (CLIP: a
``text_config`` and a ``vision_config``) gets both. A decoder's cache is off (``use_cache=False``):
the exported graph takes the sequence and gives the logits. ``--inputs`` or
``--input-shape`` replace the example. A config naming its own code (``auto_map``) needs
``trust_pickle`` (loading runs that code). Token ids, masks and raw audio keep their length
open (``PRETRAINED_AXES``) unless ``--dynamic`` says otherwise.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..base import ConversionError, ConvertOptions
from .quiet import quiet, torch_error

WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""The weight files ``from_pretrained`` reads, one of them in a saved model's folder."""
TOKENS = 16
"""The example's sequence length (a decoder's half of it)."""
_TOKENS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_DECODER = ("decoder_input_ids", "decoder_attention_mask")
PRETRAINED_AXES: dict[str, dict[int, str]] = {
    **{name: {0: "batch", 1: "sequence"} for name in _TOKENS},
    **{name: {0: "batch", 1: "decoder_sequence"} for name in _DECODER},
    "input_values": {0: "batch", 1: "samples"},
}
"""The dynamic axes of a folder's inputs (others: the batch alone; an image's size and a
spectrogram's frames stay as the config sets them, as position embeddings need)."""


def is_pretrained_dir(path: Path) -> bool:
    """A folder holding ``config.json`` and a weights file transformers reads."""
    return (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHTS)


def names_a_transformers_model(path: Path) -> bool:
    """``config.json`` is transformers' (it names a ``model_type`` or ``architectures``), not
    another tool's file of the same name (musicnn's training settings)."""
    try:
        config = _config(path)
    except InputError:
        return False
    return bool(config.get("model_type") or config.get("architectures"))


def from_pretrained_dir(path: Path, options: ConvertOptions) -> tuple[Any, Any, str]:
    """(module in eval mode, example inputs or None, description); InputError for a folder
    transformers cannot read, ConversionError when the inputs cannot be told."""
    try:
        import transformers
    except ImportError:
        raise InputError(
            f"{path} is a Hugging Face model folder, and transformers is not installed",
            hint="pip install 'onnxferry[hf]'",
        ) from None
    config = _config(path)
    architecture = _architecture(path, config, transformers)
    if config.get("auto_map") and not options.trust_pickle:
        raise InputError(
            f"{path}/config.json names its own Python code (auto_map), and loading it runs it",
            hint="pass --trust-pickle if you trust its origin",
        )
    try:
        with quiet():
            settings = transformers.AutoConfig.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=options.trust_pickle
            )
            if getattr(settings, "use_cache", None):
                settings.use_cache = False
            module = architecture.from_pretrained(
                str(path),
                config=settings,
                local_files_only=True,
                trust_remote_code=options.trust_pickle,
            )
    except Exception as e:
        raise InputError(
            f"{path}: transformers {transformers.__version__} cannot load it: {torch_error(e)}",
            hint="check that the folder is whole (config.json and its weights, as "
            "save_pretrained wrote them)",
        ) from e
    module.eval()
    given = options.sample_inputs or options.input_shapes
    example = None if given else _example(module, settings)
    description = f"the {architecture.__name__} in {path} (transformers {transformers.__version__})"
    return module, example, description


def _config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            f"{path}/config.json is not readable JSON: {e}", hint="save the model again"
        ) from e
    if not isinstance(config, dict):
        raise InputError(f"{path}/config.json is not a JSON object", hint="save the model again")
    return config


def _architecture(path: Path, config: dict[str, Any], transformers: Any) -> Any:
    """The class named first in ``architectures``."""
    names = config.get("architectures") or []
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise InputError(
            f"{path}/config.json names no architecture (its 'architectures' list is empty)",
            hint="save the model with save_pretrained, or give a factory FILE.py:FUNCTION "
            "that builds it",
        )
    found = getattr(transformers, names[0], None)
    if found is not None:
        return found
    auto_map = config.get("auto_map") or {}
    for auto, target in auto_map.items() if isinstance(auto_map, dict) else ():
        if str(target).endswith(f".{names[0]}") and hasattr(transformers, auto):
            return getattr(transformers, auto)  # the folder's own class, through its Auto*
    raise InputError(
        f"{path}: transformers {transformers.__version__} has no class {names[0]!r}",
        hint="install the transformers version the model was saved with",
    )


def _example(module: Any, config: Any) -> dict[str, Any]:
    """Two rows of the model's main input (and the mask or decoder ids it goes with)."""
    import torch

    main = getattr(module, "main_input_name", "input_ids")
    generator = torch.Generator().manual_seed(0)
    example: dict[str, Any]
    if main == "input_ids":
        example = _tokens(getattr(config, "text_config", None) or config, generator)
    elif main == "pixel_values":
        example = _image(getattr(config, "vision_config", None) or config, generator)
    elif main == "input_values":
        example = {"input_values": torch.randn(2, 16000, generator=generator) * 0.1}
    elif main == "input_features":
        mels = int(getattr(config, "num_mel_bins", 80))
        frames = 2 * int(getattr(config, "max_source_positions", 1500))
        example = {"input_features": torch.randn(2, mels, frames, generator=generator)}
    else:
        raise ConversionError(
            f"cannot tell the example inputs of {type(module).__name__} (its main input is "
            f"{main!r})",
            hint="give them: --inputs FILE.npz (one array per forward argument) or "
            "--input-shape NAME=DIMS",
        )
    if getattr(config, "is_encoder_decoder", False):
        start = getattr(config, "decoder_start_token_id", None) or 0
        example["decoder_input_ids"] = torch.full((2, TOKENS // 2), int(start))
    takes = inspect.signature(module.forward).parameters
    if "pixel_values" in takes and getattr(config, "vision_config", None) is not None:
        example.setdefault("pixel_values", _image(config.vision_config, generator)["pixel_values"])
    if "input_ids" in takes and getattr(config, "text_config", None) is not None:
        for name, value in _tokens(config.text_config, generator).items():
            example.setdefault(name, value)  # a text-and-image model (CLIP) takes both
    return example


def _tokens(config: Any, generator: Any) -> dict[str, Any]:
    """Ids inside the config's vocabulary and an all-ones mask, two rows of ``TOKENS``."""
    import torch

    vocab = int(getattr(config, "vocab_size", 0) or 2)
    ids = torch.randint(0, vocab, (2, TOKENS), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _image(config: Any, generator: Any) -> dict[str, Any]:
    """Two images of the config's size and channels."""
    import torch

    side = getattr(config, "image_size", 224)
    height, width = (side, side) if isinstance(side, int) else tuple(side)[:2]
    channels = int(getattr(config, "num_channels", 3))
    return {"pixel_values": torch.rand(2, channels, height, width, generator=generator)}

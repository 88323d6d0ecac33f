"""Every verb on Hugging Face model folders (``save_pretrained``'s config.json and weights,
random weights, built here): ``ferry convert DIR``, then the verbs of ``real_models.py`` on
the inputs the folder's config implies, one Markdown row each.

    .venv/bin/python benchmarks/pretrained_folders.py [--only bert_cls,whisper]

Small settings of transformers' own classes, one per input kind the folder source makes
examples for: token ids (an encoder classifier, a decoder-only LM, an encoder-decoder), an
image (ViT), raw audio (wav2vec2 CTC) and a log-mel spectrogram with decoder ids (Whisper).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


WHISPER = {
    "vocab_size": 100, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
    "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64, "num_mel_bins": 16, "max_source_positions": 50,
    "max_target_positions": 32, "decoder_start_token_id": 1, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip


def _models() -> dict[str, Callable[[], Any]]:
    t: Any = importlib.import_module("transformers")  # its configs' stubs take no **dict

    return {
        "bert_cls": lambda: t.BertForSequenceClassification(
            t.BertConfig(vocab_size=300, num_labels=3, **SMALL)
        ),
        "llama": lambda: t.LlamaForCausalLM(
            t.LlamaConfig(
                vocab_size=300, num_key_value_heads=1, max_position_embeddings=64, **SMALL
            )
        ),
        "t5": lambda: t.T5ForConditionalGeneration(
            t.T5Config(vocab_size=200, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)
        ),
        "vit": lambda: t.ViTForImageClassification(
            t.ViTConfig(image_size=32, patch_size=8, num_labels=4, **SMALL)
        ),
        "wav2vec2": lambda: t.Wav2Vec2ForCTC(
            t.Wav2Vec2Config(
                vocab_size=20,
                conv_dim=(16, 16),
                conv_kernel=(10, 3),
                conv_stride=(5, 2),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
                **SMALL,
            )
        ),
        "whisper": lambda: t.WhisperForConditionalGeneration(t.WhisperConfig(**WHISPER)),
    }


def _feeds(path: Path) -> dict[str, np.ndarray]:
    """Two rows at lengths other than the export's: 12 tokens, 4 decoder tokens, 1 s."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    sizes = {"batch": 2, "sequence": 12, "decoder_sequence": 4, "samples": 16000}
    feeds = {}
    for spec in ort.InferenceSession(str(path)).get_inputs():
        shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
        if "int" in spec.type:
            feeds[spec.name] = rng.integers(1, 20, shape).astype(np.int64)
        else:
            feeds[spec.name] = rng.normal(0, 0.5, shape).astype(np.float32)
    return feeds


def main(argv: list[str] | None = None) -> int:
    import real_models as rm  # benchmarks/ is on the path when this file runs as a script

    args = rm.table_arguments(__doc__, "bert_cls,whisper", "build/pretrained-folders", argv)
    models = _models()
    names = args.only.split(",") if args.only else list(models)

    def saved(name: str) -> list[object]:
        import torch

        torch.manual_seed(0)
        models[name]().save_pretrained(str(args.workdir / name))
        return [args.workdir / name]

    built = [
        (name, functools.partial(saved, name), args.workdir / f"{name}.onnx", _feeds)
        for name in names
    ]
    return rm.convert_table("folder", built, args.time_budget)


if __name__ == "__main__":
    sys.exit(main())

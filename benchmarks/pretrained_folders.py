"""Every verb on Hugging Face model folders (``save_pretrained``'s config.json and weights,
random weights, built here): ``ferry convert DIR``, then the verbs of ``real_models.py`` on
the inputs the folder's config implies, one Markdown row each.

    .venv/bin/python benchmarks/pretrained_folders.py [--only bert_cls,whisper]

Small settings of transformers' own classes (``tests/real_models.PRETRAINED``), one per input
kind the folder source makes examples for: token ids (an encoder classifier, a decoder-only LM,
an encoder-decoder), an image (ViT), raw audio (wav2vec2 CTC) and a log-mel spectrogram with
decoder ids (Whisper).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


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
    from tests.real_models import PRETRAINED, save_pretrained  # real_models put tests/ on the path

    def saved(name: str) -> list[object]:
        return [save_pretrained(name, args.workdir / name)]

    return rm.convert_table("folder", args.names or list(PRETRAINED), saved, _feeds, args)


if __name__ == "__main__":
    sys.exit(main())

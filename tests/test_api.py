"""The public API is curated: __all__ is exact and every name in it resolves."""

from __future__ import annotations

import pytest

import onnxferry

EXPECTED = {
    "BenchResult", "BenchSuite", "CheckResult", "ConversionError", "ParityFailure", "convert",
    "DType", "DataError", "Divergence", "Budget", "Recipe", "Deployment", "deploy", "optimize",
    "FeedError", "FerryError", "Finding", "GoldenResult", "InputError", "InvalidModelError",
    "Model", "ModelInfo", "ModelLoadError", "OrtRunner", "OutputParity", "Parity",
    "ProviderError", "Report", "Runner", "SessionConfig", "Signature", "Table", "TensorSpec",
    "TestCase", "Tolerance", "UnsafeModelError", "UsageError", "VerificationError", "RunError",
    "FeedPlan", "plan_feeds", "Explanation", "explain", "finetune", "federated",
    "UnknownOperatorError",
    "__version__", "available_providers", "bench", "check", "compare", "compare_outputs",
    "inspect", "load_feeds", "load_test_cases", "save_test_case", "test",
}  # fmt: skip


def test_all_is_exact() -> None:
    assert set(onnxferry.__all__) == EXPECTED
    assert len(onnxferry.__all__) == len(EXPECTED), "duplicates in __all__"


def test_every_public_name_resolves() -> None:
    for name in onnxferry.__all__:
        assert getattr(onnxferry, name) is not None, name


def test_no_other_public_names_leak() -> None:
    public = {n for n in vars(onnxferry) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(onnxferry, n)).__name__ == "module"}
    assert public - modules - set(onnxferry.__all__) == set()


def test_errors_carry_exit_codes() -> None:
    assert onnxferry.InputError("x").exit_code == 2
    assert onnxferry.UnsafeModelError("x").exit_code == 2
    assert onnxferry.VerificationError("x").exit_code == 1
    error = onnxferry.FeedError("input 'x' expects float32", hint="cast it")
    assert str(error) == "input 'x' expects float32; cast it"
    assert issubclass(onnxferry.InvalidModelError, onnxferry.ModelLoadError)


def test_a_partial_tolerance_takes_the_defaults_for_the_rest() -> None:
    default = onnxferry.Tolerance()
    assert onnxferry.Tolerance.partial() is None
    assert onnxferry.Tolerance.partial(atol=0.5) == onnxferry.Tolerance(0.5, default.rtol)
    assert onnxferry.Tolerance.partial(rtol=0.5) == onnxferry.Tolerance(default.atol, 0.5)


def test_bench_takes_models_or_a_url_not_both() -> None:
    with pytest.raises(onnxferry.UsageError, match="give one or more models"):
        onnxferry.bench()
    with pytest.raises(onnxferry.UsageError, match="need --url"):
        onnxferry.bench("model.onnx", concurrency=(1, 8))
    pytest.importorskip("tritonclient")
    with pytest.raises(onnxferry.UsageError, match="not model files"):
        onnxferry.bench("model.onnx", url="http://127.0.0.1:1", model="m")
    with pytest.raises(onnxferry.UsageError, match="--model NAME"):
        onnxferry.bench(url="http://127.0.0.1:1")

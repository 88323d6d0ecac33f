"""The public API is curated: __all__ is exact and every name in it resolves."""

from __future__ import annotations

import onnxferry

EXPECTED = {
    "BenchResult", "BenchSuite", "CheckResult", "ConversionError", "ParityFailure", "convert",
    "DType", "DataError", "Divergence", "Budget", "Recipe", "Deployment", "deploy", "optimize",
    "FeedError", "FerryError", "Finding", "GoldenResult", "InputError", "InvalidModelError",
    "Model", "ModelInfo", "ModelLoadError", "OrtRunner", "OutputParity", "Parity",
    "ProviderError", "Report", "Runner", "SessionConfig", "Signature", "Table", "TensorSpec",
    "TestCase", "Tolerance", "UnsafeModelError", "UsageError", "VerificationError", "RunError",
    "FeedPlan", "plan_feeds",
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

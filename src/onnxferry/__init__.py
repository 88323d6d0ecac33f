"""onnxferry: carry a trained model to a fast, verified, signed ONNX deployment.

    import onnxferry

    model = onnxferry.Model.load("model.onnx")
    onnxferry.check(model.path).ok
    report = onnxferry.compare("model.onnx", "model_fp16.onnx")
    print(report.to_text())

Transforming verbs (convert, optimize) return a Model whose ``provenance`` holds their
reports, oldest first; ``model.last_report(Conversion)`` gives one back, typed.
Judging verbs (inspect, check, compare, test, bench) return a Report. The `ferry` command
wraps each.
"""

from ._version import __version__
from .bench import BenchResult, BenchSuite, bench  # bench: the verb, over the package's name
from .check import CheckResult, Finding, check
from .compare import compare
from .convert import ConversionError, ParityFailure, convert
from .data import TestCase, load_feeds, load_test_cases, save_test_case
from .deploy import Deployment, deploy
from .errors import (
    DataError,
    FeedError,
    FerryError,
    InputError,
    InvalidModelError,
    ModelLoadError,
    ProviderError,
    RunError,
    UnknownOperatorError,
    UnsafeModelError,
    UsageError,
    VerificationError,
)
from .explain import Explanation, explain  # explain: the verb, over the package's name
from .feeds import FeedPlan, plan_feeds
from .golden import GoldenResult, test
from .inspection import ModelInfo, inspect
from .learn import federated, finetune
from .model import Model
from .optimize import Budget, Recipe, optimize
from .parity import Divergence, OutputParity, Parity, Tolerance, compare_outputs
from .report import Report, Table
from .runtime import OrtRunner, Runner, SessionConfig, available_providers
from .signature import DType, Signature, TensorSpec

__all__ = [
    "BenchResult",
    "BenchSuite",
    "Budget",
    "CheckResult",
    "ConversionError",
    "DType",
    "DataError",
    "Deployment",
    "Divergence",
    "Explanation",
    "FeedError",
    "FeedPlan",
    "FerryError",
    "Finding",
    "GoldenResult",
    "InputError",
    "InvalidModelError",
    "Model",
    "ModelInfo",
    "ModelLoadError",
    "OrtRunner",
    "OutputParity",
    "Parity",
    "ParityFailure",
    "ProviderError",
    "Recipe",
    "Report",
    "RunError",
    "Runner",
    "SessionConfig",
    "Signature",
    "Table",
    "TensorSpec",
    "TestCase",
    "Tolerance",
    "UnknownOperatorError",
    "UnsafeModelError",
    "UsageError",
    "VerificationError",
    "__version__",
    "available_providers",
    "bench",
    "check",
    "compare",
    "compare_outputs",
    "convert",
    "deploy",
    "explain",
    "federated",
    "finetune",
    "inspect",
    "load_feeds",
    "load_test_cases",
    "optimize",
    "plan_feeds",
    "save_test_case",
    "test",
]

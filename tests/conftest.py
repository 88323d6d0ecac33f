"""Fixtures every test module may use, and the order the test files run in."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from onnxferry.cli import main
from onnxferry.errors import EXIT_INTERNAL_ERROR
from tests.helpers import Run


@pytest.fixture
def ferry(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI in-process: (exit code, stdout, stderr). An internal error is run again
    with -v so the assertion message carries its traceback."""

    def run(*args: object) -> tuple[int, str, str]:
        argv = [str(a) for a in args]
        code = main(argv)
        out, err = capsys.readouterr()
        if code == EXIT_INTERNAL_ERROR:
            main(["-v", *argv])
            _, verbose_err = capsys.readouterr()
            err = f"{err}\n--- again with -v ---\n{verbose_err}"
        return code, out, err

    return run


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, ONNX Runtime's intra-op threads wait without spinning unless a
    test's session asks otherwise (see ``_sessions_share_the_cores``)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        _sessions_share_the_cores()


SPIN = "session.intra_op.allow_spinning"


def _sessions_share_the_cores() -> None:
    """Every ONNX Runtime session made in this worker without its own spinning setting gets
    ``allow_spinning=0``, as ferry's local batch engine does for its workers: two test workers
    on two cores, each session's idle threads spinning on the core the other worker needs,
    measured a quarter slower (160 s against 119 s on six ONNX Runtime-heavy files). Threads,
    providers and every other option stay the test's."""
    import onnxruntime as ort

    init = ort.InferenceSession.__init__

    def without_spinning(
        self: ort.InferenceSession,
        path_or_bytes: Any,
        sess_options: ort.SessionOptions | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        try:
            options.get_session_config_entry(SPIN)
        except RuntimeError:  # not set by the test or by ferry
            options.add_session_config_entry(SPIN, "0")
        init(self, path_or_bytes, options, *args, **kwargs)

    ort.InferenceSession.__init__ = without_spinning


FRESH_PROCESS = ("test_serve_memory_budget.py", "test_batch_ray.py")
"""Files that measure this process's own memory (a model's RSS growth at load, the batch
engine's cap over the process's RSS): they run first, before other files have grown the heap
(under pytest-xdist, the first files each worker takes)."""


LONG_FEW = (
    "test_trained_models.py",
    "test_robustness_models.py",
    "test_federated.py",
    "test_registry_reliability.py",
    "test_package_readme.py",
    "test_deploy.py",
    "test_batch_ray_resume.py",
)
"""Files of few tests that take 10-40 s each (training, fuzzing, Flower rounds, kill -9
loops, the README's deploy commands, a Ray run killed and resumed): by test count they came
last, and a worker that took one at the end kept the run going alone. They start right after
FRESH_PROCESS instead."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """FRESH_PROCESS files first, then LONG_FEW, then the files with the most tests (what
    pytest-xdist's own reordering does, which ``make test`` turns off so that this order
    holds); within a file, the tests keep their order."""
    counts = Counter(item.path.name for item in items)
    items.sort(
        key=lambda item: (
            item.path.name not in FRESH_PROCESS,
            item.path.name not in LONG_FEW,
            -counts[item.path.name],
        )
    )

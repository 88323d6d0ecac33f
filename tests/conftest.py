"""Fixtures every test module may use."""

from __future__ import annotations

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

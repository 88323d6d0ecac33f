"""The `ferry` command: thin verbs over the Python API.

    ferry inspect model.onnx --json
    ferry compare a.onnx b.onnx --atol 1e-4
    ferry bench a.onnx b.onnx --batch 1,8 --duration 1    # seconds per configuration

Exit codes: 0 ok, 1 verification failed, 2 usage or input error, 3 internal error.
Errors print one line on stderr; -v prints the traceback too.

One module per group of verbs (``judge``, ``convert``, ``optimize``, ``bench``, ``deploy``,
``serve``, ``signing``, ``registry`` and its ``registry_*`` parts, ``follow``, ``view``,
``doctor``, ``explain``, ``batch``); the options they share are declared once in
``options``, their value types in ``types``, and ``render`` prints reports.
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import click

from .._version import __version__
from ..errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, FerryError, one_line
from . import (
    batch,
    bench,
    ci,
    convert,
    deploy,
    doctor,
    explain,
    federated,
    finetune,
    follow,
    judge,
    optimize,
    package,
    registry,
    serve,
    signing,
    view,
)
from .render import json_only_stdout
from .types import BadValue


@dataclass
class Session:
    """What the group's options decide for every verb of one run (``ctx.obj``)."""

    verbose: bool = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferry")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks on error.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Carry a trained model to a fast, verified ONNX deployment."""
    ctx.ensure_object(Session).verbose = verbose
    logging.getLogger("onnxferry").setLevel(logging.DEBUG if verbose else logging.WARNING)


VERBS: list[click.Command] = [
    judge.inspect,
    judge.check,
    judge.compare,
    judge.test_command,
    bench.bench,
    serve.serve,
    convert.convert,
    optimize.optimize,
    deploy.deploy,
    optimize.passes,
    signing.keygen,
    signing.sign_command,
    signing.verify_command,
    registry.registry,
    package.package_command,
    follow.follow_command,
    ci.ci,
    view.graph_command,
    view.view_command,
    doctor.doctor_command,
    explain.explain_command,
    batch.batch_command,
    finetune.finetune_command,
    federated.federated_command,
]
for _verb in VERBS:
    cli.add_command(_verb)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ferry: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (known errors become one line on stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    loggers = [logging.getLogger(name) for name in ("onnxferry", "uvicorn")]  # serve's too
    for logger in loggers:
        logger.addHandler(handler)
    session = Session()
    args = list(argv) if argv is not None else None
    try:
        with json_only_stdout("--json" in (sys.argv[1:] if args is None else args)):
            rv = cli.main(args=args, standalone_mode=False, obj=session)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("ferry: aborted", err=True)
        return 130
    except BadValue as e:  # an option value that does not parse: one line, like FerryError
        _fail(e.line(), session)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except FerryError as e:
        _fail(str(e), session)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("ferry: interrupted", err=True)
        return 130
    except OSError as e:
        if e.errno in _PATH_ERRORS and e.filename:  # the user's path or the machine: not a bug
            _fail(_path_error(e), session)
            return EXIT_INPUT_ERROR
        _fail(_internal(e), session)
        return EXIT_INTERNAL_ERROR
    except MemoryError as e:  # too large for this machine: the input's size, not a bug
        _fail(
            f"out of memory ({one_line(e, 160) or 'MemoryError'}); give smaller inputs "
            "(--input-shape, --dim, --batch) or run on a machine with more memory",
            session,
        )
        return EXIT_INPUT_ERROR
    except Exception as e:
        _fail(_internal(e), session)
        return EXIT_INTERNAL_ERROR
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


_PATH_ERRORS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENOENT,
        errno.ELOOP,
    }
)
"""What a path the user gave (or the machine's disk) causes: a folder where a file goes, a
name too long, no permission, no space. ONNX Runtime and the libraries below raise these
from deep inside a verb as well as onnxferry's own writes do."""


def _path_error(e: OSError) -> str:
    return (
        f"cannot use {one_line(str(e.filename), 200)}: {e.strerror}; check the path (a file "
        "where a folder goes, a name too long), its permissions and the free space"
    )


def _internal(e: BaseException) -> str:
    return f"internal error: {type(e).__name__}: {e} (this is a bug; run with -v and report it)"


def _fail(message: str, session: Session) -> None:
    if session.verbose:
        traceback.print_exc(file=sys.stderr)
    click.echo(f"ferry: error: {message}", err=True)


def console_main() -> None:
    sys.exit(main())

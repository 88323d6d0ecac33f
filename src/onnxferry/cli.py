"""The `ferry` command: thin verbs over the Python API.

    ferry inspect model.onnx --json
    ferry compare a.onnx b.onnx --atol 1e-4
    ferry bench a.onnx b.onnx --batch 1,8 --duration 5

Exit codes: 0 ok, 1 verification failed, 2 usage or input error, 3 internal error.
Errors print one line on stderr; -v prints the traceback too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._version import __version__
from .convert.base import FRAMEWORKS
from .errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, FerryError, UsageError, one_line
from .report import Report, format_value

if TYPE_CHECKING:
    import numpy as np

    from .parity import Tolerance

F = TypeVar("F", bound=Callable[..., Any])

_state = {"verbose": False}


# --- option parsing ---------------------------------------------------------------------


def _int_list(value: str | None, option: str) -> list[int] | None:
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"{option} takes comma-separated integers, got {value!r}", hint=f"e.g. {option} 1,8"
        ) from None
    if not items:
        raise UsageError(f"{option} is empty", hint=f"e.g. {option} 1,8")
    return items


DIM_HELP = "Size of an open dim: NAME=SIZE, or INPUT:AXIS=SIZE for one without a name."
SHAPE_HELP = "An input's whole shape, NAME=1x3x224x224."


def _dims(values: Sequence[str]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for item in values:
        name, sep, size = item.partition("=")
        if not sep or not name or not size.strip().isdigit():
            raise UsageError(f"--dim takes NAME=SIZE, got {item!r}", hint="e.g. --dim batch=8")
        dims[name.strip()] = int(size)
    return dims


def _tolerance(atol: float, rtol: float) -> Tolerance:
    from .parity import Tolerance

    return Tolerance(atol=atol, rtol=rtol)  # UsageError for negative or non-finite values


# --- output -----------------------------------------------------------------------------


def report_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")(fn)
    return click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also save the JSON report to this file (written atomically).",
    )(fn)


def emit(report: Report[Any], as_json: bool, report_path: Path | None) -> int:
    """Print a report (rich tables or JSON), save it if asked, and return its exit code."""
    if as_json:
        click.echo(report.to_json())
    else:
        _print_tables(report)
    if report_path is not None:
        report.save(report_path)
        if not as_json:
            click.echo(f"report: {report_path}", err=True)
    return report.exit_code


def _print_tables(report: Report[Any]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    terminal = Console()
    # A pipe or a log file gets full-width rows instead of folded cells.
    console = terminal if terminal.is_terminal else Console(width=240)
    for table in report.tables():
        rich_table = RichTable(title=table.title, title_justify="left")
        for column in table.columns:
            # Numbers never wrap; free text (a finding's detail) folds.
            rich_table.add_column(column, overflow="fold", no_wrap=column != "detail")
        for row in table.rows:
            rich_table.add_row(*(format_value(v) for v in row))
        console.print(rich_table)
    for note in report.notes:
        console.print(f"note: {note}")
    verdict = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(f"{report.verb}: {verdict}")


# --- the verbs --------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferry")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks on error.")
def cli(verbose: bool) -> None:
    """Carry a trained model to a fast, verified ONNX deployment."""
    _state["verbose"] = verbose
    logging.getLogger("onnxferry").setLevel(logging.DEBUG if verbose else logging.WARNING)


@cli.command()
@click.argument("model")
@report_options
def inspect(model: str, as_json: bool, report_path: Path | None) -> int:
    """Show a model's signature, opsets, operators, parameters, size and metadata."""
    from .inspection import inspect as inspect_model

    return emit(inspect_model(model), as_json, report_path)


@cli.command()
@click.argument("model")
@click.option("--provider", "providers", help="Providers to try loading on (default: all).")
@report_options
def check(model: str, providers: str | None, as_json: bool, report_path: Path | None) -> int:
    """Check that a model can be deployed; exit 1 when anything blocks it."""
    from .check import check as check_model

    names = [p.strip() for p in providers.split(",")] if providers else None
    return emit(check_model(model, providers=names), as_json, report_path)


@cli.command()
@click.argument("model_a")
@click.argument("model_b", required=False)
@click.option("--provider", default="cpu", show_default=True, help="Provider for A.")
@click.option("--provider-b", help="Provider for B (default: --provider).")
@click.option("--inputs", help="Feeds: .npz, .npy, .pb or a test-data directory.")
@click.option("--samples", default=3, show_default=True, help="Generated input sets.")
@click.option("--dim", "dims", multiple=True, help=DIM_HELP)
@click.option("--seed", default=0, show_default=True)
@click.option("--atol", default=1e-4, show_default=True)
@click.option("--rtol", default=1e-3, show_default=True)
@click.option("--threads", type=int, help="Intra-op threads.")
@click.option("--no-bisect", is_flag=True, help="Skip the search for the first divergence.")
@click.option("--framework", type=click.Choice(FRAMEWORKS), help="B's framework.")
@click.option("--input-shape", "input_shapes", multiple=True, help=SHAPE_HELP)
@click.option("--trust-pickle", is_flag=True, help="Allow B to be a pickle (runs its code).")
@report_options
def compare(
    model_a: str,
    model_b: str | None,
    provider: str,
    provider_b: str | None,
    inputs: str | None,
    samples: int,
    dims: tuple[str, ...],
    seed: int,
    atol: float,
    rtol: float,
    threads: int | None,
    no_bisect: bool,
    framework: str | None,
    input_shapes: tuple[str, ...],
    trust_pickle: bool,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Compare two models, one model on two providers (--provider-b), or an ONNX model A with
    the framework model B it came from (file.py:function, .pt, .keras, .tflite, .pkl, ...)."""
    from .compare import compare as compare_models
    from .convert import compare_to_source, detect_framework
    from .data import load_feeds
    from .model import Model

    reference = Model.load(model_a)
    feeds = load_feeds(inputs, reference.signature) if inputs else None
    if model_b is not None and (framework or detect_framework(model_b)) != "onnx":
        source_report = compare_to_source(
            reference,
            model_b,
            framework=framework,
            inputs=feeds,
            input_shapes=_shapes(input_shapes),
            provider=provider,
            tolerance=_tolerance(atol, rtol),
            trust_pickle=trust_pickle,
        )
        return emit(source_report, as_json, report_path)
    report = compare_models(
        reference,
        model_b,
        provider=provider,
        provider_b=provider_b,
        threads=threads,
        inputs=feeds,
        samples=samples,
        dims=_dims(dims),
        input_shapes=_shapes(input_shapes),
        seed=seed,
        tolerance=_tolerance(atol, rtol),
        bisect_on_failure=not no_bisect,
    )
    return emit(report, as_json, report_path)


@cli.command(name="test")
@click.argument("model")
@click.argument("data", required=False)
@click.option("--provider", default="cpu", show_default=True)
@click.option("--threads", type=int, help="Intra-op threads.")
@click.option("--atol", default=1e-4, show_default=True)
@click.option("--rtol", default=1e-3, show_default=True)
@report_options
def test_command(
    model: str,
    data: str | None,
    provider: str,
    threads: int | None,
    atol: float,
    rtol: float,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Run a model on golden data (test_data_set_N/*.pb or .npz) and judge each set."""
    from .golden import test
    from .model import Model

    loaded = Model.load(model)
    golden = data if data is not None else (loaded.path or Path(model)).parent
    tolerance = _tolerance(atol, rtol)
    report = test(loaded, golden, provider=provider, threads=threads, tolerance=tolerance)
    return emit(report, as_json, report_path)


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--url", help="Load-test a V2 server instead: http://HOST:PORT (with --model).")
@click.option("--model", "served_model", help="With --url: the served model's name.")
@click.option("--binary/--json-data", default=True, help="With --url: binary tensors or JSON.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8,32.")
@click.option("--threads", help="Intra-op thread counts, e.g. 1,2 (default: ORT's).")
@click.option("--provider", default="cpu", show_default=True, help="Providers, e.g. cpu,cuda.")
@click.option("--warmup", default=10, show_default=True, help="Untimed runs first.")
@click.option("--iterations", type=int, help="Timed runs per configuration.")
@click.option("--duration", type=float, help="Seconds per configuration instead.")
@click.option("--concurrency", default="1", show_default=True, help="Parallel requests, e.g. 1,8.")
@click.option("--dim", "dims", multiple=True, help=DIM_HELP)
@click.option("--input-shape", "input_shapes", multiple=True, help=SHAPE_HELP)
@click.option("--inputs", help="Time these feeds (.npz, .npy, .pb) instead of generated ones.")
@click.option("--seed", default=0, show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print the results as CSV.")
@report_options
def bench(
    models: tuple[str, ...],
    url: str | None,
    served_model: str | None,
    binary: bool,
    batch: str,
    threads: str | None,
    provider: str,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: str,
    dims: tuple[str, ...],
    input_shapes: tuple[str, ...],
    inputs: str | None,
    seed: int,
    as_csv: bool,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Measure latency, throughput and memory of one or more models side by side, or (--url)
    load-test a running V2 server like perf_analyzer."""
    from .bench import bench as bench_models

    if as_csv and as_json:
        raise UsageError("--csv and --json exclude each other", hint="pick one")
    levels = _int_list(concurrency, "--concurrency") or [1]
    if url is not None:
        return _bench_url(url, served_model, models, levels, binary, duration, seed,
                          as_json, report_path)  # fmt: skip
    if not models:
        raise UsageError("give one or more models", hint="ferry bench model.onnx, or --url")
    if len(levels) > 1:
        raise UsageError(
            "several --concurrency levels need --url", hint="bench one level at a time"
        )
    report = bench_models(
        list(models),
        batches=_int_list(batch, "--batch") or [1],
        threads=_int_list(threads, "--threads") or [None],
        providers=[p.strip() for p in provider.split(",") if p.strip()],
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        concurrency=levels[0],
        dims=_dims(dims),
        input_shapes=_shapes(input_shapes),
        inputs=_one_feed_set(inputs),
        seed=seed,
        progress=sys.stderr.isatty(),
    )
    if as_csv:
        click.echo(report.result.to_csv(), nl=False)
        if report_path is not None:
            report.save(report_path)
        return report.exit_code
    return emit(report, as_json, report_path)


def _one_feed_set(path: str | None) -> dict[str, np.ndarray] | None:
    """The first feed set in ``path`` (None without one)."""
    from .data import load_feeds

    if path is None:
        return None
    return load_feeds(path)[0]


def _require_extra(extra: str, *modules: str) -> None:
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise UsageError(
                f"this verb needs {module.split('.')[0]}, which is not installed",
                hint=f"pip install 'onnxferry[{extra}]'",
            )


def _bench_url(
    url: str,
    model: str | None,
    models: tuple[str, ...],
    levels: list[int],
    binary: bool,
    duration: float | None,
    seed: int,
    as_json: bool,
    report_path: Path | None,
) -> int:
    _require_extra("serve", "tritonclient.http.aio")
    from .serve.loadgen import run_load_test

    if models:
        raise UsageError("--url measures a server: give --model NAME, not model files")
    if not model:
        raise UsageError("--url needs --model NAME", hint="the name the server serves it under")
    result = run_load_test(
        url, model, concurrency=levels, binary=binary, duration_s=duration or 5.0, seed=seed
    )
    return emit(Report("bench", result), as_json, report_path)


@cli.command()
@click.argument("path")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to listen on all.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="FERRY_API_KEY",
    help="Bearer key for every route but health and /openapi.json, 16+ characters "
    "(env FERRY_API_KEY).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="API keys, one a line (# comments); not readable by every user.",
)
@click.option("--api-key-env", metavar="NAME", help="API keys from this environment variable.")
@click.option(
    "--repository-key",
    "repository_keys",
    multiple=True,
    envvar="FERRY_REPOSITORY_KEY",
    help="Bearer key for the repository API (env FERRY_REPOSITORY_KEY).",
)
@click.option(
    "--repository-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Repository API keys, one a line.",
)
@click.option("--repository-key-env", metavar="NAME", help="Repository API keys from NAME.")
@click.option("--repository-api", is_flag=True, help="Enable /v2/repository (load/unload).")
@click.option("--poll", type=float, help="Scan the repository for new versions every S seconds.")
@click.option("--max-batch-size", type=int, help="Dynamic batching rows (0: off; default 8).")
@click.option("--max-queue-delay-ms", type=float, help="Wait at most this for a batch to fill.")
@click.option("--max-queue-size", type=int, help="Waiting requests before 503.")
@click.option("--instances", type=int, help="Sessions per model (default: from the cores).")
@click.option("--threads", type=int, help="Intra-op threads per session.")
@click.option("--timeout-ms", type=float, help="Default per-request deadline (504 past it).")
@click.option(
    "--inline-max-ms",
    type=float,
    help="Run batches expected to take at most this on the event loop (0: never; default 1).",
)
@click.option(
    "--allow-signature-change",
    is_flag=True,
    default=None,
    help="Let a new version whose inputs differ take over (default: refused; ferry.toml wins).",
)
@click.option("--max-body", default=64.0, show_default=True, help="Request body limit, MiB.")
@click.option(
    "--max-response", type=float, help="Response size limit, MiB (default: 64 or --max-body)."
)
@click.option(
    "--max-inflight",
    type=float,
    help="Request bodies held at once, MiB; 503 past it (default: 256 or 4x --max-body).",
)
@click.option(
    "--max-parse-memory",
    type=float,
    help="MiB to parse one large JSON body; 413 past it (default: 256 or 16x --max-body).",
)
@click.option("--body-timeout", default=30.0, show_default=True, help="Seconds for a body.")
@click.option("--header-timeout", default=10.0, show_default=True, help="Seconds for headers.")
@click.option(
    "--max-header-bytes",
    default=64 * 1024,
    show_default=True,
    help="Request line and headers, bytes (431 past it).",
)
@click.option(
    "--max-headers", default=100, show_default=True, help="Headers per request (431 past it)."
)
@click.option(
    "--keep-alive", default=5.0, show_default=True, help="Seconds an idle connection is kept."
)
@click.option(
    "--write-timeout",
    default=30.0,
    show_default=True,
    help="Seconds a client may leave a response unread before it is dropped.",
)
@click.option(
    "--max-connections", default=1000, show_default=True, help="Open connections (503 past)."
)
@click.option(
    "--max-connections-per-client",
    default=100,
    show_default=True,
    help="Open connections from one address (503 past).",
)
@click.option(
    "--graceful-timeout",
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get after SIGTERM.",
)
@click.option("--access-log", is_flag=True, help="One JSON line per request (stderr).")
def serve(
    path: str,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    api_key_file: Path | None,
    api_key_env: str | None,
    repository_keys: tuple[str, ...],
    repository_key_file: Path | None,
    repository_key_env: str | None,
    repository_api: bool,
    poll: float | None,
    max_batch_size: int | None,
    max_queue_delay_ms: float | None,
    max_queue_size: int | None,
    instances: int | None,
    threads: int | None,
    timeout_ms: float | None,
    inline_max_ms: float | None,
    allow_signature_change: bool | None,
    max_body: float,
    max_response: float | None,
    max_inflight: float | None,
    max_parse_memory: float | None,
    body_timeout: float,
    header_timeout: float,
    max_header_bytes: int,
    max_headers: int,
    keep_alive: float,
    write_timeout: float,
    max_connections: int,
    max_connections_per_client: int,
    graceful_timeout: float,
    access_log: bool,
) -> int:
    """Serve a model (model.onnx) or a repository (REPO/<name>/<version>/model.onnx) over
    KServe V2 / Open Inference Protocol REST, with dynamic batching."""
    with _sigterm_ends_startup():
        _require_extra("serve", "uvicorn", "httptools", "prometheus_client")
        from .serve.app import ServeSettings
        from .serve.config import ModelConfig
        from .serve.server import ServerOptions
        from .serve.server import serve as run_server

        positive = {
            "--max-body": max_body,
            "--body-timeout": body_timeout,
            "--header-timeout": header_timeout,
            "--max-header-bytes": max_header_bytes,
            "--max-headers": max_headers,
            "--keep-alive": keep_alive,
            "--write-timeout": write_timeout,
            "--max-connections": max_connections,
            "--max-connections-per-client": max_connections_per_client,
            "--max-response": 1.0 if max_response is None else max_response,
            "--max-inflight": 1.0 if max_inflight is None else max_inflight,
            "--max-parse-memory": 1.0 if max_parse_memory is None else max_parse_memory,
        }
        for name, value in positive.items():
            if not value > 0:
                raise UsageError(f"{name} must be positive, got {value:g}")
        api_keys = _serve_keys("--api-key", api_keys, api_key_file, api_key_env)
        repository_keys = _serve_keys(
            "--repository-key", repository_keys, repository_key_file, repository_key_env
        )
        given: dict[str, Any] = {
            "max_batch_size": max_batch_size,
            "max_queue_delay_ms": max_queue_delay_ms,
            "max_queue_size": max_queue_size,
            "instances": instances,
            "intra_op_threads": threads,
            "inline_max_ms": inline_max_ms,
            "allow_signature_change": allow_signature_change,
        }
        config = ModelConfig(**{k: v for k, v in given.items() if v is not None})
        settings = ServeSettings(
            api_keys=tuple(api_keys),
            repository_keys=tuple(repository_keys),
            repository_api=repository_api,
            body_limit=int(max_body * 2**20),
            response_limit=None if max_response is None else int(max_response * 2**20),
            inflight_limit=None if max_inflight is None else int(max_inflight * 2**20),
            parse_memory=None if max_parse_memory is None else int(max_parse_memory * 2**20),
            body_timeout_s=body_timeout,
            default_timeout_ms=timeout_ms,
            server_version=__version__,
        )
        options = ServerOptions(
            host=host,
            port=port,
            header_timeout_s=header_timeout,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            keep_alive_s=keep_alive,
            write_timeout_s=write_timeout,
            max_connections=max_connections,
            max_connections_per_client=max_connections_per_client,
            graceful_timeout_s=graceful_timeout,
            poll_interval_s=poll,
        )
        if access_log:
            logging.getLogger("onnxferry.serve.access").setLevel(logging.INFO)
        return run_server(path, options, settings, config)
    return 0  # stopped while starting


_KEY_ENVVARS = {"--api-key": "FERRY_API_KEY", "--repository-key": "FERRY_REPOSITORY_KEY"}


def _serve_keys(
    option: str, values: tuple[str, ...], file: Path | None, env: str | None
) -> tuple[str, ...]:
    """The keys ``option`` gave, then those in ``file`` and in the variable ``env``; a bad
    one is one line naming where it came from."""
    import os

    from .serve.server import check_keys, env_keys, read_keys

    envvar = _KEY_ENVVARS[option]
    if not values and envvar in os.environ and not os.environ[envvar].strip():
        # click reads an empty variable as no key at all: the server would run without auth
        raise UsageError(
            f"{envvar} is set but empty", hint="set it to a key, or unset it to serve without one"
        )
    keys = check_keys(values, option)
    if file is not None:
        keys += read_keys(file)
    if env is not None:
        keys += env_keys(env)
    return tuple(dict.fromkeys(keys))


class _StartupStopped(BaseException):
    """SIGTERM arrived while `ferry serve` was starting."""


def _stop_startup(signum: int, frame: Any) -> None:
    raise _StartupStopped


@contextlib.contextmanager
def _sigterm_ends_startup() -> Iterator[None]:
    """Until the server takes over SIGTERM, SIGTERM ends the start-up (imports, loading the
    models) with a message instead of killing the process; the caller then exits 0."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # in-process callers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_startup)
    try:
        yield
    except _StartupStopped:
        click.echo("ferry serve: stopped by SIGTERM before it started serving", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in values:
        name, sep, text = item.partition("=")
        try:
            dims = tuple(int(d) for d in text.lower().split("x"))
        except ValueError:
            dims = ()
        if not sep or not name or not dims or min(dims) < 1:
            raise UsageError(
                f"--input-shape takes NAME=DxDx..., got {item!r}",
                hint="e.g. --input-shape image=1x3x224x224",
            )
        shapes[name.strip()] = dims
    return shapes


def _dynamic(values: Sequence[str]) -> dict[str, dict[int, str]] | None:
    if not values:
        return None
    axes: dict[str, dict[int, str]] = {}
    for item in values:
        name, sep, spec = item.partition(":")
        if item.strip() in ("none", "static"):
            continue
        try:
            pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
            parsed = {int(axis): dim.strip() for axis, dim in pairs}
        except ValueError:
            parsed = {}
        if not sep or not name or not parsed or not all(parsed.values()):
            raise UsageError(
                f"--dynamic takes NAME:AXIS=DIM[,AXIS=DIM], got {item!r}",
                hint="e.g. --dynamic input_ids:0=batch,1=seq (or --dynamic static)",
            )
        axes[name.strip()] = parsed
    return axes


@cli.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--framework", type=click.Choice(FRAMEWORKS))
@click.option("--input-shape", "input_shapes", multiple=True, help="NAME=1x3x224x224.")
@click.option("--inputs", help="Sample inputs: .npz, .npy, .pb or a test-data directory.")
@click.option("--dynamic", multiple=True, help="NAME:0=batch,1=seq (default: dim 0 is batch).")
@click.option("--opset", type=int, help="ai.onnx opset (default: the exporter's, capped).")
@click.option("--atol", type=float, help="Absolute tolerance (default: per framework).")
@click.option("--rtol", type=float, help="Relative tolerance (default: per framework).")
@click.option("--no-verify", is_flag=True, help="Skip the parity check (loudly reported).")
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow loading a pickle/joblib file. Unpickling runs arbitrary code: only for "
    "files from a source you trust.",
)
@report_options
def convert(
    source: str,
    output: Path,
    framework: str | None,
    input_shapes: tuple[str, ...],
    inputs: str | None,
    dynamic: tuple[str, ...],
    opset: int | None,
    atol: float | None,
    rtol: float | None,
    no_verify: bool,
    trust_pickle: bool,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Convert a PyTorch, Keras/TF, TFLite, scikit-learn or ONNX model to a verified ONNX file.

    SOURCE is a file.py:function factory, .pt/.pth (TorchScript), .pt2 (torch.export), .keras,
    a SavedModel directory, .tflite, .pkl/.joblib (scikit-learn; needs --trust-pickle, since
    loading a pickle executes code) or .onnx (re-targeted to --opset).
    """
    from .convert import ParityFailure
    from .convert import convert as convert_model
    from .data import load_feeds
    from .parity import Tolerance

    tolerance = None
    if atol is not None or rtol is not None:
        default = Tolerance()
        tolerance = Tolerance(
            atol=default.atol if atol is None else atol,
            rtol=default.rtol if rtol is None else rtol,
        )
    try:
        model = convert_model(
            source,
            output,
            framework=framework,
            input_shapes=_shapes(input_shapes),
            inputs=load_feeds(inputs) if inputs else None,
            dynamic=_dynamic(dynamic),
            opset=opset,
            tolerance=tolerance,
            verify=not no_verify,
            trust_pickle=trust_pickle,
        )
    except ParityFailure as e:
        emit(e.report, as_json, report_path)
        raise
    report = model.provenance[-1]
    code = emit(report, as_json, report_path)
    if not as_json:
        click.echo(f"wrote {output}", err=True)
    return code


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", type=click.Path(dir_okay=False), help="A recipe (TOML) to apply.")
@click.option("--auto", is_flag=True, help="Search candidate recipes for the fastest in budget.")
@click.option(
    "--max-drop",
    type=float,
    default=0.01,
    show_default=True,
    help="Budget: cosine >= 1 - drop, or the task metric's drop with --eval.",
)
@click.option("--budget", help="Explicit budget, e.g. cosine>=0.999, top1>=0.99, max_abs<=1e-3.")
@click.option("--inputs", help="Validation feeds: .npz, .npy, .pb or a test-data directory.")
@click.option("--eval", "eval_data", help="Labelled data (.npz: the inputs plus labels).")
@click.option("--calibration", help="Calibration samples for static int8 (.npz or a directory).")
@click.option("--input-shape", "input_shapes", multiple=True, help=SHAPE_HELP)
@click.option("--dim", "dims", multiple=True, help=DIM_HELP)
@click.option(
    "--assume-sizes", is_flag=True, help="Judge at chosen sizes for open dims nobody gave."
)
@click.option("--for-size", is_flag=True, help="Keep passes that shrink but do not speed up.")
@click.option("--provider", default="cpu", show_default=True)
@click.option("--threads", type=int, help="Intra-op threads for measuring.")
@click.option("--time-budget", type=float, help="With --auto: seconds to start candidates in.")
@report_options
def optimize(
    model: str,
    output: Path,
    recipe: str | None,
    auto: bool,
    max_drop: float,
    budget: str | None,
    inputs: str | None,
    eval_data: str | None,
    calibration: str | None,
    input_shapes: tuple[str, ...],
    dims: tuple[str, ...],
    assume_sizes: bool,
    for_size: bool,
    provider: str,
    threads: int | None,
    time_budget: float | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Make a model faster within an accuracy budget: a recipe, or --auto search.

    Writes OUTPUT and OUTPUT's recipe (<stem>.recipe.toml) to replay with --recipe.
    """
    from .data import load_feeds
    from .model import Model
    from .optimize import optimize as optimize_model

    loaded = Model.load(model)
    optimized = optimize_model(
        loaded,
        output,
        recipe=recipe,
        auto=auto,
        budget=budget,
        max_drop=max_drop,
        inputs=load_feeds(inputs, loaded.signature) if inputs else None,
        eval_data=eval_data,
        calibration=calibration,
        input_shapes=_shapes(input_shapes),
        dims=_dims(dims),
        assume_sizes=assume_sizes,
        for_size=for_size,
        provider=provider,
        threads=threads,
        time_budget=time_budget,
    )
    code = emit(optimized.provenance[-1], as_json, report_path)
    if not as_json:
        click.echo(f"wrote {output}", err=True)
    return code


@cli.command()
@click.argument("source")
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--framework", type=click.Choice(FRAMEWORKS))
@click.option("--input-shape", "input_shapes", multiple=True, help="NAME=1x3x224x224.")
@click.option("--inputs", help="Sample inputs (.npz, ...), for conversion and validation.")
@click.option("--dynamic", multiple=True, help="NAME:0=batch,1=seq.")
@click.option("--max-drop", type=float, default=0.01, show_default=True)
@click.option("--budget", help="Explicit budget, e.g. cosine>=0.999.")
@click.option("--eval", "eval_data", help="Labelled data (.npz: the inputs plus labels).")
@click.option("--trust-pickle", is_flag=True, help="Allow a pickle source (runs its code).")
@click.option("--batch", default="1,8", show_default=True, help="Batch sizes to bench.")
@report_options
def deploy(
    source: str,
    outdir: Path,
    framework: str | None,
    input_shapes: tuple[str, ...],
    inputs: str | None,
    dynamic: tuple[str, ...],
    max_drop: float,
    budget: str | None,
    eval_data: str | None,
    trust_pickle: bool,
    batch: str,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Convert (verified) -> optimize --auto -> bench, into OUTDIR with JSON and HTML reports."""
    from .data import load_feeds
    from .deploy import deploy as deploy_model

    report = deploy_model(
        source,
        outdir,
        framework=framework,
        input_shapes=_shapes(input_shapes),
        inputs=load_feeds(inputs) if inputs else None,
        dynamic=_dynamic(dynamic),
        max_drop=max_drop,
        budget=budget,
        eval_data=eval_data,
        trust_pickle=trust_pickle,
        batches=_int_list(batch, "--batch") or [1],
    )
    code = emit(report, as_json, report_path)
    if not as_json:
        click.echo(f"report: {outdir / 'report.html'}", err=True)
    return code


@cli.command()
def passes() -> int:
    """List the optimization passes and their parameters (for recipes)."""
    from .optimize import available_passes
    from .report import Report, Table

    rows = [
        (name, cls.family, p, kind, repr(default), doc)
        for name, cls in available_passes().items()
        for p, kind, default, doc in (cls.describe() or [("-", "-", None, "")])
    ]
    table = Table("passes", ("pass", "family", "parameter", "type", "default", "detail"), rows)
    return emit(Report("passes", _Listing([table])), False, None)


class _Listing:
    """A report body that is just tables (for listings)."""

    def __init__(self, tables: list[Any]) -> None:
        self._tables = tables

    ok = True

    def to_dict(self) -> dict[str, Any]:
        return {"tables": [t.rows for t in self._tables]}

    def tables(self) -> list[Any]:
        return self._tables


# --- entry point ------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ferry: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (known errors become one line on stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("onnxferry")
    logger.addHandler(handler)
    _state["verbose"] = False
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("ferry: aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except FerryError as e:
        _fail(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("ferry: interrupted", err=True)
        return 130
    except MemoryError as e:  # too large for this machine: the input's size, not a bug
        _fail(
            f"out of memory ({one_line(e, 160) or 'MemoryError'}); give smaller inputs "
            "(--input-shape, --dim, --batch) or run on a machine with more memory"
        )
        return EXIT_INPUT_ERROR
    except Exception as e:
        _fail(f"internal error: {type(e).__name__}: {e} (this is a bug; run with -v and report it)")
        return EXIT_INTERNAL_ERROR
    finally:
        logger.removeHandler(handler)


def _fail(message: str) -> None:
    if _state["verbose"]:
        traceback.print_exc(file=sys.stderr)
    click.echo(f"ferry: error: {message}", err=True)


def console_main() -> None:
    sys.exit(main())

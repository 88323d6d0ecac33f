"""`ferry serve`: a model or a repository over KServe V2 REST (and gRPC), with dynamic batching.

The flags map one to one onto ``ServeSettings`` (the app), ``ServerOptions`` (the HTTP
server) and ``ModelConfig`` (per model, under ``ferry.toml``); SIGTERM while starting ends
the start-up with a message and exit 0. ``--sagemaker`` adds SageMaker's /ping and
/invocations, and the container's defaults (``sagemaker_defaults``); ``--grpc-port`` the
KServe V2 gRPC service beside REST (serve/grpc_server.py); ``--shared-memory system`` Triton's
system shared memory extension for clients on the same host (serve/shm.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from .._version import __version__
from ..errors import UsageError
from .options import (
    custom_ops_options,
    devices_option,
    encrypt_key_option,
    precision_options,
    provider_option,
    public_key_option,
)
from .types import PORT

if TYPE_CHECKING:
    from ..serve.registry_source import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])


def _require_extra(extra: str, *modules: str) -> None:
    """UsageError naming the missing package and the extra that installs it."""
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


def api_key_options(fn: F) -> F:
    """``--api-key`` (env FERRY_API_KEY), ``--api-key-file``, ``--api-key-env``: the server's
    bearer keys, arriving as ``api_keys``, ``api_key_file``, ``api_key_env`` (resolve them
    with ``serve_keys("--api-key", ...)``). `ferry serve` and `ferry registry serve` take them."""
    options = (
        click.option(
            "--api-key",
            "api_keys",
            multiple=True,
            envvar="FERRY_API_KEY",
            help="Bearer key for every route but health and /openapi.json, 16+ characters "
            "(env FERRY_API_KEY).",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="API keys, one a line (# comments); not readable by every user.",
        ),
        click.option(
            "--api-key-env", metavar="NAME", help="API keys from this environment variable."
        ),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command()
@click.argument("path", required=False)
@click.option(
    "--host", help="Address to listen on (default 127.0.0.1; 0.0.0.0 with --sagemaker: all)."
)
@click.option("--port", type=PORT, help="Port (default 8000; 8080 with --sagemaker).")
@click.option(
    "--grpc-port",
    type=PORT,
    help="Also serve KServe V2 gRPC on this port (0: a free one, printed; default: off).",
)
@click.option(
    "--grpc-max-message-bytes",
    type=int,
    help="Largest gRPC request message, bytes (default: --max-body).",
)
@click.option(
    "--sagemaker",
    is_flag=True,
    help="Also answer SageMaker: GET /ping, POST /invocations; PATH defaults to $SM_MODEL_DIR "
    "(else /opt/ml/model).",
)
@api_key_options
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
@click.option(
    "--shared-memory",
    type=click.Choice(["off", "system"]),
    default="off",
    show_default=True,
    help="Triton's system shared memory for clients on this host (/v2/systemsharedmemory); "
    "off by default: a registering client makes the server map a /dev/shm file it names.",
)
@click.option(
    "--require-signature",
    is_flag=True,
    help="Serve only versions whose model.onnx.sig verifies with --public-key (at every load).",
)
@public_key_option("for --require-signature")
@click.option(
    "--poll",
    type=float,
    help="Scan the repository for new versions every S seconds (registry:PATH: default 5).",
)
@click.option("--alias", help="registry:PATH: the alias each model serves (default production).")
@click.option(
    "--rollback-after-requests",
    type=int,
    help="registry:PATH: judge a new version on its first N answers (default 100)...",
)
@click.option(
    "--rollback-window-s",
    type=float,
    help="...or its first S seconds, whichever ends first (default 60)...",
)
@click.option(
    "--rollback-error-rate",
    type=float,
    help="...and go back to the previous version past this share of errors: 500/504, NaN/Inf "
    "outputs (default 0.05; 1: never).",
)
@encrypt_key_option("of encrypted versions (registry:PATH)")
@click.option("--max-batch-size", type=int, help="Dynamic batching rows (0: off; default 8).")
@click.option("--max-queue-delay-ms", type=float, help="Wait at most this for a batch to fill.")
@click.option("--max-queue-size", type=int, help="Waiting requests before 503.")
@click.option("--instances", type=int, help="Sessions per model (default: from the cores).")
@click.option("--threads", type=int, help="Intra-op threads per session.")
@provider_option
@devices_option
@precision_options
@click.option("--timeout-ms", type=float, help="Default per-request deadline (504 past it).")
@click.option(
    "--explain-max-evals",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Model rows one /explain request may evaluate (its max_evals is capped at this).",
)
@click.option(
    "--explain-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds one /explain request may take (its deadline is capped at this).",
)
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
@click.option(
    "--busy-poll-us",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Keep polling, not sleeping, this long after the last response: lower latency for "
    "back-to-back requests at up to a core's time (0: off).",
)
@click.option("--access-log", is_flag=True, help="One JSON line per request (stderr).")
@custom_ops_options
def serve(
    path: str | None,
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    grpc_max_message_bytes: int | None,
    sagemaker: bool,
    api_keys: tuple[str, ...],
    api_key_file: Path | None,
    api_key_env: str | None,
    repository_keys: tuple[str, ...],
    repository_key_file: Path | None,
    repository_key_env: str | None,
    repository_api: bool,
    shared_memory: Literal["off", "system"],
    require_signature: bool,
    public_key: Path | None,
    poll: float | None,
    alias: str | None,
    rollback_after_requests: int | None,
    rollback_window_s: float | None,
    rollback_error_rate: float | None,
    encrypt_key_file: Path | None,
    max_batch_size: int | None,
    max_queue_delay_ms: float | None,
    max_queue_size: int | None,
    instances: int | None,
    threads: int | None,
    provider: str,
    devices: str | None,
    precision: str,
    engine_cache: Path | None,
    calibration_table: Path | None,
    timeout_ms: float | None,
    explain_max_evals: int,
    explain_timeout: float,
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
    busy_poll_us: float,
    access_log: bool,
) -> int:
    """Serve a model (model.onnx), a repository (REPO/<name>/<version>/model.onnx) or a
    registry's aliased versions (registry:PATH) over KServe V2 / Open Inference Protocol
    REST (and gRPC with --grpc-port), with dynamic batching."""
    with _sigterm_ends_startup() as stopped:
        _require_extra("serve", "uvicorn", "httptools", "prometheus_client")
        if grpc_port is not None:
            _require_extra("serve", "grpc", "tritonclient")
        path, host, port = sagemaker_defaults(path, host, port, sagemaker=sagemaker)
        from ..serve.config import ModelConfig
        from ..serve.server import ServerOptions
        from ..serve.server import serve as run_server
        from ..serve.settings import ServeSettings

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
            "--grpc-max-message-bytes": (
                1 if grpc_max_message_bytes is None else grpc_max_message_bytes
            ),
            "--timeout-ms": 1.0 if timeout_ms is None else timeout_ms,
            "--explain-timeout": explain_timeout,
            "--graceful-timeout": graceful_timeout,
            "--poll": 1.0 if poll is None else poll,
        }
        for name, value in positive.items():
            if not value > 0:
                raise UsageError(f"{name} must be positive, got {value:g}")
            if not math.isfinite(value):
                raise UsageError(f"{name} must be a finite number, got {value:g}")
        if require_signature and public_key is None:
            raise UsageError(
                "--require-signature needs --public-key PUB",
                hint="the ECDSA public key (PEM) that verifies the models' signatures",
            )
        if public_key is not None and not require_signature:
            raise UsageError(
                "--public-key is only used with --require-signature",
                hint="add --require-signature to serve signed models only",
            )
        api_keys = serve_keys("--api-key", api_keys, api_key_file, api_key_env)
        repository_keys = serve_keys(
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
            "provider": provider,
            "precision": precision,
            "engine_cache": None if engine_cache is None else str(engine_cache),
            "calibration_table": None if calibration_table is None else str(calibration_table),
            "devices": None if devices is None else tuple(devices.split(",")),
        }
        config = ModelConfig(**{k: v for k, v in given.items() if v is not None})
        if config.devices:
            from ..devices import check_pool

            check_pool(config.device_pool)
        settings = ServeSettings(
            api_keys=tuple(api_keys),
            repository_keys=tuple(repository_keys),
            repository_api=repository_api,
            shared_memory=shared_memory,
            sagemaker=sagemaker,
            require_signature=public_key,
            body_limit=int(max_body * 2**20),
            response_limit=None if max_response is None else int(max_response * 2**20),
            inflight_limit=None if max_inflight is None else int(max_inflight * 2**20),
            parse_memory=None if max_parse_memory is None else int(max_parse_memory * 2**20),
            body_timeout_s=body_timeout,
            default_timeout_ms=timeout_ms,
            explain_max_evals=explain_max_evals,
            explain_timeout_s=explain_timeout,
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
            grpc_port=grpc_port,
            grpc_max_message_bytes=grpc_max_message_bytes,
            busy_poll_us=busy_poll_us,
        )
        registry = _registry_options(
            path,
            alias,
            {
                "after_requests": rollback_after_requests,
                "window_s": rollback_window_s,
                "error_rate": rollback_error_rate,
            },
            encrypt_key_file,
        )
        if access_log:
            logging.getLogger("onnxferry.serve.access").setLevel(logging.INFO)
        return run_server(path, options, settings, config, registry, stopped=stopped)
    return 0  # stopped while starting


def sagemaker_defaults(
    path: str | None, host: str | None, port: int | None, *, sagemaker: bool
) -> tuple[str, str, int]:
    """PATH, --host and --port with their defaults: with ``sagemaker`` the container's
    (``$SM_MODEL_DIR`` or /opt/ml/model, 0.0.0.0, 8080), else 127.0.0.1 and 8000 (PATH needed).
    """
    import os

    if path is None:
        if not sagemaker:
            raise UsageError("ferry serve needs PATH", hint="a model, a repository or registry:DIR")
        path = os.environ.get("SM_MODEL_DIR") or "/opt/ml/model"
    if sagemaker:
        return path, host or "0.0.0.0", 8080 if port is None else port
    return path, host or "127.0.0.1", 8000 if port is None else port


def _registry_options(
    path: str, alias: str | None, rollback: dict[str, Any], key_file: Path | None
) -> RegistryOptions | None:
    """The options of ``registry:PATH``; UsageError when they are given for anything else."""
    from ..serve.server import REGISTRY

    given = {k: v for k, v in rollback.items() if v is not None}
    if not path.startswith(REGISTRY):
        if alias is not None or given or key_file is not None:
            raise UsageError(
                "--alias, --rollback-* and --encrypt-key-file apply to registry:PATH only",
                hint=f"serve registry:DIR to serve a model registry, not {path}",
            )
        return None
    from ..serve.registry_source import DEFAULT_ALIAS, RegistryOptions, RollbackPolicy

    return RegistryOptions(alias or DEFAULT_ALIAS, RollbackPolicy(**given), key_file)


_KEY_ENVVARS = {"--api-key": "FERRY_API_KEY", "--repository-key": "FERRY_REPOSITORY_KEY"}


def serve_keys(
    option: str, values: tuple[str, ...], file: Path | None, env: str | None
) -> tuple[str, ...]:
    """The keys ``option`` gave, then those in ``file`` and in the variable ``env``; a bad
    one is one line naming where it came from."""
    import os

    from ..serve.keys import check_keys, env_keys, read_keys

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


@contextlib.contextmanager
def _sigterm_ends_startup() -> Iterator[threading.Event | None]:
    """Until the server takes over SIGTERM, SIGTERM ends the start-up (imports, loading the
    models) with a message instead of killing the process; the caller then exits 0. The
    event it yields is set by that SIGTERM: the server stops as soon as it takes over."""
    import signal

    if threading.current_thread() is not threading.main_thread():  # in-process callers
        yield None
        return
    stopped = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopped.set()
        raise _StartupStopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield stopped
    except BaseException:
        # A C extension whose initialization the signal interrupted turns our exception into
        # its own ("ImportError: initialization failed"); one raised in a weakref callback is
        # dropped and the start-up goes on (then the server sees the event): the event, not
        # the exception, says why.
        if not stopped.is_set():
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped.is_set():
        click.echo("ferry serve: stopped by SIGTERM before it started serving", err=True)

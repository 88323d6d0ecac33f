"""`ferry follow` (a device follows a registry channel) and `ferry registry serve` (the
registry, read-only over HTTP, for the devices).

    ferry registry serve registry/ --port 8000 --api-key-file keys.txt
    ferry follow http://registry.local:8000 --model resnet --alias production --to /opt/model \\
        --public-key public_key.pem --api-key-file key.txt --interval 60
    ferry follow http://registry.local:8000 --model resnet --to /opt/model --once --json
    ferry follow --rollback --to /opt/model

The agent's work is ``registry.follow`` (layout of the folder, checks, rollback) with
``registry.client`` (requests, resuming downloads); the server's is ``serve.registry_http``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import FerryError, UsageError
from ..report import Report
from .options import encrypt_key_option, public_key_option, report_options
from .render import emit
from .serve import _require_extra, api_key_options, serve_keys
from .types import PORT


@click.command("follow")
@click.argument("url", required=False)
@click.option("--model", help="The model's name in the registry.")
@click.option("--alias", default="production", show_default=True, help="The channel to follow.")
@click.option(
    "--to",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The device's model folder: DEST/current links to the installed version.",
)
@public_key_option("the versions must be signed with (an unsigned one is refused)")
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    help="Seconds between polls (+-10%, so a fleet spreads out).",
)
@click.option("--once", is_flag=True, help="Poll once and exit (for cron): exit 1 if refused.")
@click.option("--rollback", is_flag=True, help="Swap back to the previous version and hold.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds without an answer.")
@click.option(
    "--api-key", envvar="FERRY_API_KEY", help="The server's bearer key (env FERRY_API_KEY)."
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key in a file (its first key); not readable by every user.",
)
@click.option("--api-key-env", metavar="NAME", help="The key from this environment variable.")
@encrypt_key_option("of encrypted versions, to check their signature")
@report_options
def follow_command(
    url: str | None,
    model: str | None,
    alias: str,
    dest: Path,
    public_key: Path | None,
    interval: float,
    once: bool,
    rollback: bool,
    timeout: float,
    api_key: str | None,
    api_key_file: Path | None,
    api_key_env: str | None,
    encrypt_key_file: Path | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Keep DEST on the version URL's registry names MODEL@ALIAS: download, check digests and
    signature, swap it in, keep the previous one for rollback."""
    from ..registry import follow

    if rollback:
        if once or url is not None:
            raise UsageError("--rollback takes only --to", hint="ferry follow --rollback --to DIR")
        return emit(Report("follow rollback", follow.rollback(dest)), as_json, report_path)
    if url is None or model is None:
        raise UsageError(
            "ferry follow needs the server's URL and --model",
            hint="ferry follow http://HOST:PORT --model NAME --to DIR",
        )
    for name, value in (("--interval", interval), ("--timeout", timeout)):
        if not value > 0:
            raise UsageError(f"{name} must be positive, got {value:g}")
    keys = serve_keys("--api-key", (api_key,) if api_key else (), api_key_file, api_key_env)
    key = None
    if encrypt_key_file is not None:
        from ..registry.crypto import load_key

        key = load_key(encrypt_key_file)
    api = keys[0] if keys else None
    if once:
        result = follow.follow_once(
            url, model, alias, dest, public_key=public_key, api_key=api, key=key, timeout=timeout
        )
        return emit(Report("follow", result), as_json, report_path)
    if as_json or report_path is not None:
        raise UsageError("--json and --report go with --once", hint="add --once")
    with _stop_on_sigterm() as stop:
        follow.follow(
            url, model, alias, dest, interval=interval, stop=stop, on_result=_say,
            public_key=public_key, api_key=api, key=key, timeout=timeout,
        )  # fmt: skip
    return 0


def _say(outcome: object) -> None:
    """One line per poll that changed something or failed (a refusal is logged already)."""
    if isinstance(outcome, FerryError):
        return  # logged by follow()
    from ..registry.follow import FollowResult

    if isinstance(outcome, FollowResult) and outcome.action == "installed":
        previous = f" (previous {outcome.previous})" if outcome.previous is not None else ""
        click.echo(
            f"ferry follow: installed {outcome.model}:{outcome.version} at {outcome.path}"
            f"{previous}",
            err=True,
        )


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event SIGTERM sets (in the main thread), so the loop ends between polls."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("serve")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to listen on all.")
@click.option("--port", default=8000, show_default=True, type=PORT)
@api_key_options
def registry_serve(
    path: Path,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    api_key_file: Path | None,
    api_key_env: str | None,
) -> int:
    """Serve the registry at PATH read-only over HTTP (versions, aliases, files with byte
    ranges), for `ferry follow` on devices."""
    _require_extra("serve", "uvicorn", "httptools")
    from ..serve.registry_http import serve_registry
    from ..serve.server import ServerOptions

    keys = serve_keys("--api-key", api_keys, api_key_file, api_key_env)
    return serve_registry(path, ServerOptions(host=host, port=port), keys)

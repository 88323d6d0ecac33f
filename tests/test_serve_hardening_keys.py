"""API keys: empty, short or unprintable keys are refused at start-up (Python API and CLI, one
line, exit 2), so an empty ``Authorization: Bearer`` can never pass; keys also come from a file
(``read_keys`` / ``--api-key-file``) or an environment variable (``env_keys`` /
``--api-key-env``), and the server then takes exactly those keys."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.cli import main
from onnxferry.errors import InputError
from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.keys import MIN_KEY_LENGTH, env_keys, read_keys
from onnxferry.serve.repository import Repository
from onnxferry.serve.server import running
from tests.helpers import RELU, free_port, onnx_text, save, wait_ready
from tests.serve_asgi import InProcess, in_process
from tests.test_serve_cli import FERRY

GOOD = "k" * MIN_KEY_LENGTH
OTHER = "0123456789abcdef0123"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(onnx_text(RELU), tmp_path_factory.mktemp("keys") / "m.onnx")


@pytest.fixture(scope="module")
def busy_port() -> Iterator[str]:
    """A port that is taken: a command that failed to refuse would stop there, not serve."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        yield str(busy.getsockname()[1])


def key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def status(url: str, path: str, authorization: str | None, method: str = "GET") -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {} if authorization is None else {"Authorization": authorization}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def app_status(app: InProcess, path: str, authorization: str | None, method: str = "GET") -> int:
    """``status`` of the app in process."""
    headers = {} if authorization is None else {"Authorization": authorization}
    return app.exchange(method, path, headers=headers)[0]


# --- the Python API refuses bad keys -----------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (ServeSettings(api_keys=("",)), "empty"),
        (ServeSettings(api_keys=(GOOD, "   ")), "empty"),
        (ServeSettings(api_keys=("s3cret",)), f"at least {MIN_KEY_LENGTH}"),
        (ServeSettings(api_keys=(GOOD + " x",)), "printable"),
        (ServeSettings(api_keys=(GOOD + "\n",)), "printable"),
        (ServeSettings(repository_keys=("",), repository_api=True), "empty"),
    ],
)
def test_bad_keys_are_refused_before_serving(
    model: Path, settings: ServeSettings, words: str
) -> None:
    # unrefused, an empty key let `Authorization: Bearer` (no token) through to every route
    with pytest.raises(InputError) as refused, running(model, settings=settings) as url:
        assert status(url, "/v2/models/m", "Bearer") == 401
    message = str(refused.value)
    assert words in message and len(message.splitlines()) == 1
    for key in (*settings.api_keys, *settings.repository_keys):
        assert not key.strip() or key.strip() not in message  # a key never reaches a log


def test_a_prebuilt_app_is_checked_too(model: Path) -> None:
    app = ServeApp(Repository.open(model), ServeSettings(repository_keys=("",)))
    with pytest.raises(InputError, match="repository_keys"), running(app):
        pass


# --- keys from a file or the environment ----------------------------------------------------


def test_read_keys_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys", f"# ops\n\n  {GOOD}  \n#{OTHER}\n{OTHER}\n")
    assert read_keys(path) == (GOOD, OTHER)


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        ("", 0o600, "no key"),
        ("# only a comment\n\n", 0o600, "no key"),
        (f"{GOOD}\nshort\n", 0o600, "line 2"),
        (f"{GOOD}\n", 0o644, "every user"),
    ],
)
def test_read_keys_refuses_empty_short_and_world_readable_files(
    tmp_path: Path, text: str, mode: int, words: str
) -> None:
    path = key_file(tmp_path / "keys", text, mode)
    with pytest.raises(InputError, match=words) as refused:
        read_keys(path)
    assert str(path) in str(refused.value)
    with pytest.raises(InputError, match="cannot read"):
        read_keys(tmp_path / "missing")


def test_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TEST_KEYS", f" {GOOD}\n{OTHER} ")
    assert env_keys("FERRY_TEST_KEYS") == (GOOD, OTHER)
    monkeypatch.setenv("FERRY_TEST_KEYS", "  ")
    with pytest.raises(InputError, match="FERRY_TEST_KEYS is empty"):
        env_keys("FERRY_TEST_KEYS")
    monkeypatch.setenv("FERRY_TEST_KEYS", "short")
    with pytest.raises(InputError, match=f"at least {MIN_KEY_LENGTH}"):
        env_keys("FERRY_TEST_KEYS")
    monkeypatch.delenv("FERRY_TEST_KEYS")
    with pytest.raises(InputError, match="FERRY_TEST_KEYS is not set"):
        env_keys("FERRY_TEST_KEYS")


def test_keys_from_a_file_guard_every_route_but_health(model: Path, tmp_path: Path) -> None:
    keys = read_keys(key_file(tmp_path / "keys", f"{GOOD}\n"))
    settings = ServeSettings(api_keys=keys, repository_keys=(OTHER,), repository_api=True)
    with in_process(model, settings=settings) as app:
        for wrong in (None, "Bearer", "Bearer ", f"Bearer {GOOD[:-1]}", f"Bearer {OTHER}"):
            assert app_status(app, "/v2/models/m", wrong) == 401
        assert app_status(app, "/v2/models/m", f"Bearer {GOOD}") == 200
        assert app_status(app, "/v2/health/ready", None) == 200
        index = "/v2/repository/index"
        assert app_status(app, index, "Bearer", "POST") == 401
        assert app_status(app, index, f"Bearer {GOOD}", "POST") == 401
        assert app_status(app, index, f"Bearer {OTHER}", "POST") == 200


def test_two_authorization_headers_are_refused_whichever_is_right(model: Path) -> None:
    """A request with two Authorization headers is refused (400), not judged by its first:
    a proxy in front may have read the other one."""
    with in_process(model, settings=ServeSettings(api_keys=(GOOD,))) as app:
        for pair in ([GOOD, OTHER], [OTHER, GOOD], [GOOD, GOOD]):
            headers = [("Authorization", f"Bearer {key}") for key in pair]
            status, _, body = app.exchange("GET", "/v2/models/m", headers=headers)
            assert status == 400, body
            assert b"the request has 2 Authorization headers; send one" in body
        assert app_status(app, "/v2/models/m", f"Bearer {GOOD}") == 200


# --- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (
            ["--api-key", ""],
            {},
            f"--api-key: the key is empty; a key needs at least {MIN_KEY_LENGTH}",
        ),
        (["--api-key", "s3cret"], {}, f"at least {MIN_KEY_LENGTH}"),
        (["--repository-key", ""], {}, "--repository-key: the key is empty"),
        (["--api-key-env", "FERRY_TEST_UNSET"], {}, "FERRY_TEST_UNSET is not set"),
        (["--repository-key-env", "FERRY_TEST_KEY"], {"FERRY_TEST_KEY": ""}, "is empty"),
        ([], {"FERRY_API_KEY": " "}, "FERRY_API_KEY is set but empty"),
        ([], {"FERRY_REPOSITORY_KEY": ""}, "FERRY_REPOSITORY_KEY is set but empty"),
    ],
)
def test_cli_refuses_empty_short_and_missing_keys(
    model: Path,
    busy_port: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    words: str,
) -> None:
    monkeypatch.delenv("FERRY_TEST_UNSET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", str(model), "--port", busy_port, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(("text", "mode"), [("#\n", 0o600), (f"{GOOD}\n", 0o604)])
def test_cli_refuses_an_empty_or_world_readable_key_file(
    model: Path,
    busy_port: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    mode: int,
) -> None:
    path = key_file(tmp_path / "keys", text, mode)
    for option in ("--api-key-file", "--repository-key-file"):
        assert main(["serve", str(model), "--port", busy_port, option, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert str(path) in err and len(err.splitlines()) == 1, err


@pytest.fixture
def keyed_server(model: Path, tmp_path: Path) -> Iterator[int]:
    path = key_file(tmp_path / "keys", f"# the fleet's key\n{GOOD}\n")
    port = free_port()
    keys = ["--api-key-file", str(path), "--api-key-env", "FERRY_TEST_KEY"]
    process = subprocess.Popen(
        [str(FERRY), "serve", str(model), "--port", str(port), *keys],
        env={**os.environ, "FERRY_TEST_KEY": OTHER},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, process)
        yield port
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_cli_serves_with_keys_from_a_file_and_the_environment(keyed_server: int) -> None:
    url = f"http://127.0.0.1:{keyed_server}"
    for wrong in (None, "Bearer", "Bearer ", "Bearer # the fleet's key"):
        assert status(url, "/v2/models/m", wrong) == 401
    assert status(url, "/v2/models/m", f"Bearer {GOOD}") == 200
    assert status(url, "/v2/models/m", f"Bearer {OTHER}") == 200

"""Triton's system shared memory extension on a real server, driven by tritonclient: regions
registered, inputs read from and outputs written into /dev/shm, equal to a direct ORT run;
every error one 400 line, the server serving on after each."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.serve.server import running
from onnxferry.serve.settings import ServeSettings
from tests.test_serve_app import affine, write

httpclient = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this host")

X = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.0
NBYTES = X.nbytes  # 48


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("shm") / "affine.onnx", affine())


@pytest.fixture(scope="module")
def url(model: Path) -> Iterator[str]:
    with running(model, settings=ServeSettings(shared_memory="system")) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url.removeprefix("http://"))
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    """Input, y and z regions under unique keys, destroyed after the test."""
    tag = uuid.uuid4().hex[:8]
    made = {
        name: shm.create_shared_memory_region(f"{name}-{tag}", f"/ferry-{name}-{tag}", NBYTES)
        for name in ("x", "y", "z")
    }
    shm.set_shared_memory_region(made["x"], [X])
    yield made
    for handle in made.values():
        shm.destroy_shared_memory_region(handle)


def register(client: Any, regions: dict[str, Any]) -> None:
    for handle in regions.values():
        client.register_system_shared_memory(handle._triton_shm_name, handle._shm_key, NBYTES)


def infer_shared(client: Any, regions: dict[str, Any], **sizes: int) -> Any:
    """An infer request with x, y and z in their regions (``sizes`` overrides byte sizes)."""
    x = httpclient.InferInput("x", [3, 4], "FP32")
    x.set_shared_memory(regions["x"]._triton_shm_name, sizes.get("x", NBYTES))
    outputs = []
    for name in ("y", "z"):
        out = httpclient.InferRequestedOutput(name)
        out.set_shared_memory(regions[name]._triton_shm_name, sizes.get(name, NBYTES))
        outputs.append(out)
    return client.infer("affine", [x], outputs=outputs)


def serves(client: Any) -> None:
    """The server still answers a plain request correctly."""
    x = httpclient.InferInput("x", [3, 4], "FP32")
    x.set_data_from_numpy(X)
    result = client.infer("affine", [x])
    np.testing.assert_array_equal(result.as_numpy("y"), 2 * X + 1)


def fails(call: Any, *words: str, status: str = "400") -> str:
    """The one-line error that ``call`` gets, checked for ``words``."""
    with pytest.raises(InferenceServerException) as info:
        call()
    text = str(info.value.message())
    assert info.value.status() == status, text
    assert "\n" not in text
    for word in words:
        assert word in text, text
    return text


def test_inputs_and_outputs_in_shared_memory(
    client: Any, regions: dict[str, Any], model: Path
) -> None:
    register(client, regions)
    status = client.get_system_shared_memory_status()
    mine = {r["name"]: r for r in status}
    name = regions["x"]._triton_shm_name
    assert mine[name] == {"name": name, "key": regions["x"]._shm_key, "offset": 0,
                          "byte_size": NBYTES}  # fmt: skip
    assert client.get_system_shared_memory_status(name) == [mine[name]]
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]

    result = infer_shared(client, regions)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want_y, want_z = session.run(["y", "z"], {"x": X})
    y = shm.get_contents_as_numpy(regions["y"], np.float32, [3, 4])
    z = shm.get_contents_as_numpy(regions["z"], np.float32, [3, 4])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(z, want_z)
    # Listed without data or parameters, as Triton does (its C++ client reads parameters as
    # binary data).
    assert result.get_output("y") == {"name": "y", "datatype": "FP32", "shape": [3, 4]}

    # The client changes its input in place; the next request reads the new values.
    shm.set_shared_memory_region(regions["x"], [X * 2])
    infer_shared(client, regions)
    y = shm.get_contents_as_numpy(regions["y"], np.float32, [3, 4])
    np.testing.assert_array_equal(y, session.run(["y"], {"x": X * 2})[0])

    client.unregister_system_shared_memory(name)
    assert name not in {r["name"] for r in client.get_system_shared_memory_status()}
    fails(lambda: infer_shared(client, regions), "no shared memory region", name)
    serves(client)


def test_offsets_and_a_body_output(client: Any, regions: dict[str, Any]) -> None:
    """A region registered at an offset of its object, an input at an offset in a region, and
    an output that comes back in the body beside one in shared memory."""
    handle = regions["y"]
    shm.set_shared_memory_region(handle, [X[1:]], offset=16)  # rows 1-2 at byte 16
    client.register_system_shared_memory("part", handle._shm_key, 40, offset=8)
    x = httpclient.InferInput("x", [2, 4], "FP32")
    x.set_shared_memory("part", 32, offset=8)  # byte 8 + 8 of the object
    client.register_system_shared_memory(regions["z"]._triton_shm_name, regions["z"]._shm_key, 48)
    z = httpclient.InferRequestedOutput("z")
    z.set_shared_memory(regions["z"]._triton_shm_name, 32, offset=16)
    result = client.infer("affine", [x], outputs=[httpclient.InferRequestedOutput("y"), z])
    np.testing.assert_array_equal(result.as_numpy("y"), 2 * X[1:] + 1)
    got = shm.get_contents_as_numpy(regions["z"], np.float32, [2, 4], offset=16)
    np.testing.assert_array_equal(got, np.maximum(X[1:], 0))
    assert result.get_output("z") == {"name": "z", "datatype": "FP32", "shape": [2, 4]}


def test_errors_are_one_line_and_the_server_serves_on(client: Any, regions: dict[str, Any]) -> None:
    register(client, regions)
    x_name, x_key = regions["x"]._triton_shm_name, regions["x"]._shm_key
    register_x = client.register_system_shared_memory
    checks = [
        (lambda: register_x(x_name, x_key, NBYTES), ("already registered",)),
        (lambda: register_x("bad", "/../etc/passwd", 8), ("must name one object",)),
        (lambda: register_x("bad", "/a/b", 8), ("must name one object",)),
        (lambda: register_x("bad", "/ferry-no-such-key", 8), ("cannot open",)),
        (lambda: register_x("big", x_key, NBYTES + 1), ("does not fit",)),
        (lambda: register_x("big", x_key, 8, offset=NBYTES), ("does not fit",)),
        (lambda: infer_shared(client, regions, x=NBYTES - 4), ("needs 48",)),
        (lambda: infer_shared(client, regions, x=NBYTES + 4), ("past the end",)),
        (lambda: infer_shared(client, regions, y=NBYTES - 4), ("output 'y'", "larger")),
        (lambda: client.get_system_shared_memory_status("nope"), ("no shared memory region",)),
    ]
    for call, words in checks:
        fails(call, *words)
        serves(client)
    assert len(client.get_system_shared_memory_status()) == 3
    client.unregister_system_shared_memory("never-registered")  # no error, as in Triton


def test_an_object_made_smaller_is_a_400_not_a_dead_server(
    client: Any, regions: dict[str, Any]
) -> None:
    """A client that makes its object smaller after registering it (ftruncate, or opening the
    key again with a smaller size): touching the mapping's pages past the new end would kill
    the server with SIGBUS. Each use checks the file's size first."""
    register(client, regions)
    for name in ("x", "y"):
        path = Path("/dev/shm") / regions[name]._shm_key.lstrip("/")
        os.truncate(path, 8)
        try:
            word = "input 'x'" if name == "x" else "output 'y'"
            fails(lambda: infer_shared(client, regions), word, "has shrunk to 8 bytes")
            serves(client)
        finally:
            os.truncate(path, NBYTES)  # its size again for the next case
            shm.set_shared_memory_region(regions["x"], [X])
    infer_shared(client, regions)
    y = shm.get_contents_as_numpy(regions["y"], np.float32, [3, 4])
    np.testing.assert_array_equal(y, 2 * X + 1)


def test_registration_needs_the_api_key(model: Path, regions: dict[str, Any]) -> None:
    key = "k" * 16
    with running(model, settings=ServeSettings(api_keys=(key,), shared_memory="system")) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        handle = regions["x"]
        args = (handle._triton_shm_name, handle._shm_key, NBYTES)
        with pytest.raises(InferenceServerException) as info:
            client.register_system_shared_memory(*args)
        assert info.value.status() == "401"
        client.register_system_shared_memory(*args, headers={"Authorization": f"Bearer {key}"})
        client.close()


def test_off_by_default(model: Path, regions: dict[str, Any]) -> None:
    with running(model) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        handle = regions["x"]
        hint = "--shared-memory system"
        register = client.register_system_shared_memory
        fails(lambda: register("x", handle._shm_key, 8), "off", hint, status="403")
        fails(lambda: client.get_system_shared_memory_status(), "off", hint, status="403")
        fails(lambda: client.unregister_system_shared_memory(), "off", hint, status="403")
        fails(lambda: infer_shared(client, regions), "off", hint)  # 400: the request's fault
        serves(client)
        assert "system_shared_memory" not in client.get_server_metadata()["extensions"]
        client.close()
        request = urllib.request.Request(f"{url}/openapi.json")
        with urllib.request.urlopen(request, timeout=10) as response:
            paths = json.load(response)["paths"]
        assert "/v2/systemsharedmemory/region/{region}/register" in paths
        assert os.path.exists("/dev/shm" + handle._shm_key)  # the client's object is untouched


def test_malformed_register_body(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/v2/systemsharedmemory/region/r/register", data=b"[1]", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert "JSON object" in json.load(info.value)["error"]

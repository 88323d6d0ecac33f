"""The response cache: the LRU itself, then a real app (in process) over a repository whose
models set ``cache_bytes`` in their ferry.toml: hits answer what was computed, bit for bit,
metrics and statistics count, the byte budget evicts the least recently used, a model marked
non-deterministic is never cached, and a reload starts with an empty cache."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.errors import UsageError
from onnxferry.serve.app import ServeSettings
from onnxferry.serve.cache import ENTRY_OVERHEAD, ResponseCache
from onnxferry.serve.config import ModelConfig
from tests.helpers import mlp, save
from tests.serve_asgi import InProcess, in_process

SMALL = "instances = 1\nintra_op_threads = 1\n"
ENTRY = ENTRY_OVERHEAD + 3 * 4  # one answer: probs float32[1, 3]


# --- the cache on its own ----------------------------------------------------------------


def test_the_key_covers_inputs_outputs_and_version() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    key = ResponseCache.key({"x": x}, None, "1")
    assert key == ResponseCache.key({"x": x.copy()}, None, "1")
    assert key == ResponseCache.key({"x": np.asfortranarray(x)}, None, "1")  # values, not layout
    others = [
        ResponseCache.key({"x": x + 1}, None, "1"),
        ResponseCache.key({"x": x.astype(np.float64)}, None, "1"),
        ResponseCache.key({"x": x.reshape(4, 2)}, None, "1"),
        ResponseCache.key({"z": x}, None, "1"),
        ResponseCache.key({"x": x}, ("probs",), "1"),
        ResponseCache.key({"x": x}, None, "2"),
    ]
    assert len({key, *others}) == 1 + len(others)
    texts = np.array([b"ab", b"c"], dtype=object)
    assert ResponseCache.key({"s": texts}, None, "1") != ResponseCache.key(
        {"s": np.array([b"a", b"bc"], dtype=object)}, None, "1"
    )


def test_lru_by_bytes() -> None:
    cache = ResponseCache(3 * (ENTRY_OVERHEAD + 16))
    answers = {k: {"y": np.full(4, k, np.float32)} for k in range(4)}  # 16 bytes each
    keys = {k: ResponseCache.key({"x": np.array([k])}, None, "1") for k in answers}
    for k in range(3):
        assert cache.put(keys[k], answers[k])
    assert cache.get(keys[0]) is not None  # 0 is now the most recently used
    cache.put(keys[3], answers[3])  # past the budget: 1, the least recently used, goes
    assert cache.get(keys[1]) is None
    assert [cache.get(keys[k]) is not None for k in (0, 2, 3)] == [True, True, True]
    assert len(cache) == 3 and cache.bytes == 3 * (ENTRY_OVERHEAD + 16)
    assert (cache.hits, cache.misses, cache.evictions) == (4, 1, 1)
    assert not cache.put(b"huge", {"y": np.zeros(1000, np.float32)})  # larger than the budget


def test_a_stored_answer_is_a_read_only_copy() -> None:
    cache = ResponseCache(1 << 20)
    batch = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put(b"k", {"y": batch[:1]})  # a view into a batch's output
    batch[0, 0] = 99
    stored = cache.get(b"k")
    assert stored is not None
    assert stored["y"].tolist() == [[0, 1, 2, 3]]
    assert not stored["y"].flags.writeable and stored["y"].base is None


def test_config_cache_bytes_and_determinism() -> None:
    assert ModelConfig.from_dict({"cache_bytes": "64MiB"}).cache_bytes == 64 << 20
    assert ModelConfig.from_dict({"cache_bytes": 1000}).cached
    assert not ModelConfig.from_dict({"cache_bytes": "1MiB", "deterministic": False}).cached
    assert not ModelConfig().cached  # off by default
    with pytest.raises(UsageError, match=r"cache_bytes must be a size, got 'lots'"):
        ModelConfig.from_dict({"cache_bytes": "lots"})


# --- a server with caches -----------------------------------------------------------------


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name, seed, extra in (
        ("cached", 0, f'cache_bytes = "{3 * ENTRY}"\n'),
        ("random", 1, 'cache_bytes = "1MiB"\ndeterministic = false\n'),
    ):
        save(mlp(seed), repo / name / "1" / "model.onnx")
        (repo / name / "ferry.toml").write_text(SMALL + extra)
    return repo


def _body(x: list[float]) -> bytes:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}]
    return json.dumps({"inputs": inputs}).encode()


def _infer(app: InProcess, name: str, x: list[float]) -> bytes:
    status, data = app.request("POST", f"/v2/models/{name}/infer", _body(x))
    assert status == 200, data
    return data


def _metric(app: InProcess, family: str, model: str) -> float | None:
    text = app.request("GET", "/metrics")[1].decode()
    found = re.search(rf'^{family}{{model="{model}",version="1"}} (\S+)$', text, re.MULTILINE)
    return None if found is None else float(found[1])


def _stats(app: InProcess, name: str) -> dict[str, Any]:
    data = json.loads(app.request("GET", f"/v2/models/{name}/stats")[1])
    stats: dict[str, Any] = data["model_stats"][0]["inference_stats"]
    return stats


@pytest.fixture
def app(tmp_path: Path) -> Any:
    with in_process(_repo(tmp_path), ServeSettings(repository_api=True)) as app:
        yield app


def test_a_repeated_request_is_answered_from_the_cache_bit_for_bit(
    app: InProcess, tmp_path: Path
) -> None:
    x = [0.5, -1.0, 2.0, 0.25]
    computed = _infer(app, "cached", x)
    cached = _infer(app, "cached", x)
    assert cached == computed  # the whole response, byte for byte
    session = ort.InferenceSession(str(tmp_path / "repo" / "cached" / "1" / "model.onnx"))
    direct = session.run(None, {"x": np.array([x], np.float32)})[0]
    answer = json.loads(cached)["outputs"][0]
    assert np.array_equal(np.array(answer["data"], np.float32), direct.reshape(-1))
    assert _metric(app, "ferry_cache_hits_total", "cached") == 1
    assert _metric(app, "ferry_cache_misses_total", "cached") == 1
    assert _metric(app, "ferry_cache_bytes", "cached") == ENTRY
    stats = _stats(app, "cached")
    assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (1, 1)
    assert stats["success"]["count"] == 2
    # a different input misses
    _infer(app, "cached", [0.0, 0.0, 0.0, 1.0])
    assert _metric(app, "ferry_cache_misses_total", "cached") == 2
    assert _metric(app, "ferry_cache_bytes", "cached") == 2 * ENTRY


def test_the_byte_budget_evicts_the_least_recently_used(app: InProcess) -> None:
    inputs = [[float(k), 1.0, 2.0, 3.0] for k in range(4)]
    for x in inputs[:3]:  # the budget holds three answers
        _infer(app, "cached", x)
    _infer(app, "cached", inputs[0])  # a hit: 0 is the most recently used
    _infer(app, "cached", inputs[3])  # 1 goes
    assert _metric(app, "ferry_cache_hits_total", "cached") == 1
    _infer(app, "cached", inputs[0])
    _infer(app, "cached", inputs[2])
    assert _metric(app, "ferry_cache_hits_total", "cached") == 3
    _infer(app, "cached", inputs[1])  # evicted: computed again
    assert _metric(app, "ferry_cache_hits_total", "cached") == 3
    assert _metric(app, "ferry_cache_misses_total", "cached") == 5
    assert _metric(app, "ferry_cache_bytes", "cached") == 3 * ENTRY


def test_a_non_deterministic_model_is_never_cached(app: InProcess) -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    assert _infer(app, "random", x) == _infer(app, "random", x)  # the same model, computed twice
    assert _metric(app, "ferry_cache_hits_total", "random") is None
    assert _metric(app, "ferry_cache_misses_total", "random") is None
    stats = _stats(app, "random")
    assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (0, 0)
    assert stats["success"]["count"] == 2


def test_a_reload_starts_with_an_empty_cache(app: InProcess, tmp_path: Path) -> None:
    x = [0.5, -1.0, 2.0, 0.25]
    before = _infer(app, "cached", x)
    assert _infer(app, "cached", x) == before
    assert _metric(app, "ferry_cache_hits_total", "cached") == 1
    save(mlp(0, noise=0.5), tmp_path / "repo" / "cached" / "1" / "model.onnx")  # new weights
    status, _ = app.request("POST", "/v2/repository/models/cached/load")
    assert status == 200
    after = _infer(app, "cached", x)
    assert after != before  # computed by the new model, not the old answer
    assert _metric(app, "ferry_cache_hits_total", "cached") == 0
    assert _metric(app, "ferry_cache_misses_total", "cached") == 1
    assert _infer(app, "cached", x) == after
    assert _metric(app, "ferry_cache_hits_total", "cached") == 1

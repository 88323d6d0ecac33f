"""ferry.toml parsing, version policies, usable cores under cgroup quotas, Triton config JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onnxferry.errors import UsageError
from onnxferry.model import Model
from onnxferry.runtime import usable_cores
from onnxferry.serve.config import ModelConfig, RepositoryConfig, VersionPolicy
from onnxferry.serve.metadata import triton_config

from .helpers import RELU, mlp, onnx_text


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(text)
    return path


def test_from_toml_reads_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
max_batch_size = 16
max_queue_delay_ms = 2
max_queue_size = 64
instances = 2
intra_op_threads = 1
timeout_ms = 1000
allow_nonfinite = false
spin = false
inline_max_ms = 0.25
[versions]
policy = "specific"
specific = [1, 3]
""",
    )
    config = ModelConfig.from_toml(path)
    assert config == ModelConfig(
        max_batch_size=16,
        max_queue_delay_ms=2.0,
        max_queue_size=64,
        instances=2,
        intra_op_threads=1,
        timeout_ms=1000.0,
        allow_nonfinite=False,
        spin=False,
        inline_max_ms=0.25,
        version_policy=VersionPolicy("specific", specific=(1, 3)),
    )


def test_a_ferry_toml_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "ferry.toml"
    path.write_bytes(b"max_batch_size = 8\n\xff\xfe")
    for read in (lambda: ModelConfig.from_toml(path), lambda: RepositoryConfig.read(tmp_path)):
        with pytest.raises(UsageError) as info:
            read()
        assert str(info.value) == f"cannot read {path}: not UTF-8 text"


def test_empty_toml_gives_defaults(tmp_path: Path) -> None:
    assert ModelConfig.from_toml(write(tmp_path, "")) == ModelConfig()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("max_batch = 8", "unknown key 'max_batch'"),
        ('max_batch_size = "8"', "max_batch_size must be an integer"),
        ("max_batch_size = 8.5", "max_batch_size must be an integer"),
        ("max_batch_size = -1", "max_batch_size must be >= 0"),
        ("max_queue_size = 0", "max_queue_size must be >= 1"),
        ("instances = 0", "instances must be >= 1"),
        ("instances = 100000", "instances must be from 1 to 1024"),  # a session each, for ever
        ("intra_op_threads = 4096", "intra_op_threads must be from 1 to 1024"),
        ("intra_op_threads = true", "intra_op_threads must be an integer"),
        ("timeout_ms = 0", "timeout_ms must be > 0"),
        ("max_queue_delay_ms = -0.5", "max_queue_delay_ms must be >= 0"),
        ("max_queue_delay_ms = inf", "max_queue_delay_ms must be >= 0"),
        ("inline_max_ms = -1", "inline_max_ms must be >= 0"),
        ('allow_nonfinite = "yes"', "allow_nonfinite must be true or false"),
        ('versions = "latest"', "versions must be a table"),
        ("[versions]\nkeep = 2", "unknown key 'versions.keep'"),
        ('[versions]\npolicy = "newest"', "unknown policy 'newest'"),
        ("[versions]\nlatest = 0", "versions.latest must be an integer >= 1"),
        ('[versions]\npolicy = "specific"', "versions.specific is empty"),
        ("[versions]\nspecific = [0]", "versions.specific must list integers >= 1"),
        ("max_batch_size = ", "is not valid TOML"),
    ],
)
def test_bad_toml_is_one_line_usage_error_naming_file_and_key(
    tmp_path: Path, text: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        ModelConfig.from_toml(path)
    message = str(info.value)
    assert words in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        ModelConfig.from_toml(tmp_path / "nope.toml")


def test_version_policy_select() -> None:
    available = [3, 1, 10, 2]
    assert VersionPolicy().select(available) == [10]
    assert VersionPolicy("latest", latest=2).select(available) == [3, 10]
    assert VersionPolicy("all").select(available) == [1, 2, 3, 10]
    assert VersionPolicy("specific", specific=(2, 7)).select(available) == [2]
    assert VersionPolicy().select([]) == []


@pytest.mark.parametrize(
    ("instances", "threads", "cores", "expected"),
    [
        (None, None, 2, (1, 2)),
        (None, None, 1, (1, 1)),
        (None, None, 16, (1, 16)),
        (2, None, 8, (2, 4)),
        (3, None, 2, (3, 1)),
        (None, 2, 8, (4, 2)),
        (None, 4, 2, (1, 4)),
        (2, 3, 2, (2, 3)),
        (None, None, 0, (1, 1)),
    ],
)
def test_parallelism(
    instances: int | None, threads: int | None, cores: int, expected: tuple[int, int]
) -> None:
    config = ModelConfig(instances=instances, intra_op_threads=threads)
    got = config.parallelism(cores)
    assert got == expected
    if instances is None and threads is None:
        assert got[0] * got[1] <= max(cores, 1)


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def cgroup_v2(tmp_path: Path, cpu_max: str, where: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    directory = root / where.strip("/") if where.strip("/") else root
    directory.mkdir(parents=True)
    (directory / "cpu.max").write_text(cpu_max + "\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(f"0::{where}\n")
    return root, self_cgroup


def test_usable_cores_without_quota_is_affinity(tmp_path: Path) -> None:
    root, self_cgroup = cgroup_v2(tmp_path, "max 100000")
    assert usable_cores(root, self_cgroup) == affinity()
    assert usable_cores(tmp_path / "none", tmp_path / "none") == affinity()


def test_usable_cores_v2_quota_caps_and_rounds_down(tmp_path: Path) -> None:
    root, self_cgroup = cgroup_v2(tmp_path, "150000 100000")
    assert usable_cores(root, self_cgroup) == 1
    other = tmp_path / "other"
    other.mkdir()
    root, self_cgroup = cgroup_v2(other, "50000 100000")
    assert usable_cores(root, self_cgroup) == 1  # never below one


def test_usable_cores_v2_nested_cgroup_and_ancestors(tmp_path: Path) -> None:
    root, self_cgroup = cgroup_v2(tmp_path, "100000 100000", "/kubepods/pod1")
    (root / "cpu.max").write_text("max 100000\n")
    assert usable_cores(root, self_cgroup) == 1
    # a tighter limit on an ancestor wins too
    (root / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "cpu.max").write_text("100000 100000\n")
    assert usable_cores(root, self_cgroup) == 1


def test_usable_cores_v1_quota(tmp_path: Path) -> None:
    cpu = tmp_path / "cgroup" / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    self_cgroup = tmp_path / "self"
    self_cgroup.write_text("4:cpu,cpuacct:/\n0::/\n")
    assert usable_cores(tmp_path / "cgroup", self_cgroup) == 1
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert usable_cores(tmp_path / "cgroup", self_cgroup) == affinity()


def test_usable_cores_ignores_garbage(tmp_path: Path) -> None:
    root, self_cgroup = cgroup_v2(tmp_path, "lots of cpu")
    assert usable_cores(root, self_cgroup) == affinity()


def test_triton_config_batching() -> None:
    model = Model.from_proto(mlp())
    config = ModelConfig(max_batch_size=16, max_queue_delay_ms=0.25, timeout_ms=20)
    out = triton_config("m", model.signature, config, True, parallelism=(2, 3))
    assert out["name"] == "m"
    assert out["platform"] == "onnxruntime_onnx"
    assert out["backend"] == "onnxruntime"
    assert out["max_batch_size"] == 16
    assert out["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert out["output"] == [{"name": "probs", "data_type": "TYPE_FP32", "dims": [3]}]
    assert out["dynamic_batching"] == {
        "max_queue_delay_microseconds": 250,
        "default_queue_policy": {"max_queue_size": 256, "default_timeout_microseconds": 20000},
    }
    assert out["instance_group"] == [{"name": "m", "count": 2, "kind": "KIND_CPU"}]
    assert out["parameters"]["intra_op_thread_count"] == {"string_value": "3"}
    assert out["version_policy"] == {"latest": {"num_versions": 1}}


@pytest.mark.parametrize(
    ("devices", "instances", "group"),
    [
        (("cuda:0", "cuda:1"), None, {"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}),
        (("tensorrt:1",), 2, {"count": 2, "kind": "KIND_GPU", "gpus": [1]}),
        (("cpu", "cpu"), 2, {"count": 4, "kind": "KIND_CPU"}),
    ],
)
def test_triton_config_describes_a_device_pool(
    devices: tuple[str, ...], instances: int | None, group: dict[str, object]
) -> None:
    config = ModelConfig(devices=devices, instances=instances)
    out = triton_config("m", Model.from_proto(mlp()).signature, config, True)
    assert out["instance_group"] == [{"name": "m", **group}]


def test_triton_config_without_batching_and_type_names() -> None:
    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (string[2] s, bool[N, 3] b, float16[N] h, uint8[1] u) => (string[2] t, bool[N, 3] c)
        { t = Identity(s) c = Identity(b) }
        """
    )
    out = triton_config("g", Model.from_proto(proto).signature, ModelConfig(), False)
    assert out["max_batch_size"] == 0
    assert "dynamic_batching" not in out
    assert [(t["data_type"], t["dims"]) for t in out["input"]] == [
        ("TYPE_STRING", [2]),
        ("TYPE_BOOL", [-1, 3]),
        ("TYPE_FP16", [-1]),
        ("TYPE_UINT8", [1]),
    ]
    assert [t["data_type"] for t in out["output"]] == ["TYPE_STRING", "TYPE_BOOL"]
    count = out["instance_group"][0]["count"]
    threads = int(out["parameters"]["intra_op_thread_count"]["string_value"])
    assert count * threads <= usable_cores()


def test_triton_config_version_policies() -> None:
    signature = Model.from_proto(onnx_text(RELU)).signature
    all_ = ModelConfig(version_policy=VersionPolicy("all"))
    some = ModelConfig(version_policy=VersionPolicy("specific", specific=(1, 3)))
    assert triton_config("r", signature, all_, True)["version_policy"] == {"all": {}}
    assert triton_config("r", signature, some, True)["version_policy"] == {
        "specific": {"versions": [1, 3]}
    }

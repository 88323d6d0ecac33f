"""`ferry package --target docker`: the Dockerfile lints clean with hadolint, the requirements
are the installed versions (with the lock's hashes), and the image's exact entrypoint, run
here against the packaged folder, serves the model with ONNX Runtime's answers."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.package import package
from onnxferry.package.base import Packaged
from onnxferry.report import Report
from tests.helpers import Run, free_port, mlp, save, save_external, wait_ready

HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report[Packaged]]:
    root = tmp_path_factory.mktemp("docker")
    model = save(mlp(), root / "classifier.onnx")
    outdir = root / "out"
    return outdir, package(model, "docker", outdir, {"max_batch_size": "4"})


def _entrypoint(outdir: Path) -> list[str]:
    match = re.search(r"^ENTRYPOINT (.+)$", (outdir / "Dockerfile").read_text(), re.M)
    assert match
    command: list[str] = json.loads(match[1])
    return command


def test_package_writes_a_clean_dockerfile_and_checks_it(
    baked: tuple[Path, Report[Packaged]],
) -> None:
    outdir, report = baked
    result = report.result
    assert report.ok, result.checks
    assert {c.name for c in result.checks} == {"hadolint", "model loads", "ferry.toml"}
    assert set(result.files) >= {
        "Dockerfile",
        ".dockerignore",
        "requirements.txt",
        "models/classifier/1/model.onnx",
        "models/classifier/ferry.toml",
    }
    assert all((outdir / f).is_file() for f in result.files)
    # hadolint itself, run on the file: zero findings of any level.
    lint = subprocess.run(
        [str(HADOLINT), "--format", "json", str(outdir / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (lint.returncode, json.loads(lint.stdout)) == (0, [])
    dockerfile = (outdir / "Dockerfile").read_text()
    v = sys.version_info
    assert f"FROM python:{v.major}.{v.minor}.{v.micro}-slim-bookworm AS builder" in dockerfile
    assert "--require-hashes" in dockerfile and "COPY --from=builder /opt/venv" in dockerfile
    final = dockerfile.split("\nFROM ")[2]  # the final stage
    assert "pip install" not in final and "apt-get" not in final  # no build tools
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", dockerfile, re.M)
    assert "/v2/health/ready" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert f"entrypoint: {json.dumps(_entrypoint(outdir))}" in result.notes
    assert "max_batch_size = 4" in (outdir / "models/classifier/ferry.toml").read_text()


def test_requirements_pin_the_installed_versions_with_the_locks_hashes(
    baked: tuple[Path, Report[Packaged]],
) -> None:
    outdir, _ = baked
    text = (outdir / "requirements.txt").read_text()
    for name in ("onnxruntime", "numpy", "onnx", "uvicorn", "click"):
        assert re.search(rf"^{name}=={re.escape(metadata.version(name))} \\$", text, re.M), name
    # tritonclient for the gRPC front's protos, with its grpc extra only: no HTTP client stack
    assert re.search(r"^tritonclient==", text, re.M) and re.search(r"^protobuf==", text, re.M)
    assert not re.search(r"^(geventhttpclient|aiohttp)==", text, re.M)
    entries = re.findall(
        r"^(?:\S+==\S+|onnxferry @ \S+) \\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.M
    )
    pins = [line for line in text.splitlines() if line and not line[0].isspace()]
    assert len(entries) == len([p for p in pins if not p.startswith("#")])
    wheel = re.search(r"onnxferry @ file:///tmp/wheels/(\S+) ", text)
    assert wheel and (outdir / "wheels" / wheel[1]).is_file()


def test_the_entrypoint_serves_the_packaged_model(
    baked: tuple[Path, Report[Packaged]], tmp_path: Path
) -> None:
    outdir, _ = baked
    command = _entrypoint(outdir)
    assert command[:3] == ["ferry", "serve", "/models"]
    port = free_port()
    args = [str(outdir / "models") if a == "/models" else a for a in command[2:]]
    args[args.index("--port") + 1] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "onnxferry", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, process)
        # The HEALTHCHECK's own command, pointed at this port.
        probe = re.search(r'CMD \["python", "-c", "(.+)"\]', (outdir / "Dockerfile").read_text())
        assert probe
        check = probe[1].replace(":8000/", f":{port}/")
        assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0
        x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
        body = {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v2/models/classifier/infer", body=json.dumps(body))
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 200, answer
        session = ort.InferenceSession(str(outdir / "models/classifier/1/model.onnx"))
        (expected,) = session.run(None, {"x": x})
        (output,) = answer["outputs"]
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()


def test_mounted_model_and_pinned_digest(ferry: Run, tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "model.onnx")
    digest = "sha256:" + "ab" * 32
    outdir = tmp_path / "out"
    code, out, err = ferry(
        "package", model, "--target", "docker", "-o", outdir, "--json",
        "--set", "model=mounted", "--set", "install=pypi", "--set", f"base_digest={digest}",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)["result"]
    assert (
        not (outdir / "models").exists() and "models/" not in (outdir / ".dockerignore").read_text()
    )
    dockerfile = (outdir / "Dockerfile").read_text()
    assert dockerfile.count(f"-slim-bookworm@{digest}") == 2  # both stages
    assert 'VOLUME ["/models"]' in dockerfile
    assert any(n.startswith("run: docker run") and ":/models:ro" in n for n in result["notes"])
    assert next(c for c in result["checks"] if c["name"] == "hadolint")["ok"]
    # From PyPI the onnxferry pin has no hash, so the install says so instead of failing.
    requirements = (outdir / "requirements.txt").read_text()
    assert f"onnxferry=={metadata.version('onnxferry')}" in requirements
    assert "--require-hashes" not in dockerfile
    assert any("without hashes" in n for n in result["notes"])


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("colour=blue", "docker: unknown option 'colour'"),
        ("base_digest=latest", "base_digest"),
        ("uid=0", "uid"),
        ("max_batch_size=-1", "max_batch_size"),
    ],
)
def test_a_bad_set_is_one_line_exit_2(ferry: Run, tmp_path: Path, setting: str, words: str) -> None:
    model = save(mlp(), tmp_path / "model.onnx")
    code, out, err = ferry(
        "package", model, "--target", "docker", "-o", tmp_path / "out", "--set", setting
    )
    assert code == 2 and words in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # the error + its hint
    assert not (tmp_path / "out").exists()


def test_a_repository_model_with_external_data_is_baked_whole(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    save_external(mlp(), repo / "scorer" / "3" / "model.onnx")
    (repo / "scorer" / "ferry.toml").write_text("max_batch_size = 2\n")
    report = package(repo, "docker", tmp_path / "out", {"install": "pypi"})
    assert report.ok, report.result.checks
    baked = tmp_path / "out" / "models" / "scorer"
    assert (baked / "1" / "weights.bin").read_bytes() == (
        repo / "scorer/3/weights.bin"
    ).read_bytes()
    assert (baked / "ferry.toml").read_text() == "max_batch_size = 2\n"  # the repository's own

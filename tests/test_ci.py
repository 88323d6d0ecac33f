"""`ferry ci init`: the pipeline files validate, and the steps they run pass on the example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from onnxferry.ci import KEY_VARIABLE, REGISTRY_VARIABLE, Step, ci_steps, render
from tests.helpers import Run

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_classifier"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
GATES = ["convert", "check", "test", "optimize", "sign", "registry add", "promote to staging"]


def _steps() -> list[Step]:
    return ci_steps(f"{EXAMPLE}/model.py:build", str(EXAMPLE))


def _validate(path: Path, schema: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its bundled (offline) schema."""
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *extra, str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_github_workflow_validates_and_runs_each_step_in_order(tmp_path: Path) -> None:
    path = tmp_path / "ferry.yml"
    path.write_text(render("github", _steps()))
    done = _validate(path, "vendor.github-workflows")
    assert done.returncode == 0, done.stdout + done.stderr
    job = YAML(typ="safe").load(path.read_text())["jobs"]["gates"]
    runs = [(s.get("name"), s.get("run")) for s in job["steps"] if "run" in s]
    gates = [(step.name, step.shell()) for step in _steps()]
    assert runs[-len(gates) :] == gates  # one step per gate, the last steps of the job
    assert "==0.1.0" in runs[0][1] and "secrets.FERRY_SIGNING_KEY" in path.read_text()
    assert job["env"][REGISTRY_VARIABLE] == "${{ vars.FERRY_REGISTRY }}"
    # the validator bites: a job without runs-on is refused
    path.write_text(path.read_text().replace("    runs-on: ubuntu-latest\n", ""))
    assert _validate(path, "vendor.github-workflows").returncode == 1


def test_gitlab_pipeline_validates_with_one_stage_per_gate(tmp_path: Path) -> None:
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(render("gitlab", _steps()))
    done = _validate(path, "vendor.gitlab-ci", "--data-transform", "gitlab-ci")
    assert done.returncode == 0, done.stdout + done.stderr
    data = YAML(typ="safe").load(path.read_text())
    assert len(data["stages"]) == len(GATES)
    jobs = [data[stage] for stage in data["stages"]]
    assert [job["script"] for job in jobs] == [[step.shell()] for step in _steps()]
    assert all(job["artifacts"]["paths"] == ["build/ferry"] for job in jobs)
    assert KEY_VARIABLE in path.read_text() and "==0.1.0" in data["default"]["before_script"][0]


def test_jenkinsfile_stages_run_exactly_the_step_commands() -> None:
    text = render("jenkins", _steps())
    assert text.count("{") == text.count("}")
    assert re.search(r"^pipeline \{\n    agent any\n", text, re.M)
    assert f"{KEY_VARIABLE} = credentials('ferry-signing-key')" in text
    assert f"{REGISTRY_VARIABLE} = credentials('ferry-registry')" in text
    stages = re.findall(r"stage\('((?:[^'\\]|\\.)*)'\) \{\n\s+steps \{\n((?:\s+sh .*\n)+)", text)
    assert [name for name, _ in stages] == ["install ferry", *GATES]
    shells = [
        re.sub(r"\\(.)", r"\1", line.strip().removeprefix("sh '").removesuffix("'"))
        for _, block in stages[1:]
        for line in block.splitlines()
    ]
    assert shells == [step.shell() for step in _steps()]


def test_cli_writes_the_usual_paths_and_refuses_to_overwrite(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for target, path in [
        ("github", ".github/workflows/ferry.yml"),
        ("gitlab", ".gitlab-ci.yml"),
        ("jenkins", "Jenkinsfile"),
    ]:
        code, out, err = ferry("ci", "init", target, "--model", "m.onnx", "--name", "m")
        assert code == 0, err
        assert f"wrote {path}" in out and "promote-to-staging" not in out
        assert "ferry registry promote m --to staging" in (tmp_path / path).read_text()
    before = Path("Jenkinsfile").read_text()
    code, _, err = ferry("ci", "init", "jenkins", "--max-drop", "0.5")
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert Path("Jenkinsfile").read_text() == before
    assert ferry("ci", "init", "jenkins", "--force", "--max-drop", "0.5")[0] == 0
    assert "--max-drop 0.5 " in Path("Jenkinsfile").read_text()
    code, _, err = ferry("ci", "init", "github", "-o", "x.yml", "--max-drop", "2")
    assert code == 2 and "--max-drop" in err and not Path("x.yml").exists()


def test_the_steps_pass_on_the_example_model_and_promote_it_to_staging(
    ferry: Run, tmp_path: Path
) -> None:
    registry, keys = tmp_path / "registry", tmp_path / "keys"
    # the registry administrator's part: the key pair, and the public key trusted
    assert ferry("keygen", "-o", keys)[0] == 0
    assert ferry("registry", "trust", keys / "public_key.pem", "--registry", registry)[0] == 0
    steps = ci_steps(
        f"{EXAMPLE}/model.py:build",
        str(EXAMPLE),
        workdir=str(tmp_path / "build"),
        time_budget=1,  # the search stops starting candidates after a second
    )
    assert [step.name for step in steps] == GATES
    secrets = {KEY_VARIABLE: str(keys / "private_key.pem"), REGISTRY_VARIABLE: str(registry)}
    for step in steps:
        argv = step.expand(secrets)
        assert argv[0] == "ferry"
        code, out, err = ferry(*argv[1:])
        assert code == 0, f"{step.name}: {out[-2000:]}{err}"
    show = ("registry", "show", "tiny_classifier@staging", "--json", "--registry", registry)
    code, out, err = ferry(*show)
    assert code == 0, err
    shown = json.loads(out)["result"]
    assert (shown["version"], shown["aliases"]) == (1, ["staging"])
    assert shown["signed"] and shown["golden"]
    assert {"lineage/report.json", "lineage/model.recipe.toml"} <= set(shown["files"])


def test_the_install_line_carries_the_source_s_extras(tmp_path: Path) -> None:
    """A Hugging Face model folder needs transformers (the ``hf`` extra); a SavedModel folder
    TensorFlow; a factory torch."""
    from onnxferry.ci import install_command

    folder = tmp_path / "bert-topics"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    assert "onnxferry[hf,optimize," in install_command(str(folder))
    (folder / "model.ckpt.meta").write_bytes(b"")  # a TF1 checkpoint beside its settings
    assert "onnxferry[tf,optimize," in install_command(str(folder))
    assert "onnxferry[tf,optimize," in install_command(str(tmp_path))
    assert "onnxferry[torch,optimize," in install_command("model.py:build")

"""Promotion gates (signature, golden, parity, latency), forced promotions, racing promotions,
trusted keys and version diffs, on tiny real models in a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.data import save_test_case
from onnxferry.errors import InputError
from onnxferry.graphs import set_metadata
from onnxferry.model import Model
from onnxferry.optimize.budget import MODEL_KEY as BUDGET_KEY
from onnxferry.parity import Tolerance
from onnxferry.registry import Registry
from onnxferry.registry.diff import diff
from onnxferry.registry.gates import (
    PromotionResult,
    apply_promotion,
    promote,
    run_gates,
    signature_gate,
)
from onnxferry.registry.sidebyside import batch_one
from onnxferry.registry.trust import trust, trusted_keys
from onnxferry.runtime import OrtRunner
from onnxferry.signing import generate_keys
from tests.helpers import Run, mlp, save

ROUNDS = 3  # interleaved latency rounds: enough for a 100x slowdown, quick on shared cores
X = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("other-keys"))


def slow_mlp() -> onnx.ModelProto:
    """The helpers' mlp with the same outputs plus a chain of 128x128 MatMuls on zeros that
    depend on the input (so nothing folds them away): far slower, exactly equal."""
    proto = mlp()
    graph = proto.graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    softmax.output[0] = "p0"
    rng = np.random.default_rng(3)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([128, 128], np.int64), "square"),
            numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), "w_big"),
        ]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Expand", ["z", "square"], ["m0"]),
    ]
    for k in range(8):
        nodes.append(helper.make_node("MatMul", [f"m{k}", "w_big"], [f"m{k + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", ["m8"], ["r"], keepdims=0),
        helper.make_node("Add", ["p0", "r"], ["probs"]),
    ]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def model_with_golden(
    proto: onnx.ModelProto, folder: Path, *, expected: onnx.ModelProto | None = None
) -> tuple[Path, Path]:
    """``folder/model.onnx`` and ``folder/golden/test_data_set_0`` holding X and the outputs
    of ``expected`` (default: the model itself) on it."""
    path = save(proto, folder / "model.onnx")
    reference = path if expected is None else save(expected, folder / "expected" / "model.onnx")
    outputs = OrtRunner(Model.load(reference)).run({"x": X})
    save_test_case(folder / "golden" / "test_data_set_0", {"x": X}, outputs)
    return path, folder / "golden"


def add(
    reg: Registry,
    tmp: Path,
    proto: onnx.ModelProto,
    *,
    sign: Path | None,
    golden: bool = True,
    expected: onnx.ModelProto | None = None,
) -> int:
    folder = tmp / f"src{len(reg.versions())}"
    path, golden_dir = model_with_golden(proto, folder, expected=expected)
    record = reg.add(path, "mlp", golden=golden_dir if golden else None, sign_key=sign)
    return record.version


def registry_with_production(tmp: Path, keys: tuple[Path, Path]) -> Registry:
    """A registry whose mlp:1 (signed, with golden data) holds mlp@production."""
    reg = Registry.open(tmp / "reg", create=True)
    add(reg, tmp, mlp(), sign=keys[0])
    first = promote(reg, "mlp:1", "production", public_key=keys[1], rounds=ROUNDS)
    assert first.ok, first.to_text()
    return reg


def gates_of(result: PromotionResult) -> dict[str, bool]:
    return {g.name: g.ok for g in result.gates}


# --- promotion -------------------------------------------------------------------------------


def test_promotion_runs_every_gate_and_records_the_report(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    add(reg, tmp_path, mlp(), sign=keys[0])
    trust(reg, keys[1])
    first = promote(reg, "mlp:1", "production", reason="first release", rounds=ROUNDS)
    assert first.ok, first.to_text()
    assert "nothing to compare with" in first.result.gates[2].detail  # no holder yet

    add(reg, tmp_path, mlp(), sign=keys[0])  # the same weights again: v2
    # identical models: a generous limit keeps shared-core noise from failing the gate
    report = promote(reg, "mlp:2", "production", max_slowdown=1.0, rounds=ROUNDS)
    assert report.ok, report.to_text()
    assert gates_of(report.result) == dict.fromkeys(
        ("signature", "golden", "parity", "latency"), True
    )
    assert reg.get("mlp@production").version == 2

    change = reg.history("mlp", "production")[-1]
    assert (change.version, change.previous, change.action) == (2, 1, "promote")
    assert change.gates is not None and change.gates["passed"] is True
    latency = next(g for g in change.gates["gates"] if g["name"] == "latency")
    assert latency["figures"]["rounds"] == ROUNDS
    assert latency["figures"]["reference"] == "mlp:1"
    assert latency["figures"]["shapes"] == {"x": [1, 4]}  # the golden batch of 3 cut to 1
    parity = next(g for g in change.gates["gates"] if g["name"] == "parity")
    assert parity["figures"]["max_abs"] == 0.0
    assert "trusted key" in change.gates["gates"][0]["detail"]
    assert "registry promote: ok" in report.to_text()

    staged = promote(reg, "mlp@production", "staging", rounds=ROUNDS)  # by alias
    assert staged.ok and reg.aliases("mlp") == {"production": 2, "staging": 2}


def test_unsigned_candidate_is_refused_through_the_cli(
    ferry: Run, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = registry_with_production(tmp_path, keys)
    add(reg, tmp_path, mlp(), sign=None)
    code, out, err = ferry(
        "registry", "promote", "mlp:2", "--to", "production", "--registry", reg.path,
        "--public-key", keys[1], "--max-slowdown", "5", "--json",
    )  # fmt: skip
    assert code == 1, err
    data = json.loads(out)
    gates = {g["name"]: g for g in data["result"]["gates"]}
    assert gates["signature"]["ok"] is False
    assert "unsigned" in gates["signature"]["detail"]
    assert gates["golden"]["ok"] and gates["parity"]["ok"] and gates["latency"]["ok"]
    assert data["result"]["promoted"] is False
    assert reg.aliases("mlp") == {"production": 1}
    assert len(reg.history("mlp")) == 1  # a refusal writes no history row


def test_signature_gate_needs_the_right_key(
    tmp_path: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    add(reg, tmp_path, mlp(), sign=keys[0])
    record = reg.get("mlp:1")

    none = signature_gate(reg, record, None)
    assert not none.ok and "ferry registry trust" in none.detail
    wrong = signature_gate(reg, record, other_keys[1])
    assert not wrong.ok and "does not verify" in wrong.detail
    assert signature_gate(reg, record, keys[1]).ok

    trust(reg, other_keys[1])
    untrusted = signature_gate(reg, record, None)
    assert not untrusted.ok and "none of the 1 trusted key" in untrusted.detail
    trust(reg, keys[1])
    trusted = signature_gate(reg, record, None)
    assert trusted.ok and trusted.figures["fingerprint"] == trusted_keys(reg)[1].fingerprint

    report = promote(reg, "mlp:1", "production", public_key=other_keys[1], rounds=ROUNDS)
    assert not report.ok and gates_of(report.result)["signature"] is False
    assert reg.aliases("mlp") == {}


def test_golden_gate_fails_without_golden_data_or_on_wrong_outputs(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    trust(reg, keys[1])
    add(reg, tmp_path, mlp(), sign=keys[0], golden=False)
    add(reg, tmp_path, mlp(), sign=keys[0], expected=mlp(seed=5))  # golden from other weights

    missing = promote(reg, "mlp:1", "staging", rounds=ROUNDS).result
    assert gates_of(missing) == {"signature": True, "golden": False, "parity": True,
                                 "latency": True}  # fmt: skip
    assert "--golden" in missing.gates[1].detail
    wrong = promote(reg, "mlp:2", "staging", rounds=ROUNDS).result
    assert not wrong.gates[1].ok and "0/1 golden sets pass" in wrong.gates[1].detail
    assert reg.aliases("mlp") == {}


def test_golden_gate_judges_an_optimized_version_at_the_budget_it_was_admitted_at(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """A version whose outputs moved within optimize's accuracy budget (weights nudged by 2 %,
    as a pruned or int8 layer moves them) fails golden data at atol 1e-4: ``ferry ci``'s own
    pipeline optimized within --max-drop 0.01 and then refused the release. With the budget
    the gate passes, saying both figures; a tighter budget still refuses it."""
    from onnxferry.optimize.budget import Budget

    reg = Registry.open(tmp_path / "reg", create=True)
    trust(reg, keys[1])
    add(reg, tmp_path, mlp(noise=0.02), sign=keys[0], expected=mlp())
    strict = promote(reg, "mlp:1", "staging", rounds=ROUNDS).result
    assert not strict.gates[1].ok and "0/1 golden sets pass" in strict.gates[1].detail
    tight = promote(reg, "mlp:1", "staging", rounds=ROUNDS, budget=Budget.from_max_drop(1e-6))
    assert (
        not tight.result.gates[1].ok
        and "outside the accuracy budget" in tight.result.gates[1].detail
    )
    admitted = promote(reg, "mlp:1", "staging", rounds=ROUNDS, budget=Budget.from_max_drop(0.01))
    golden = admitted.result.gates[1]
    assert golden.ok and "0/1 golden sets pass" in golden.detail, golden
    assert "within the accuracy budget cosine>=0.99 (cosine 0.99" in golden.detail, golden
    assert reg.aliases("mlp") == {"staging": 1}


def optimized(proto: onnx.ModelProto, budget: str) -> onnx.ModelProto:
    """``proto`` marked as ``optimize`` marks a model it changed within ``budget``."""
    set_metadata(proto, {BUDGET_KEY: budget})
    return proto


def test_a_lossy_release_replacing_a_lossy_release_is_judged_at_its_recorded_budget(
    ferry: Run, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """``ferry ci``'s second release: mlp:1, optimized within cosine>=0.99 (weights moved 2 %),
    holds staging; mlp:2, moved 2 % the other way, replaces it. Both miss their golden data
    at atol 1e-4 and mlp:2 misses mlp:1's outputs; each is judged at the budget it recorded
    (its lineage), so both pass without --max-drop on the command line. A version that keeps
    to its golden data but strays from the holder's outputs past its budget is refused, and
    so is every lossy one with --tolerance-only."""
    reg = Registry.open(tmp_path / "reg", create=True)
    trust(reg, keys[1])
    add(reg, tmp_path, optimized(mlp(noise=0.02), "cosine>=0.99"), sign=keys[0], expected=mlp())
    assert reg.get("mlp:1").lineage["budget"] == "cosine>=0.99"
    first = promote(reg, "mlp:1", "staging", rounds=ROUNDS)
    assert first.ok, first.to_text()
    assert (first.result.budget, first.result.budget_from) == ("cosine>=0.99", "lineage")
    assert "within the accuracy budget cosine>=0.99" in first.result.gates[1].detail
    assert any("mlp:1 was optimized within" in note for note in first.notes)

    add(reg, tmp_path, optimized(mlp(noise=-0.02), "cosine>=0.99"), sign=keys[0], expected=mlp())
    second = run_gates(reg, "mlp:2", "staging", max_slowdown=5, rounds=ROUNDS)
    assert second.passed, [g.detail for g in second.gates]
    parity = second.gates[2]
    assert "against mlp:1 within the accuracy budget cosine>=0.99" in parity.detail, parity
    assert 0.99 <= parity.figures["cosine"] < 1
    strict = run_gates(reg, "mlp:2", "staging", max_slowdown=5, rounds=ROUNDS,
                       lineage_budget=False)  # fmt: skip
    assert gates_of(strict) == {"signature": True, "golden": False, "parity": False,
                                "latency": True}  # fmt: skip
    assert strict.budget is None

    # cosine 0.99997 against the original, 0.99988 against mlp:1's outputs
    add(reg, tmp_path, optimized(mlp(noise=-0.02), "cosine>=0.9999"), sign=keys[0],
        expected=mlp())  # fmt: skip
    strays = run_gates(reg, "mlp:3", "staging", max_slowdown=5, rounds=ROUNDS)
    assert gates_of(strays) == {"signature": True, "golden": True, "parity": False,
                                "latency": True}  # fmt: skip
    assert "outside the accuracy budget cosine>=0.9999" in strays.gates[2].detail

    cli = ("registry", "promote", "mlp:3", "--to", "staging", "--registry", reg.path,
           "--max-slowdown", "5")  # fmt: skip
    code, _, err = ferry(*cli, "--max-drop", "0.01", "--tolerance-only")
    assert code == 2 and "give one of them" in err, err
    code, _, err = ferry(*cli, "--budget", "accuracy-drop<=0.01")
    assert code == 2 and "needs labelled data" in err, err
    code, out, err = ferry(*cli, "--budget", "cosine>=0.999", "--json")  # given beats lineage
    assert code == 0, out + err
    assert json.loads(out)["result"]["budget_from"] == "given"
    assert reg.aliases("mlp") == {"staging": 3}


@pytest.mark.parametrize(
    ("recorded", "note"),
    [
        ("accuracy-drop<=0.01", "needs labelled data, which golden sets lack"),
        ("cosine>>0.99", "names a budget ferry cannot read"),
    ],
)
def test_a_recorded_budget_the_gates_cannot_use_leaves_the_tolerance_with_a_note(
    tmp_path: Path, keys: tuple[Path, Path], recorded: str, note: str
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    trust(reg, keys[1])
    add(reg, tmp_path, optimized(mlp(noise=0.02), recorded), sign=keys[0], expected=mlp())
    result = run_gates(reg, "mlp:1", "staging", rounds=ROUNDS)
    assert not gates_of(result)["golden"] and result.budget is None
    assert any(note in n for n in result.notes), result.notes


def test_parity_gate_fails_for_other_weights_and_force_is_recorded(
    ferry: Run, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = registry_with_production(tmp_path, keys)
    add(reg, tmp_path, mlp(noise=0.5), sign=keys[0])  # its own golden data: that gate passes

    refused = promote(reg, "mlp:2", "production", public_key=keys[1], max_slowdown=5,
                      rounds=ROUNDS)  # fmt: skip
    assert not refused.ok
    assert gates_of(refused.result) == {"signature": True, "golden": True, "parity": False,
                                        "latency": True}  # fmt: skip
    assert "worst output 'probs'" in refused.result.gates[2].detail
    assert "refused: parity failed" in refused.to_text()

    code, out, err = ferry(
        "registry", "promote", "mlp:2", "--to", "production", "--registry", reg.path,
        "--public-key", keys[1], "--max-slowdown", "5", "--force", "--reason", "retrained",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["result"]["forced"] is True
    change = reg.history("mlp", "production")[-1]
    assert (change.version, change.previous, change.action) == (2, 1, "force")
    assert change.reason == "retrained"
    assert change.gates is not None and change.gates["passed"] is False
    assert [g["name"] for g in change.gates["gates"] if not g["ok"]] == ["parity"]
    assert reg.get("mlp@production").version == 2


def test_latency_gate_fails_for_a_much_slower_candidate(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = registry_with_production(tmp_path, keys)
    add(reg, tmp_path, slow_mlp(), sign=keys[0])

    result = run_gates(reg, "mlp:2", "production", public_key=keys[1], max_slowdown=0.5,
                       rounds=ROUNDS)  # fmt: skip
    assert gates_of(result) == {"signature": True, "golden": True, "parity": True,
                                "latency": False}  # fmt: skip
    assert result.latency is not None and result.latency.ratio > 3
    latency = result.gates[3]
    assert latency.figures["candidate_p50_ms"] > latency.figures["reference_p50_ms"]
    assert "over the 1.50x limit" in latency.detail
    unchanged = apply_promotion(reg, result)
    assert unchanged.change is None and not unchanged.ok
    assert reg.aliases("mlp") == {"production": 1} and len(reg.history("mlp")) == 1


def test_racing_promotions_the_second_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    reg = registry_with_production(tmp_path, keys)
    add(reg, tmp_path, mlp(), sign=keys[0])
    add(reg, tmp_path, mlp(), sign=keys[0])
    slow = run_gates(reg, "mlp:2", "production", public_key=keys[1], max_slowdown=5,
                     rounds=ROUNDS)  # fmt: skip
    assert slow.passed and slow.previous == 1
    won = promote(reg, "mlp:3", "production", public_key=keys[1], max_slowdown=5, rounds=ROUNDS)
    assert won.ok
    with pytest.raises(InputError, match=r"changed while this ran \(now 3, was 1\)"):
        apply_promotion(reg, slow)
    assert reg.get("mlp@production").version == 3
    assert [c.version for c in reg.history("mlp", "production")] == [1, 3]


def test_encrypted_version_passes_its_gates_with_its_key(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    path, golden = model_with_golden(mlp(), tmp_path / "src")
    secret = bytes(range(32))
    reg.add(path, "mlp", golden=golden, sign_key=keys[0], encrypt_key=secret)
    report = promote(reg, "mlp:1", "staging", public_key=keys[1], key=secret, rounds=ROUNDS)
    assert report.ok, report.to_text()
    with pytest.raises(InputError, match="cannot decrypt"):
        promote(reg, "mlp:1", "production", public_key=keys[1], key=bytes(32), rounds=ROUNDS)
    assert reg.aliases("mlp") == {"staging": 1}


def test_bad_alias_or_slowdown_is_a_usage_error(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    add(reg, tmp_path, mlp(), sign=keys[0])
    with pytest.raises(InputError, match="not an alias name"):
        run_gates(reg, "mlp:1", "no/slash")
    with pytest.raises(InputError, match="max slowdown"):
        run_gates(reg, "mlp:1", "production", max_slowdown=-0.1)


def test_batch_one_cuts_only_batch_axes(tmp_path: Path) -> None:
    model = Model.load(save(mlp(), tmp_path / "model.onnx"))
    assert batch_one(model, {"x": X})["x"].shape == (1, 4)
    np.testing.assert_array_equal(batch_one(model, {"x": X})["x"][0], X[0])


# --- trusted keys --------------------------------------------------------------------------


def test_trust_cli_adds_once_lists_and_removes(
    ferry: Run, tmp_path: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    where = tmp_path / "reg"
    code, out, err = ferry("registry", "trust", keys[1], "--registry", where, "--json")
    assert code == 0, err
    first = json.loads(out)["result"]["trusted_keys"]
    assert len(first) == 1 and len(first[0]["fingerprint"]) == 64
    ferry("registry", "trust", keys[1], "--registry", where)  # trusted once
    code, out, err = ferry("registry", "trust", other_keys[1], "--registry", where)
    assert code == 0, err
    reg = Registry.open(where)
    assert len(trusted_keys(reg)) == 2
    assert first[0]["fingerprint"] in out  # the listing shows both

    fingerprint = first[0]["fingerprint"]
    code, _, err = ferry("registry", "trust", "--remove", fingerprint[:12], "--registry", where)
    assert code == 0, err
    (left,) = trusted_keys(reg)
    assert left.fingerprint != fingerprint and left.fingerprint in out

    code, _, err = ferry("registry", "trust", keys[0], "--registry", where)  # a private key
    assert code == 2 and "not a PEM public key" in err
    code, _, err = ferry("registry", "trust", "--remove", "deadbeef00", "--registry", where)
    assert code == 2 and "is not the registry's trusted keys" in err


# --- diff ----------------------------------------------------------------------------------


def test_diff_shows_operators_parity_and_latency(
    ferry: Run, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    add(reg, tmp_path, mlp(), sign=keys[0])
    add(reg, tmp_path, slow_mlp(), sign=None)
    add(reg, tmp_path, mlp(noise=0.5), sign=keys[0])

    code, out, err = ferry("registry", "diff", "mlp:1", "mlp:2", "--registry", reg.path,
                           "--public-key", keys[1], "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)["result"]
    changed = {c["op"]: (c["a"], c["b"]) for c in result["ops_changed"]}
    assert changed["MatMul"] == (2, 10) and changed["Expand"] == (0, 1)
    assert "Relu" not in changed
    assert result["a"]["signature_ok"] is True and result["b"]["signature_ok"] is False
    assert "unsigned" in result["b"]["signature"]
    assert result["parity"]["ok"] is True and result["inputs"] == "mlp:1's golden inputs"
    assert result["latency"]["ratio"] > 1
    assert result["a"]["size"] < result["b"]["size"]

    differs = diff(reg, "mlp:1", "mlp:3", latency=False, tolerance=Tolerance(atol=1e-6))
    assert not differs.ok and differs.result.latency is None
    assert differs.result.ops_changed == []
    assert differs.result.a.signature == "signed (not checked: no key)"
    assert "operators that differ" not in differs.to_text()
    code, _, _ = ferry("registry", "diff", "mlp:1", "mlp:3", "--registry", reg.path,
                       "--no-latency")  # fmt: skip
    assert code == 1

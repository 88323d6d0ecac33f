"""Energy per inference from RAPL counters and cost per million inferences, in every report.

The counters are read from files: a powercap tree written under tmp_path stands in for
/sys/class/powercap (which VMs and containers, this one included, often lack), with the same
layout and the same files; the machine's own counters are read when they can be.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from onnxferry.bench import Progress, bench_models
from onnxferry.energy import POWERCAP, EnergyMeter, Rapl
from onnxferry.errors import UsageError
from tests.helpers import Run, mlp, save

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def powercap(root: Path, packages: int = 1, start_uj: int = 1_000_000) -> Path:
    """A powercap tree: package zones with a core subzone, a psys zone and an MMIO duplicate
    (none of which may be counted twice)."""
    zones = {f"intel-rapl:{k}": f"package-{k}" for k in range(packages)}
    zones |= {"intel-rapl:0:0": "core", f"intel-rapl:{packages}": "psys"}
    zones |= {"intel-rapl-mmio:0": "package-0"}
    for zone, name in zones.items():
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text(f"{start_uj}\n")
        (root / zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return root


def set_uj(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def add_uj(root: Path, zone: str, delta: int) -> None:
    value = int((root / zone / "energy_uj").read_text()) + delta
    set_uj(root, zone, value % MAX_UJ)


def test_rapl_sums_the_package_zones_over_a_block(tmp_path: Path) -> None:
    root = powercap(tmp_path / "powercap", packages=2)
    rapl = Rapl.find(root)
    assert rapl.unavailable is None
    assert [d.name for d in rapl.domains] == ["package-0", "package-1"]
    assert "RAPL package-0, package-1 (package-wide" in rapl.describe()
    with EnergyMeter(rapl) as meter:
        add_uj(root, "intel-rapl:0", 2_500_000)
        add_uj(root, "intel-rapl:1", 500_000)
        add_uj(root, "intel-rapl:0:0", 9_000_000)  # core: inside package-0 already
        add_uj(root, "intel-rapl:2", 9_000_000)  # psys: the platform, package included
        add_uj(root, "intel-rapl-mmio:0", 9_000_000)  # the same package through MMIO
    assert meter.joules == pytest.approx(3.0)


def test_a_counter_that_wraps_is_unwrapped(tmp_path: Path) -> None:
    root = powercap(tmp_path / "powercap", start_uj=MAX_UJ - 400_000)
    with EnergyMeter(Rapl.find(root)) as meter:
        set_uj(root, "intel-rapl:0", 600_000)  # past the top: 400_000 + 600_000
    assert meter.joules == pytest.approx(1.0)


def test_unavailable_says_why(tmp_path: Path) -> None:
    absent = Rapl.find(tmp_path / "nothing")
    assert absent.describe() == (
        f"unavailable (no RAPL counters: {tmp_path / 'nothing'} does not exist)"
    )
    with EnergyMeter(absent) as meter:
        pass
    assert meter.joules is None

    empty = tmp_path / "empty"
    (empty / "intel-rapl:0").mkdir(parents=True)
    (empty / "intel-rapl:0" / "name").write_text("psys\n")
    assert Rapl.find(empty).unavailable == f"no RAPL package domain under {empty}"

    broken = powercap(tmp_path / "broken")
    (broken / "intel-rapl:0" / "energy_uj").write_text("not a number\n")
    assert (Rapl.find(broken).unavailable or "").startswith(
        f"cannot read {broken / 'intel-rapl:0'}"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_root_only_counter_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    root = powercap(tmp_path / "powercap")
    (root / "intel-rapl:0" / "energy_uj").chmod(0)  # as Linux 5.10 on leaves it to others
    assert "permission denied reading" in Rapl.find(root).describe()


def test_this_machines_counters_when_it_has_them() -> None:
    rapl = Rapl.find(POWERCAP)
    if rapl.unavailable is not None:
        pytest.skip(f"energy here: {rapl.describe()}")
    with EnergyMeter(rapl) as meter:
        sum(i * i for i in range(2_000_000))
    assert meter.joules is not None and meter.joules > 0


def test_bench_counts_the_energy_of_the_timed_window_and_prices_it(tmp_path: Path) -> None:
    """Each progress report from inside the timed loop adds 1 J to the package's counter; the
    report at 0 requests comes before the session (outside the window) and must not count."""
    root = powercap(tmp_path / "powercap")
    inside: list[int] = []

    def burn(p: Progress) -> None:
        add_uj(root, "intel-rapl:0", 1_000_000)
        if p.done > 0:
            inside.append(p.index)

    model = save(mlp(), tmp_path / "m.onnx")
    report = bench_models(
        [model],
        batches=(1, 2),
        iterations=40,
        warmup=2,
        progress=burn,
        powercap=root,
        price_per_hour=3.6,
    )
    suite = report.result
    assert suite.energy.startswith("RAPL package-0 (package-wide")
    for index, row in enumerate(suite.results, 1):
        assert inside.count(index) >= 1  # the loop reports once more as it ends
        assert row.energy_j == pytest.approx(inside.count(index) * 1.0)
        assert row.energy_per_inference_j == pytest.approx(inside.count(index) / row.iterations)
        expected = 3.6 / (row.inferences_per_s * 3600) * 1e6
        assert row.cost_per_million_inferences == pytest.approx(expected)
        assert row.cost_per_million_samples == pytest.approx(expected / row.batch)
    table = suite.tables()[0]
    assert {"J/inference", "USD/M inferences"} <= set(table.columns)
    data = json.loads(report.to_json())["result"]
    assert data["energy"] == suite.energy and data["cost"] == "at 3.6 USD per hour"
    first = data["results"][0]
    assert first["energy_j"] == suite.results[0].energy_j and first["price_per_hour"] == 3.6
    header = suite.to_csv().splitlines()[0].split(",")
    assert {"energy_per_inference_j", "cost_per_million_inferences"} <= set(header)
    text = report.to_text()
    assert "note: cost: at 3.6 USD per hour" in text
    assert f"note: energy: {suite.energy}" in text


def test_bench_without_counters_or_price_says_both_are_unavailable(tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    report = bench_models([model], iterations=20, warmup=1, powercap=tmp_path / "none")
    suite = report.result
    row = suite.results[0]
    assert row.energy_j is None and row.energy_per_inference_j is None
    assert row.cost_per_million_inferences is None
    text = report.to_text()
    assert f"energy: unavailable (no RAPL counters: {tmp_path / 'none'} does not exist)" in text
    assert "note: cost: unavailable (give --price-per-hour)" in text
    assert "J/inference" not in suite.tables()[0].columns
    data = json.loads(report.to_json())["result"]
    assert data["results"][0]["energy_per_inference_j"] is None
    assert data["cost"] == "unavailable (give --price-per-hour)"


def test_cli_price_per_hour(tmp_path: Path, ferry: Run) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    code, out, err = ferry("bench", model, "--iterations", "10", "--price-per-hour", "2", "--json")
    assert code == 0, err
    row = json.loads(out)["result"]["results"][0]
    assert row["cost_per_million_inferences"] == pytest.approx(
        2 / (row["inferences_per_s"] * 3600) * 1e6
    )
    code, _, err = ferry("bench", model, "--price-per-hour", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "more than 0" in err
    code, _, err = ferry(
        "bench", "--url", "http://127.0.0.1:9", "--model", "m", "--price-per-hour", "2"
    )
    assert code == 2 and "--price-per-hour" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="price per hour"):
        bench_models([model], price_per_hour=-1)

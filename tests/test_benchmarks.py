"""The quick benchmark runs end to end and writes its three outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_accuracy_benchmark_writes_table_json_and_plot(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--quick", "--no-progress",
         "--out-dir", str(tmp_path)],
        check=True, cwd=ROOT, timeout=600,
    )
    table = (tmp_path / "accuracy_quick.md").read_text()
    assert "distilled" in table and "k-center" in table
    result = json.loads((tmp_path / "accuracy_quick.json").read_text())
    assert result["meta"]["versions"]["torch"]
    records = {r["method"]: r for r in result["results"]["digits"]["records"]}
    assert set(records) == {"distilled", "random", "means", "kmeans", "herding", "kcenter"}
    for r in records.values():
        assert len(r["learned_recipe"]) >= 5 and len(r["standard_training"]) >= 5
        assert all(0.0 <= a <= 1.0 for a in r["learned_recipe"] + r["standard_training"])
    assert (tmp_path / "accuracy_quick.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_scaling_benchmark_writes_table_json_and_plot(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--no-progress",
         "--out-dir", str(tmp_path)],
        check=True, cwd=ROOT, timeout=600,
    )
    result = json.loads((tmp_path / "scaling_quick.json").read_text())
    rates = result["iterations_per_second"]
    assert set(rates) == {"1", "2"} and all(r > 0 for r in rates.values())
    assert "speed-up" in (tmp_path / "scaling_quick.md").read_text()
    assert (tmp_path / "scaling_quick.png").stat().st_size > 1000

"""The quick speed benchmark runs end to end and writes its three outputs."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_speed_benchmark_writes_table_json_and_plot(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--no-progress",
         "--out-dir", str(tmp_path)],
        check=True, cwd=ROOT, timeout=120, env=env,
    )
    table = (tmp_path / "speed_quick.md").read_text()
    assert "naive (it/s)" in table and "Peak memory" in table
    result = json.loads((tmp_path / "speed_quick.json").read_text())
    assert result["meta"]["versions"]["torch"]
    block = result["results"]["digits_mlp"]
    assert ([(r["n_inits"], r["n_steps"]) for r in block["timing"]]
            == [(1, 10), (4, 10), (4, 30)])
    for record in block["timing"]:
        variants = record["variants"]
        assert variants["naive"]["speedup"] == 1.0
        for name in ["batched", "vmap", "loop", "batched+ckpt", "vmap+ckpt", "loop+ckpt",
                     "batched+bf16", "vmap+bf16", "loop+bf16"]:
            info = variants[name]
            # Same problem, same θ0: the float32 variants give the naive gradient.
            tolerance = 5e-2 if "bf16" in name else 1e-4
            assert info["grad_rel_error"] < tolerance, (name, info["grad_rel_error"])
            # Sane, not fast: a ratio far outside this range means a broken measurement.
            assert 0.05 < info["speedup"] < 100, (name, info["speedup"])
            assert 0.0 < info["flop_fraction"] < 10
    memory = {(m["variant"], m["n_steps"]): m["peak_mb"] for m in block["memory"]}
    # the MLP's default path (batched), with and without checkpointing
    assert set(memory) == {(v, t) for v in ["naive", "batched", "batched+ckpt"]
                           for t in (10, 40)}
    assert all(mb > 0 for mb in memory.values())
    # Every step's parameters kept grows with n_steps (4 draws x 40 steps x 77 kB = 12 MB
    # more); the naive reference keeps whole graphs.
    assert memory["batched", 40] > memory["batched", 10]
    assert memory["naive", 40] > memory["naive", 10]
    assert (tmp_path / "speed_quick.png").stat().st_size > 1000


def test_cuda_device_without_a_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--no-progress",
         "--device", "cuda", "--out-dir", str(tmp_path)],
        cwd=ROOT, timeout=120, capture_output=True, text=True,
    )
    assert done.returncode != 0
    assert "--device cuda:" in done.stderr and "CUDA is not available" in done.stderr
    assert not list(tmp_path.iterdir())


def test_interleaved_times_shuffles_the_order_of_the_variants_each_round(bench_script):
    speed = bench_script("speed")
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("naive", "a", "b")}
    times = speed.interleaved_times(fns, min_time=0, min_rounds=20, max_rounds=20)
    assert {k: len(v) for k, v in times.items()} == {"naive": 20, "a": 20, "b": 20}
    rounds = [tuple(calls[i:i + 3]) for i in range(0, 60, 3)]
    assert all(sorted(r) == ["a", "b", "naive"] for r in rounds)
    # no variant always runs right after the naive reference
    assert len({r.index("naive") for r in rounds}) == 3
    calls.clear()
    speed.interleaved_times(fns, min_time=0, min_rounds=5, max_rounds=5, shuffle=False)
    assert calls == ["naive", "a", "b"] * 5


def _compare(tmp_path, baseline, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--baseline", str(baseline),
         "--configs", "2x3", "--rounds", "2", "--min-call-time", "0", "--out-dir",
         str(tmp_path), *extra],
        cwd=ROOT, timeout=120, env=env, capture_output=True, text=True,
    )


def test_compare_times_a_checkout_against_itself(tmp_path):
    done = _compare(tmp_path, ROOT)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads((tmp_path / "compare.json").read_text())["records"]
    assert (record["n_inits"], record["n_steps"]) == (2, 3)
    assert record["max_rel_error"] == 0.0  # the same core gives the same bits
    assert set(record["ms"]) == {"baseline", "current", "naive"}
    assert all(ms > 0 for ms in record["ms"].values())
    assert "current speed-up" in (tmp_path / "compare.md").read_text()


def test_compare_refuses_cores_that_compute_different_gradients(tmp_path):
    # A baseline whose inner steps go uphill: not the same meta-gradient, so no timing.
    source = (ROOT / "skdistill" / "_unroll.py").read_text()
    patched = source.replace("alpha=neg_lr_values[t]", "alpha=-neg_lr_values[t]")
    assert patched != source
    (tmp_path / "skdistill").mkdir()
    (tmp_path / "skdistill" / "_unroll.py").write_text(patched)
    done = _compare(tmp_path, tmp_path)
    assert done.returncode != 0
    assert "the cores differ" in done.stderr
    assert not (tmp_path / "compare.json").exists()
    missing = _compare(tmp_path, tmp_path / "nowhere")
    assert missing.returncode != 0 and "--baseline: no skdistill/_unroll.py" in missing.stderr


def test_threads_variant_gives_the_loops_meta_gradient_and_closes_its_pool(bench_script):
    speed = bench_script("speed")
    w = speed.load_workload("digits_mlp", batch_size=32, ipc=1, seed=0)
    params0, leaves = speed.make_problem(w, 3, 4, 0.02, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loop_loss, loop_grads = speed.make_step("loop", w, 4)(params0, leaves)
        step = speed.make_step("loop+threads", w, 4)
        loss, grads = step(params0, leaves)
        step.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(loss, loop_loss)
    for g, r in zip(grads, loop_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
    assert not [t for t in threading.enumerate() if t.name.startswith("skdistill-draws")]


def test_momentum_variants_give_the_naive_heavy_ball_meta_gradient(bench_script):
    """--inner-momentum: the naive reference takes SGD's heavy-ball steps and every core
    variant, the hand-written MLP path included, gives its meta-gradient."""
    speed = bench_script("speed")
    w = speed.load_workload("digits_mlp", batch_size=32, ipc=1, seed=0)
    w["net"] = w["net"].double()
    for key in ("x_real", "x_syn", "y_syn"):
        w[key] = w[key].double()
    params0, leaves = speed.make_problem(w, 2, 5, 0.05, 0)
    params0 = {k: v.double() for k, v in params0.items()}
    leaves = [t.detach().double().requires_grad_() for t in leaves]
    plain_loss, plain_grads = speed.make_step("naive", w, 5)(params0, leaves)
    w["momentum"] = 0.9
    assert speed.applies("batched", w) and speed.applies("vmap", w)
    assert speed.default_variant(w, 2) == "batched"
    loss, grads = speed.make_step("naive", w, 5)(params0, leaves)
    # the momentum changes the steps: not the plain meta-gradient
    assert abs(float(loss - plain_loss)) > 1e-4
    assert speed.rel_error(grads, plain_grads) > 1e-2
    for name in ["batched", "vmap", "loop", "batched+ckpt", "vmap+ckpt", "loop+ckpt"]:
        v_loss, v_grads = speed.make_step(name, w, 5)(params0, leaves)
        assert abs(float(v_loss - loss)) < 1e-12, name
        for g, r in zip(v_grads, grads):  # float64 throughout
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-13, msg=name)


def test_momentum_option_is_checked_and_named_in_the_report(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--no-progress",
           "--out-dir", str(tmp_path)]
    bad = subprocess.run(cmd + ["--inner-momentum", "1"], cwd=ROOT, timeout=120, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--inner-momentum must be in [0, 1), got 1.0" in bad.stderr
    done = subprocess.run(
        cmd + ["--inner-momentum", "0.9", "--n-inits", "2", "--n-steps", "6",
               "--memory-steps", "0", "--variants", "batched", "vmap", "loop+ckpt",
               "--min-time", "0.05", "--name", "mom"],
        cwd=ROOT, timeout=120, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "heavy-ball step with momentum 0.9" in (tmp_path / "mom.md").read_text()
    result = json.loads((tmp_path / "mom.json").read_text())
    (record,) = result["results"]["digits_mlp"]["timing"]
    assert set(record["variants"]) == {"naive", "batched", "vmap", "loop+ckpt"}
    for name in ["vmap", "loop+ckpt"]:
        assert record["variants"][name]["grad_rel_error"] < 1e-4

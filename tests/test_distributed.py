"""fit under torch.distributed (gloo, 2 CPU processes) equals one process with all draws."""

import os
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skdistill import DatasetDistiller
from skdistill._process import exit_without_finalising

PARAMS = dict(max_iter=12, module_params={"hidden_layer_sizes": (16,)}, n_steps=3,
              random_state=0, validation_interval=4)


def _data():
    rng = np.random.RandomState(0)
    centers = rng.normal(0, 3, size=(3, 6))
    y = np.repeat(np.arange(3), 30)
    return centers[y] + rng.normal(0, 0.5, size=(90, 6)), y


def _init(rank, world, store):
    # a file store rather than tcp://: no port to find free and lose to another process
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


def _worker(rank, world, store, out, checkpoint):
    _init(rank, world, store)
    try:
        X, y = _data()
        d = DatasetDistiller(**PARAMS, n_inits=4,
                             checkpoint=checkpoint).fit(X, y)
        np.save(f"{out}-{rank}.npy", d.distilled_X_)
        np.save(f"{out}-{rank}-lr.npy", d.learned_lr_)
        dist.barrier()  # no rank leaves while another still works
    finally:
        dist.destroy_process_group()
    exit_without_finalising(0)  # a gloo thread could abort the finalisation


@pytest.mark.slow
def test_two_ranks_with_two_draws_equal_one_process_with_four(tmp_path):
    X, y = _data()
    single = DatasetDistiller(**PARAMS, n_inits=4).fit(X, y)

    out, ckpt = str(tmp_path / "ranks"), str(tmp_path / "run.ckpt")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), out, ckpt), nprocs=2, join=True)

    rank0, rank1 = np.load(f"{out}-0.npy"), np.load(f"{out}-1.npy")
    np.testing.assert_array_equal(rank0, rank1)  # every rank holds the same synthetic set
    np.testing.assert_allclose(rank0, single.distilled_X_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(f"{out}-0-lr.npy"), single.learned_lr_, rtol=1e-5)
    assert (tmp_path / "run.ckpt").exists()  # rank 0 wrote the checkpoint


def test_memmap_input_is_gathered_lazily(tmp_path):
    from skdistill.distiller import _Rows

    X, y = _data()
    path = tmp_path / "X.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    X_disk = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)

    rows = _Rows(X_disk, torch.as_tensor(y), np.arange(10, 90), torch.device("cpu"), lazy=True)
    assert rows.X is X_disk  # nothing copied: batches are read from the file when drawn
    x, t = rows.take(np.array([0, 5]))
    np.testing.assert_array_equal(x.numpy(), X_disk[[10, 15]])
    np.testing.assert_array_equal(t.numpy(), y[[10, 15]])

    from_disk = DatasetDistiller(**PARAMS, n_inits=2).fit(X_disk, y)
    in_memory = DatasetDistiller(**PARAMS, n_inits=2).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(from_disk.distilled_X_, in_memory.distilled_X_, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow
def test_command_line_distill_runs_under_torchrun(tmp_path):
    import subprocess

    out = tmp_path / "digits.skd"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun binds a free port itself (none to pick beforehand and lose)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "skdistill", "distill", "digits", "--max-iter", "5", "--n-inits", "4", "-v", "0",
         "--output", str(out)],
        cwd=tmp_path, env=env, timeout=300, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = DatasetDistiller.load(out)  # written once, by rank 0
    assert loaded.distilled_X_.shape == (10, 64) and loaded.n_iter_ == 5


class _RankLog:
    """A validation score that records which rank computed it."""

    def __init__(self, path):
        self.path = path

    def __call__(self, distiller, X, y):
        with open(f"{self.path}-{dist.get_rank()}.log", "a") as f:
            f.write("scored\n")
        return float(distiller.distilled_X_.sum())


def _scoring_worker(rank, world, store, out):
    _init(rank, world, store)
    try:
        X, y = _data()
        d = DatasetDistiller(**PARAMS, n_inits=4, validation_scoring=_RankLog(out)).fit(X, y)
        np.save(f"{out}-{rank}.npy", d.distilled_X_)
        np.save(f"{out}-{rank}-scores.npy", np.array(d.validation_scores_))
        dist.barrier()  # rank 0, which scores, finishes later
    finally:
        dist.destroy_process_group()
    exit_without_finalising(0)  # a gloo thread could abort the finalisation


@pytest.mark.slow
def test_only_rank_0_runs_the_validation_scoring(tmp_path):
    out = str(tmp_path / "ranks")
    mp.spawn(_scoring_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    # validation at iterations 0, 4, 8, 12, each scored once, by rank 0
    assert (tmp_path / "ranks-0.log").read_text().count("scored") == 4
    assert not (tmp_path / "ranks-1.log").exists()
    np.testing.assert_array_equal(np.load(f"{out}-0-scores.npy"),
                                  np.load(f"{out}-1-scores.npy"))
    np.testing.assert_array_equal(np.load(f"{out}-0.npy"), np.load(f"{out}-1.npy"))

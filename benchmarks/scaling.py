"""Outer iterations per second of DatasetDistiller.fit under torch.distributed.

The same fit (digits, MLP, ``--n-inits`` θ0 draws per iteration in all, validation off) runs
in 1 process and under N processes of the gloo backend on the CPU (or NCCL on N GPUs with
``--device cuda``); each rank builds its share of the draws and the gradients are summed with
one all_reduce per iteration. Writes ``scaling{_quick}.md/.json/.png`` under
benchmarks/results/.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skdistill._process import exit_without_finalising

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _fit_params(args):
    return dict(n_distilled=10, n_inits=args.n_inits, n_steps=args.n_steps,
                max_iter=args.max_iter, validation_fraction=0.0, random_state=0,
                device=args.device)


def _data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), y


def _timed_fit(args):
    from skdistill import DatasetDistiller

    X, y = _data()
    DatasetDistiller(**{**_fit_params(args), "max_iter": 2}).fit(X, y)  # warm-up
    start = time.perf_counter()
    d = DatasetDistiller(**_fit_params(args)).fit(X, y)
    return args.max_iter / (time.perf_counter() - start), d.distilled_X_


def _worker(rank, world, store, args, out):
    torch.set_num_threads(args.threads)
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    if backend == "nccl":
        os.environ["LOCAL_RANK"] = str(rank)
    # a file store rather than tcp://: no port to find free and lose to another process
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank,
                            world_size=world)
    try:
        rate, X_syn = _timed_fit(args)
        if rank == 0:
            np.save(out, np.array([rate]))
            np.save(out + "-X.npy", X_syn)
        dist.barrier()  # no rank leaves while another still works
    finally:
        dist.destroy_process_group()
    exit_without_finalising(0)  # a gloo thread could abort the interpreter's finalisation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI: 1 and 2 processes, 20 "
                        "iterations")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-inits", type=int, default=8, help="θ0 draws per iteration, in all")
    parser.add_argument("--n-steps", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU "
                        "per process)")
    parser.add_argument("--out-dir", default=str(_common.RESULTS_DIR))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_iter = min(args.max_iter, 20)
    torch.set_num_threads(args.threads)

    rates, sets = {}, {}
    bar = _common.progress(len(args.processes), "process counts", disable=args.no_progress)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            if n == 1:
                rates[n], sets[n] = _timed_fit(args)
            else:
                out = os.path.join(tmp, f"rate-{n}.npy")
                store = os.path.join(tmp, f"store-{n}")
                mp.spawn(_worker, args=(n, store, args, out), nprocs=n, join=True)
                rates[n], sets[n] = float(np.load(out)[0]), np.load(out + "-X.npy")
            bar.update(1)
    bar.close()

    meta = _common.stamp(torch.device(args.device))
    base = rates[args.processes[0]]
    max_diff = {n: float(np.abs(sets[n] - sets[args.processes[0]]).max())
                for n in args.processes}
    rows = [[n, f"{rates[n]:.2f}", f"{rates[n] / base:.2f}x", f"{max_diff[n]:.1e}"]
            for n in args.processes]
    md = "\n".join(["# Scaling of fit over processes (torch.distributed)", "",
                    *_common.stamp_lines(meta), "",
                    f"Digits, MLP, n_inits={args.n_inits} draws per iteration in all "
                    f"(split over processes), n_steps={args.n_steps}, "
                    f"{args.max_iter} iterations, "
                    f"{args.threads} torch thread(s) per process, validation off.", "",
                    _common.markdown_table(["processes", "iterations / s", "speed-up",
                                            "max |ΔX| vs 1 process"], rows)])
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(args.processes, [rates[n] for n in args.processes], marker="o")
    ax.set_xlabel("processes")
    ax.set_ylabel("outer iterations / s")
    ax.set_xticks(args.processes)
    name = "scaling_quick" if args.quick else "scaling"
    paths = _common.write_results(name, md, {"meta": meta, "config": vars(args),
                                             "iterations_per_second": rates,
                                             "max_abs_diff_vs_first": max_diff}, fig,
                                  out_dir=args.out_dir)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()

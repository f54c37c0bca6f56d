"""What running θ0 draws in parallel CPU threads buys a fit (``skdistill/_threads.py``).

The same ``DatasetDistiller`` fits run in one process, in alternating order, three ways:
as the library runs them (``threads``: looped draws of a small ConvNet in threads, a share of
torch's intra-op threads each), with the draw threads switched off (``serial``:
``skdistill._threads.ENABLED = False``, the draws in turn, every intra-op thread on each),
and in turn on a single torch thread (``one thread``, what the docs advised for small
networks before). Reported: seconds per outer iteration (from the callback of the first
iteration to that of the last, validation included, set-up left out), the ratios, and how
far apart the ``serial`` and ``threads`` sets are (the same arithmetic, the draws' gradients
summed in another order and kernels on other thread counts: float rounding, which an
unrolled fit amplifies).

``--threads`` must be at least 2 (the default): with one torch thread the library runs no
draw threads.

Writes ``threads{_quick}.md/.json/.png`` under ``--out-dir``.

Examples
--------
python benchmarks/threads.py --quick
python benchmarks/threads.py --workloads fashion_1ipc digits_lenet --rounds 2
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    FIT_WORKLOADS,
    alternating,
    load_fit_data,
    markdown_table,
    parse_timed_fit_args,
    progress,
    publish,
    seconds_per_iteration_figure,
    stamp_lines,
    start_run,
    timed_fit,
)

from skdistill import _threads  # noqa: E402

WORKLOADS = {k: FIT_WORKLOADS[k] for k in ("fashion_1ipc", "digits_lenet")}
# "one thread": the draws in turn on a single torch thread, what the docs advised for small
# networks before the draw threads
SETTINGS = ("serial", "threads", "one thread")


def parse_args(argv=None):
    return parse_timed_fit_args(__doc__, "threads", WORKLOADS, "digits_lenet", argv)


def timed(X, y, params, max_iter, setting):
    """Seconds per iteration and the fitted distiller, with or without draw threads."""
    made = []

    class Counted(_threads.DrawThreads):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self.n_threads)

    saved = _threads.ENABLED, _threads.DrawThreads, torch.get_num_threads()
    _threads.ENABLED, _threads.DrawThreads = setting == "threads", Counted
    if setting == "one thread":
        torch.set_num_threads(1)
    try:
        seconds, est = timed_fit(X, y, params, max_iter)
    finally:
        _threads.ENABLED, _threads.DrawThreads = saved[:2]
        torch.set_num_threads(saved[2])
    return seconds, est, made[0] if made else 0


def main(argv=None):
    args = parse_args(argv)
    if args.threads < 2:
        sys.exit("threads.py: --threads must be at least 2 (with one torch thread the library "
                 "runs no draw threads)")
    device, meta, config = start_run(args)
    rows, payload = [], {}
    bar = progress(len(SETTINGS) * args.rounds * len(args.workloads), "fits",
                   disable=args.no_progress)
    for name in args.workloads:
        what, dataset, params, n_iter = WORKLOADS[name]
        n_iter = args.max_iter or n_iter
        X, y = load_fit_data(dataset, args.data_home)
        runs = {s: [] for s in SETTINGS}
        fitted, n_threads = {}, {}
        for _, setting in alternating(SETTINGS, args.rounds):
            seconds, est, n = timed(X, y, params, n_iter, setting)
            runs[setting].append(seconds)
            fitted.setdefault(setting, est)
            n_threads[setting] = n
            bar.update(1)
        diff = float(np.abs(fitted["serial"].distilled_X_
                            - fitted["threads"].distilled_X_).max())
        scores = {s: fitted[s].best_validation_score_ for s in SETTINGS}
        median = {k: float(np.median(v)) for k, v in runs.items()}
        ratio = median["serial"] / median["threads"]
        ratio_one = median["one thread"] / median["threads"]
        payload[name] = {"description": what, "params": params, "max_iter": n_iter,
                         "seconds_per_iteration": runs, "draw_threads": n_threads,
                         "speedup": ratio, "speedup_over_one_thread": ratio_one,
                         "max_abs_diff_distilled_X": diff,
                         "best_validation_score": scores}
        rows.append([name, n_iter, n_threads["threads"],
                     " / ".join(f"{s:.3g}" for s in runs["serial"]),
                     " / ".join(f"{s:.3g}" for s in runs["threads"]),
                     " / ".join(f"{s:.3g}" for s in runs["one thread"]), f"{ratio:.2f}x",
                     f"{ratio_one:.2f}x", f"{diff:.1e}",
                     " / ".join(f"{scores[s]:.4f}" for s in SETTINGS)])
    bar.close()

    lines = ["# θ0 draws in parallel CPU threads: a fit with and without them", "",
             *stamp_lines(meta), "",
             f"Seconds per outer iteration of `DatasetDistiller.fit` (defaults otherwise, "
             f"validation included, seed 0, {args.threads} torch threads), each fit timed "
             "from its first iteration's callback to its last; the settings alternate "
             "in one process, round by round: `serial` (draws in turn), `threads` (the "
             "library's draw threads), `one thread` (draws in turn on one torch thread). "
             "Draw threads: how many the library started (0: none, the step was above "
             "`skdistill._threads.MAX_STEP_GFLOP`). Speed-ups: median serial, and median "
             "one thread, over median threads. Last columns: the largest difference between "
             "the serial and threads sets, and each fit's best validation accuracy.", "",
             markdown_table(["workload", "iterations", "draw threads", "serial (s/it)",
                             "threads (s/it)", "one thread (s/it)", "speed-up",
                             "over one thread", "max abs ΔX",
                             "validation: serial / threads / one thread"], rows), ""]
    lines += [f"- `{name}`: {WORKLOADS[name][0]}" for name in args.workloads]

    fig = seconds_per_iteration_figure(payload, args.workloads, SETTINGS)
    publish(args.name, "\n".join(lines), {"meta": meta, "config": config, "results": payload},
            fig, args.out_dir)


if __name__ == "__main__":
    main()

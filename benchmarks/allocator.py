"""What keeping freed memory for reuse buys a fit: glibc's default allocator against it.

The same ``DatasetDistiller`` fits run in one process, in alternating order: as they are
(glibc's default allocator; the library never changes it) and inside
:func:`skdistill._alloc.keep_freed_memory` (glibc's ``mallopt``: mmap off and a high trim
threshold, both put back when the block ends, as ``python -m skdistill`` and the benchmark
scripts set them for their whole process). Reported: seconds per outer iteration (from the
callback of the first iteration to that of the last, so set-up is left out), the ratio,
whether both ways distil the same set, and the resident memory after each fit. (After the
first "kept" fit the default ones run under the limits that the scope puts back, glibc's
defaults as its dynamic mmap threshold leaves them once large blocks have been freed.)

Writes ``allocator{_quick}.md/.json/.png`` under ``--out-dir``.

Examples
--------
python benchmarks/allocator.py --quick
python benchmarks/allocator.py --workloads fashion_1ipc fashion_10ipc --rounds 2
"""

import contextlib
import sys
from pathlib import Path

import numpy as np

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
    vm_kb,
)

from skdistill._alloc import keep_freed_memory, user_tuned  # noqa: E402

WORKLOADS = {k: FIT_WORKLOADS[k] for k in ("digits_mlp", "fashion_1ipc", "fashion_10ipc")}


def parse_args(argv=None):
    return parse_timed_fit_args(__doc__, "allocator", WORKLOADS, "digits_mlp", argv)


def timed(X, y, params, max_iter, setting):
    """Seconds per iteration, the distilled set, the RSS after the fit."""
    scope = keep_freed_memory() if setting == "kept" else contextlib.nullcontext(True)
    with scope as in_force:
        if not in_force:
            raise RuntimeError("keep_freed_memory() did not apply: is the C library glibc?")
        seconds, est = timed_fit(X, y, params, max_iter, validation_fraction=0.0,
                                 inner_lr_init=0.1)
    return seconds, est.distilled_X_, vm_kb("VmRSS") / 1024


def main(argv=None):
    args = parse_args(argv)
    if user_tuned():
        sys.exit("allocator.py: the environment tunes glibc's malloc (MALLOC_* or "
                 "GLIBC_TUNABLES); run it without, so that both settings can be compared")
    # no retain_freed_memory here: each fit is timed under one setting or the other
    device, meta, config = start_run(args)
    meta["allocator"] = "alternating: glibc's default / keep_freed_memory() around the fit"
    rows, payload = [], {}
    bar = progress(2 * args.rounds * len(args.workloads), "fits", disable=args.no_progress)
    for name in args.workloads:
        what, dataset, params, n_iter = WORKLOADS[name]
        n_iter = args.max_iter or n_iter
        X, y = load_fit_data(dataset, args.data_home)
        runs = {"default": [], "kept": []}
        sets, rss = {}, {"default": [], "kept": []}
        for _, setting in alternating(("default", "kept"), args.rounds):
            seconds, X_syn, mb = timed(X, y, params, n_iter, setting)
            runs[setting].append(seconds)
            rss[setting].append(mb)
            sets.setdefault(setting, X_syn)
            bar.update(1)
        diff = float(np.abs(sets["default"] - sets["kept"]).max())
        ratio = np.median(runs["default"]) / np.median(runs["kept"])
        payload[name] = {"description": what, "params": params, "max_iter": n_iter,
                         "seconds_per_iteration": runs, "rss_mb_after_fit": rss,
                         "speedup": ratio, "max_abs_diff_distilled_X": diff}
        rows.append([name, n_iter, " / ".join(f"{s:.3g}" for s in runs["default"]),
                     " / ".join(f"{s:.3g}" for s in runs["kept"]), f"{ratio:.2f}x",
                     f"{diff:.1e}",
                     f"{np.mean(rss['default']):.0f} / {np.mean(rss['kept']):.0f}"])
    bar.close()

    lines = ["# A fit's allocator: glibc's default against freed memory kept for reuse", "",
             *stamp_lines(meta), "",
             "Seconds per outer iteration of `DatasetDistiller.fit` (validation off, "
             "`inner_lr_init=0.1`, seed 0), each fit timed from its first iteration's callback "
             "to its last; the two settings alternate in one process, round by round. "
             "Speed-up: median default over median kept. The last columns: the largest "
             "difference between the two settings' distilled sets (the arithmetic is the "
             "same), and the resident memory after the fits returned (MB, mean).", "",
             markdown_table(["workload", "iterations", "default (s/it)", "kept (s/it)",
                             "speed-up", "max abs ΔX", "RSS after: default / kept"], rows),
             ""]
    lines += [f"- `{name}`: {WORKLOADS[name][0]}" for name in args.workloads]

    fig = seconds_per_iteration_figure(payload, args.workloads, ("default", "kept"), log=True)
    publish(args.name, "\n".join(lines), {"meta": meta, "config": config, "results": payload},
            fig, args.out_dir)


if __name__ == "__main__":
    main()

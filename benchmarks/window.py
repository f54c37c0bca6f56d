"""What truncated backpropagation (``backprop_window``) costs per iteration of a fit.

The same ``DatasetDistiller`` fit runs in one process, in alternating order, three ways:
differentiating a short unroll of ``S`` steps (``full S``), a long unroll of ``L`` steps of
which each iteration differentiates a window of ``S`` (``window S of L``: the unroll stops
after ``N`` steps, ``N`` drawn uniformly from ``S`` to ``L``, and only its last ``S`` are
differentiated), and the long unroll differentiated whole (``full L``). Reported: seconds
per outer iteration, timed from the first iteration's callback to the last's, without
validation (``validation_fraction=0``) and with a fixed initial step size, so that only
the meta-gradient is timed; and the ratios. ``memory="auto"`` applies as in any fit (it
checkpoints beyond 20 differentiated steps).

Writes ``window{_quick}.md/.json/.png`` under ``--out-dir``.

Examples
--------
python benchmarks/window.py --quick
python benchmarks/window.py --workloads fashion_10ipc_s40 --rounds 2 --threads 1
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
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

# name: (description, dataset, parameters, iterations, S, L)
WORKLOADS = {
    "digits_lenet": ("digits, LeNet, 10 images, 4 draws", "digits",
                     dict(n_distilled=10, module="lenet", input_shape=(1, 8, 8)), 20, 10, 20),
    "fashion_1ipc_s20": ("Fashion-MNIST, ConvNet 32x2, one image per class, 4 draws: the "
                         "default fit of the README", "fashion_mnist",
                         dict(n_distilled=10, module="convnet", input_shape=(1, 28, 28)),
                         12, 20, 40),
    "fashion_10ipc_s40": ("Fashion-MNIST, ConvNet 32x2, 100 images (ten per class), 1,024 real "
                          "images, 2 draws, learned labels: the 40-step ten-per-class fit "
                          "of the README", "fashion_mnist",
                          dict(n_distilled=100, module="convnet", input_shape=(1, 28, 28),
                               batch_size=1024, learn_labels=True, n_inits=2,
                               learning_rate=0.1), 6, 40, 80),
}


def settings_of(short, long):
    """Setting names and the distiller parameters of each."""
    return {
        f"full {short}": dict(n_steps=short),
        f"window {short} of {long}": dict(n_steps=long, backprop_window=short),
        f"full {long}": dict(n_steps=long),
    }


def parse_args(argv=None):
    return parse_timed_fit_args(__doc__, "window", WORKLOADS, "digits_lenet", argv)


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    rows, payload = [], {}
    bar = progress(3 * args.rounds * len(args.workloads), "fits", disable=args.no_progress)
    for name in args.workloads:
        what, dataset, params, n_iter, short, long = WORKLOADS[name]
        n_iter = args.max_iter or n_iter
        X, y = load_fit_data(dataset, args.data_home)
        settings = settings_of(short, long)
        runs = {s: [] for s in settings}
        for _, setting in alternating(list(settings), args.rounds):
            seconds, _ = timed_fit(X, y, {**params, **settings[setting]}, n_iter,
                                   validation_fraction=0.0, inner_lr_init=0.03)
            runs[setting].append(seconds)
            bar.update(1)
        median = {k: float(np.median(v)) for k, v in runs.items()}
        full_s, window, full_l = (median[s] for s in settings)
        payload[name] = {"description": what, "params": params, "max_iter": n_iter,
                         "short": short, "long": long, "seconds_per_iteration": runs,
                         "window_over_full_short": window / full_s,
                         "full_long_over_window": full_l / window}
        rows.append([name, n_iter, *(" / ".join(f"{t:.3g}" for t in runs[s]) for s in settings),
                     f"{window / full_s:.2f}x", f"{full_l / window:.2f}x"])
    bar.close()

    lines = ["# Truncated backpropagation: seconds per iteration with and without a window",
             "", *stamp_lines(meta), "",
             f"Seconds per outer iteration of `DatasetDistiller.fit` (seed 0, "
             f"{args.threads} torch thread(s), no validation, `inner_lr_init=0.03`), each fit "
             "timed from its first iteration's callback to its last; the settings alternate "
             "in one process, round by round: `full S` differentiates an S-step unroll, "
             "`window S of L` unrolls N steps (N uniform in S..L, drawn per iteration) and "
             "differentiates the last S (`backprop_window=S`, `n_steps=L`), `full L` "
             "differentiates the whole L-step unroll. Last columns: the window's time over "
             "`full S`'s, and `full L`'s over the window's (the window computes another, "
             "truncated, gradient than `full L`: a saving, not the same result faster).", "",
             markdown_table(["workload", "iterations", "full S (s/it)", "window S of L (s/it)",
                             "full L (s/it)", "window / full S", "speed-up: full L / window"],
                            rows), ""]
    lines += [f"- `{name}`: {WORKLOADS[name][0]}; S = {WORKLOADS[name][4]}, "
              f"L = {WORKLOADS[name][5]}" for name in args.workloads]

    fig = seconds_per_iteration_figure(
        {n: {"seconds_per_iteration": dict(zip(("full S", "window", "full L"),
                                               payload[n]["seconds_per_iteration"].values()))}
         for n in args.workloads},
        args.workloads, ("full S", "window", "full L"))
    publish(args.name, "\n".join(lines), {"meta": meta, "config": config, "results": payload},
            fig, args.out_dir)


if __name__ == "__main__":
    main()

"""Another checkout's meta-gradient core against this one, interleaved in one process.

On a shared CPU the ratios of two separate ``speed.py`` runs move by 5-10 % from run to run
(the naive reference's own speed changes with the machine's load), which hides a change of a
few percent in skdistill's core. This script loads the baseline's ``skdistill/_unroll.py``
(the meta-gradient core; the rest of the package, e.g. the networks, is this checkout's) as
``skdistill._unroll_baseline``, checks that both cores give the same loss and gradient (bit
for bit by default), and times baseline, current and ``speed.py``'s naive reference round by
round in a shuffled order. Reported: the median milliseconds per meta step of each, the
current core's speed-up over the baseline, and both ratios to naive.

Examples
--------
git worktree add /tmp/baseline <rev>
OMP_NUM_THREADS=1 python benchmarks/compare.py --baseline /tmp/baseline
OMP_NUM_THREADS=1 python benchmarks/compare.py --baseline /tmp/baseline \\
    --workload fashion_convnet --variant loop --configs 1x10
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402
from _common import HelpFormatter, markdown_table, positive_int, stamp, stamp_lines  # noqa: E402

from skdistill import _unroll  # noqa: E402


def load_baseline(checkout):
    """The ``_unroll`` module of another checkout, inside this package."""
    path = Path(checkout) / "skdistill" / "_unroll.py"
    if not path.is_file():
        raise SystemExit(f"--baseline: no skdistill/_unroll.py under {checkout}")
    spec = importlib.util.spec_from_file_location("skdistill._unroll_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkout_commit(checkout):
    """``git describe``-like stamp of the baseline checkout, or "unknown" outside git."""
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _config(text):
    try:
        n_inits, n_steps = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N_INITSxN_STEPS such as 4x10, got {text!r}") from None
    if n_inits < 1 or n_steps < 1:
        raise argparse.ArgumentTypeError(f"both counts must be positive, got {text!r}")
    return n_inits, n_steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--baseline", required=True, metavar="CHECKOUT",
                        help="root of the other checkout (e.g. a git worktree)")
    parser.add_argument("--workload", choices=["digits_mlp", "fashion_convnet"],
                        default="digits_mlp")
    # not the +threads variants: their DrawThreads runs this checkout's core on both sides
    parser.add_argument("--variant", default="batched",
                        choices=[v for v in speed.CORE_VARIANTS
                                 if v not in speed.OPT_IN_VARIANTS],
                        help="speed.py's core variant to time")
    parser.add_argument("--configs", nargs="+", type=_config, default=[(4, 10), (16, 10),
                                                                       (4, 50)],
                        metavar="DxT", help="θ0 draws x unrolled steps")
    parser.add_argument("--rounds", type=positive_int, default=15, help="timed rounds")
    parser.add_argument("--min-call-time", type=float, default=0.1,
                        help="each timed call repeats the meta step for at least this long "
                             "(seconds), so that short steps are not timer noise")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="largest relative gradient difference allowed between the two "
                             "cores (0: the same bits)")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="also write the table and the records there as "
                             "<name>.md and <name>.json")
    parser.add_argument("--name", default="compare", help="output file stem")
    return parser.parse_args(argv)


def _repeats(fn, min_time):
    """Calls of ``fn`` that take at least ``min_time`` seconds together (from one call)."""
    t0 = time.perf_counter()
    fn()
    return max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)) + 1)


def main(argv=None):
    args = parse_args(argv)
    baseline = load_baseline(args.baseline)
    torch.set_num_threads(1)
    w = speed.load_workload(args.workload, 256, 1, 0, args.data_home)
    if not speed.applies(args.variant, w):
        raise SystemExit(f"--variant {args.variant} does not apply to {args.workload}")
    rows, records = [], []
    for n_inits, n_steps in args.configs:
        params0, leaves = speed.make_problem(w, n_inits, n_steps, 0.2, 0)
        steps = {"baseline": speed.make_step(args.variant, w, n_steps, baseline),
                 "current": speed.make_step(args.variant, w, n_steps, _unroll),
                 "naive": speed.make_step("naive", w, n_steps)}
        (loss_a, grads_a), (loss_b, grads_b) = (steps[k](params0, leaves)
                                                for k in ("baseline", "current"))
        error = max([float((loss_a - loss_b).abs() / loss_a.abs().clamp_min(1e-30))]
                    + [speed.rel_error([b], [a]) for a, b in zip(grads_a, grads_b)])
        if error > args.tolerance:
            raise SystemExit(f"{n_inits}x{n_steps}: the cores differ (relative error "
                             f"{error:.2e} > --tolerance {args.tolerance})")
        args_now = (params0, leaves)
        repeats = {k: _repeats(lambda f=f, a=args_now: f(*a), args.min_call_time)
                   for k, f in steps.items()}
        fns = {k: (lambda f=f, r=repeats[k], a=args_now: [f(*a) for _ in range(r)])
               for k, f in steps.items()}
        times = speed.interleaved_times(fns, 0.0, args.rounds, args.rounds)
        ms = {k: 1e3 * statistics.median(v) / repeats[k] for k, v in times.items()}
        record = {"n_inits": n_inits, "n_steps": n_steps, "ms": ms, "max_rel_error": error,
                  "speedup": ms["baseline"] / ms["current"],
                  "naive_ratio": {k: ms["naive"] / ms[k] for k in ("baseline", "current")}}
        records.append(record)
        rows.append([n_inits, n_steps, f"{ms['naive']:.2f}", f"{ms['baseline']:.2f}",
                     f"{ms['current']:.2f}", f"**{record['speedup']:.3f}×**",
                     f"{record['naive_ratio']['baseline']:.2f}×",
                     f"{record['naive_ratio']['current']:.2f}×", f"{error:.1e}"])
    meta = stamp(torch.device("cpu"))
    baseline_commit = meta["baseline_commit"] = _checkout_commit(args.baseline)
    lines = ["# Meta-gradient core: baseline checkout against this one", "",
             *stamp_lines(meta), f"- baseline: {args.baseline} (git {baseline_commit})", "",
             f"`{args.workload}`, variant `{args.variant}`; median of {args.rounds} "
             "interleaved rounds (shuffled order), milliseconds per meta step.", "",
             markdown_table(["n_inits", "n_steps", "naive ms", "baseline ms", "current ms",
                             "current speed-up", "naive / baseline", "naive / current",
                             "max rel. difference"], rows)]
    print("\n".join(lines))
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
        payload = {"meta": meta,
                   "config": {"baseline": args.baseline, "workload": args.workload,
                              "variant": args.variant, "rounds": args.rounds},
                   "records": records}
        (args.out_dir / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
        print(f"\nwrote {args.out_dir / args.name}.md, .json")
    return records


if __name__ == "__main__":
    main()

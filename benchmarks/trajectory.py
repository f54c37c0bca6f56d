"""Both protocols along one fit: does the state the learned recipe keeps also train best?

A distiller keeps the state that scores best at its validation points. This script scores
every one of those states on the distiller's held-out split by both evaluation protocols
(the learned recipe, on the same fixed θ0 draws at every point; and protocol 2, ordinary
training of ``--validate-protocol2 RUNS`` networks, by default one, from the same seeds at
every point) and writes both curves, so that one can see whether the two agree on the best
state. The state kept is the recipe's choice, or protocol 2's with ``--validate-protocol2``.

It takes accuracy.py's options (one dataset, one ``--ipc``, the distilled set only) and
writes ``trajectory.{md,json,png}`` (``trajectory_quick.*`` with ``--quick``) under
``--out-dir``.

Examples
--------
python benchmarks/trajectory.py --quick
python benchmarks/trajectory.py --datasets fashion_mnist --ipc 1 --module convnet \
    --multi-formation 2 --n-steps 30 --max-iter 150 --learn-labels \
    --eval-module-params '{}' --optimizer sgd \
    --optimizer-params '{"momentum": 0.9, "weight_decay": 0.0005}'
"""

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
from _common import (  # noqa: E402
    Timer,
    markdown_table,
    progress,
    publish,
    stamp_lines,
    standard_classifier,
    start_run,
)

from skdistill import TrainingScorer  # noqa: E402


class BothProtocols:
    """``validation_scoring`` that records both protocols' held-out accuracy of each state.

    Returns protocol 2's score when ``select_protocol2``, else the learned recipe's, so the
    distiller keeps the state that the chosen protocol prefers.
    """

    def __init__(self, protocol2, select_protocol2):
        self.protocol2, self.select_protocol2 = protocol2, select_protocol2
        self.recipe, self.standard = [], []
        self.n_held_out = None

    def check(self):
        self.protocol2.check()

    def __call__(self, distiller, X, y):
        self.n_held_out = len(y)
        # score() draws its θ0 from random_state: the same draws at every point
        self.recipe.append(distiller.score(X, y))
        self.standard.append(self.protocol2(distiller, X, y))
        return self.standard[-1] if self.select_protocol2 else self.recipe[-1]


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = accuracy.parse_args(argv)
    if not any(a == "--name" or a.startswith("--name=") for a in argv):
        args.name = "trajectory_quick" if args.quick else "trajectory"
    if len(args.datasets) != 1 or len(args.ipc) != 1:
        # accuracy.py's defaults name two datasets and three sizes: say so, do not pick one
        sys.exit(f"trajectory.py follows one fit: give one --datasets and one --ipc (or "
                 f"--quick), got --datasets {' '.join(args.datasets)} --ipc "
                 f"{' '.join(map(str, args.ipc))}")
    args.dataset, args.ipc_one = args.datasets[0], args.ipc[0]
    return args


def run(args, device):
    data = accuracy.load(args.dataset, args.data_home)
    runs = args.validate_protocol2 or 1
    scorer = BothProtocols(
        TrainingScorer(standard_classifier(**accuracy.protocol2_params(args, data, device)),
                       n_runs=runs, random_state=args.seed),
        select_protocol2=bool(args.validate_protocol2))
    est = accuracy.build("distilled", args.ipc_one, data, args, device)
    bar = progress(args.max_iter, "trajectory", disable=args.no_progress)
    est.set_params(validation_scoring=scorer,
                   callback=accuracy._progress(bar, args.fit_deadline))
    with Timer() as fit_time, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(data.X_train, data.y_train)
    bar.close()
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return {
        "iterations": list(est.validation_iters_),
        "learned_recipe": scorer.recipe,
        "standard_training": scorer.standard,
        "protocol2_runs": runs,
        "kept_by": "protocol 2" if args.validate_protocol2 else "learned recipe",
        "best_iter": int(est.best_iter_),
        "n_iter": int(est.n_iter_),
        "fit_seconds": fit_time.seconds,
        "n_held_out": scorer.n_held_out,
        "fit_warnings": [str(w.message) for w in caught
                         if issubclass(w.category, ConvergenceWarning)],
    }


def report(result, args, meta):
    rows = [[it, f"{100 * r:.1f}", f"{100 * s:.1f}",
             "kept" if it == result["best_iter"] else ""]
            for it, r, s in zip(result["iterations"], result["learned_recipe"],
                                result["standard_training"])]
    recipe, standard = (np.array(result[k]) for k in ("learned_recipe", "standard_training"))
    lines = ["# Both protocols along one fit", "", *stamp_lines(meta), "",
             f"One distillation ({args.dataset}, {args.ipc_one} image(s) per class, module "
             f"`{args.module}` {args.module_params}, `n_steps={args.n_steps}`, "
             f"`max_iter={args.max_iter}`, `multi_formation={args.multi_formation}`, "
             f"`learn_labels={args.learn_labels}`, seed {args.seed}), in "
             f"{result['fit_seconds']:.0f} s. At each validation point the state is scored "
             f"on the distiller's held-out split ({result['n_held_out']} samples) by the "
             "learned recipe (5 fixed θ0 draws) and "
             f"by protocol 2 ({result['protocol2_runs']} network(s) `{args.eval_module}` "
             f"{args.eval_module_params}, {args.optimizer} lr {args.lr}, {args.epochs} epochs, "
             f"the same seeds at every point). The state kept is the {result['kept_by']}'s "
             "choice. Accuracy in %.", "",
             markdown_table(["iteration", "learned recipe", "protocol 2", ""], rows), "",
             f"Protocol 2 at the learned recipe's best point (iteration "
             f"{result['iterations'][recipe.argmax()]}): "
             f"{100 * standard[recipe.argmax()]:.1f}; "
             f"at its own best (iteration {result['iterations'][standard.argmax()]}): "
             f"{100 * standard.max():.1f}."]
    lines += [f"\nWarning of the fit: {w}" for w in result["fit_warnings"]]
    return "\n".join(lines)


def figure(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("learned_recipe", "learned recipe"),
                       ("standard_training", "protocol 2 (standard training)")):
        ax.plot(result["iterations"], 100 * np.array(result[key]), marker="o", label=label)
    ax.axvline(result["best_iter"], color="grey", linestyle=":", label="kept")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    result = run(args, device)
    publish(args.name, report(result, args, meta),
            {"meta": meta, "config": config, "result": result}, figure(result), args.out_dir)


if __name__ == "__main__":
    main()

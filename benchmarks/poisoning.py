"""The malicious objective: distilled steps that make well-trained classifiers mislabel a class.

The seed's "dataset poisoning" (Wang et al. 2018: CIFAR-10 classifiers that, after a few steps
on distilled images, predict a chosen wrong class for one class while keeping the others):
``DatasetDistiller(relabel={source: target}, model_init=[well-trained weights])``.

- **networks**: small ConvNets (``--width`` channels, ``--depth`` blocks; instance norm, so
  no running statistics) trained with Adam on a subsample of Fashion-MNIST's training images
  (``--n-train``) from ``--n-nets`` seeds: p(θ0); ``--n-unseen`` more networks trained the
  same way from other seeds are never shown to the distiller;
- **objective**: real samples of ``--source`` must be predicted as ``--target``, every other
  class as itself (the distiller's outer loss on relabelled real data);
- **measure**, on the 10,000 test images: the share of ``source`` images predicted as
  ``target`` and the accuracy on the other nine classes, before and after ``--n-steps``
  gradient-descent steps on the distilled images with the learned step sizes;
- **baseline**: the same number of steps on as many real training images (class-balanced)
  in which the ``source`` images carry the label ``target`` (naive label poisoning), with the
  best constant step size of ``--lr-grid`` for the same objective, chosen on a validation
  split of the training images.

Outputs: ``benchmarks/results/poisoning.{md,json,png}`` (``poisoning_quick.*`` with
``--quick``) and ``poisoning_images.png`` (the distilled images, from ``plot_distilled``).

Examples
--------
python benchmarks/poisoning.py --quick
python benchmarks/poisoning.py
python benchmarks/poisoning.py --source 7 --target 5     # sneakers predicted as sandals
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import (  # noqa: E402
    HelpFormatter,
    Timer,
    add_output_args,
    balanced_sample,
    finish_args,
    markdown_table,
    mean_std,
    progress,
    stamp_lines,
    start_run,
    write_results,
)

from skdistill import DatasetDistiller, load_fashion_mnist  # noqa: E402
from skdistill.nets import ConvNet  # noqa: E402

SHAPE = (1, 28, 28)
FULL = {"n_train": 10000, "max_iter": 300, "n_nets": 3, "n_unseen": 2, "n_draws": 5,
        "epochs": 3}
QUICK = {"n_train": 3000, "max_iter": 40, "n_nets": 2, "n_unseen": 1, "n_draws": 2,
         "epochs": 2}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Distil images whose learned steps make well-trained Fashion-MNIST "
                    "ConvNets predict --target for --source while keeping the other classes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: 3,000 training images, 40 iterations, 2 networks (about "
                             "a minute on two CPU cores); writes poisoning_quick.*")
    parser.add_argument("--source", type=int, default=1,
                        help="class whose images must be mislabelled (1: Trouser)")
    parser.add_argument("--target", type=int, default=8,
                        help="label they must receive (8: Bag)")
    parser.add_argument("--n-distilled", type=int, default=10, help="distilled images")
    parser.add_argument("--n-steps", type=int, default=5, help="inner gradient steps")
    parser.add_argument("--inner-lr-init", type=float, default=0.03,
                        help="initial learned step size")
    parser.add_argument("--learning-rate", type=float, default=0.1,
                        help="outer Adam step of the distiller")
    parser.add_argument("--max-iter", type=int, help="outer iterations (default: 300)")
    parser.add_argument("--n-train", type=int,
                        help="training images (random subsample; default: 10000)")
    parser.add_argument("--width", type=int, default=16, help="ConvNet channels")
    parser.add_argument("--depth", type=int, default=2, help="ConvNet blocks")
    parser.add_argument("--epochs", type=int, help="Adam epochs of training (default: 3)")
    parser.add_argument("--n-nets", type=int, help="well-trained networks in p(θ0) "
                        "(default: 3)")
    parser.add_argument("--n-unseen", type=int,
                        help="networks held out of p(θ0), scored too (default: 2)")
    parser.add_argument("--n-draws", type=int,
                        help="draws of real images per network for the baseline (default: 5)")
    parser.add_argument("--lr-grid", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3],
                        help="constant step sizes tried for the real-image baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data-home", default=None, help="where the Fashion-MNIST files are")
    add_output_args(parser, "poisoning")
    args = parser.parse_args(argv)
    finish_args(args, "poisoning", QUICK if args.quick else FULL)
    if args.source == args.target or not (0 <= args.source < 10 and 0 <= args.target < 10):
        parser.error("--source and --target must be two different classes in 0..9")
    return args


# ---------------------------------------------------------------------- networks


def train_net(X, y, seed, epochs, width, depth, lr=2e-3, batch_size=128):
    """A ConvNet trained with Adam on (X, y): one well-trained θ0."""
    return _common.adam_train(lambda: ConvNet(SHAPE, 10, width=width, depth=depth), X, y,
                              seed=seed, epochs=epochs, lr=lr, batch_size=batch_size,
                              shape=SHAPE)


def predict(net, X):
    return _common.predict(net, X, SHAPE)


def measure(net, X, y, source, target):
    """Share of ``source`` predicted as ``target``; accuracy on the other classes; overall."""
    pred = predict(net, X)
    src = y == source
    return {"share": float((pred[src] == target).mean()),
            "others": float((pred[~src] == y[~src]).mean()),
            "overall": float((pred == y).mean())}


def gd_steps(net, steps, X, targets):
    return _common.gd_steps(net, steps, X, targets, SHAPE)


def aggregate(results):
    return {k: [r[k] for r in results] for k in results[0]}


# ---------------------------------------------------------------------- the experiment


def run(args, bar, device):
    rng = np.random.RandomState(args.seed)
    data = load_fashion_mnist(data_home=args.data_home)
    idx = rng.choice(len(data.y_train), args.n_train + args.n_train // 10, replace=False)
    fit_idx, val_idx = idx[: args.n_train], idx[args.n_train:]
    X_fit, y_fit = data.X_train[fit_idx], data.y_train[fit_idx]
    X_val, y_val = data.X_train[val_idx], data.y_train[val_idx]
    X_test, y_test = data.X_test, data.y_test
    src, dst = args.source, args.target
    names = data.target_names

    bar.set_description("training the networks")
    with Timer() as t_train:
        nets = [train_net(X_fit, y_fit, args.seed + k, args.epochs, args.width, args.depth)
                for k in range(args.n_nets + args.n_unseen)]
    bar.update(len(nets))
    seen, unseen = nets[: args.n_nets], nets[args.n_nets:]
    groups = (("seen", seen), ("unseen", unseen))
    info = {"n_fit": len(y_fit), "n_val": len(y_val), "n_test": len(y_test),
            "source": f"{src} ({names[src]})", "target": f"{dst} ({names[dst]})",
            "train_seconds": t_train.seconds, "target_names": list(names)}
    rec = {"before": {g: aggregate([measure(n, X_test, y_test, src, dst) for n in members])
                      for g, members in groups if members}}

    bar.set_description("distilling")
    distiller = DatasetDistiller(
        n_distilled=args.n_distilled, module="convnet", input_shape=SHAPE,
        module_params={"width": args.width, "depth": args.depth},
        model_init=[n.state_dict() for n in seen], n_inits=min(2, len(seen)),
        relabel={src: dst}, n_steps=args.n_steps, inner_lr_init=args.inner_lr_init,
        learning_rate=args.learning_rate, max_iter=args.max_iter, batch_size=256,
        random_state=args.seed, device=str(device),
        callback=lambda d, it: bar.update(1),
    )
    with Timer() as t_fit:
        distiller.fit(X_fit, y_fit)
    rec["fit_seconds"] = t_fit.seconds
    rec["learned_lr"] = distiller.learned_lr_.tolist()
    rec["best_validation_score"] = distiller.best_validation_score_
    steps = distiller.training_steps()
    rec["distilled"] = {
        g: aggregate([measure(gd_steps(n, steps, distiller.distilled_X_,
                                       distiller.distilled_y_proba_), X_test, y_test, src, dst)
                      for n in members])
        for g, members in groups if members}

    # Baseline: the same budget of real images, source images labelled as target.
    bar.set_description("real-image baseline")
    relabelled = np.where(y_fit == src, dst, y_fit)
    onehot = np.eye(10)
    draws = [balanced_sample(y_fit, args.n_distilled, rng) for _ in range(args.n_draws)]
    val_target = np.where(y_val == src, dst, y_val)

    def poisoned(net, idx, lr):
        return gd_steps(net, [(np.arange(len(idx)), lr)] * args.n_steps, X_fit[idx],
                        onehot[relabelled[idx]])

    val_score = {lr: np.mean([(predict(poisoned(n, i, lr), X_val) == val_target).mean()
                              for n in seen for i in draws]) for lr in args.lr_grid}
    best_lr = max(val_score, key=val_score.get)
    rec["baseline_lr"] = best_lr
    rec["baseline_validation_by_lr"] = {str(k): float(v) for k, v in val_score.items()}
    rec["real_poisoned"] = {
        g: aggregate([measure(poisoned(n, i, best_lr), X_test, y_test, src, dst)
                      for n in members for i in draws])
        for g, members in groups if members}
    bar.update(1)
    return info, rec, distiller


ROWS = [("before", "before: the well-trained networks"),
        ("distilled", "**after {n_steps} steps on the {n} distilled images**"),
        ("real_poisoned", "after {n_steps} steps on {n} real images, source labelled as "
                          "target (η = {lr})")]


def report(info, rec, args, meta):
    lines = ["# Poisoning: distilled steps that relabel a class", ""]
    lines += stamp_lines(meta)
    lines += [
        "",
        f"Fashion-MNIST: {info['n_fit']} random training images (networks and distiller), "
        f"{info['n_val']} validation images (the baseline's step size, grid "
        f"{args.lr_grid}), {info['n_test']} test images (every number below). Networks: "
        f"ConvNet width {args.width}, depth {args.depth}, Adam for {args.epochs} epochs, "
        f"{args.n_nets} seeds in p(θ0) and {args.n_unseen} unseen "
        f"seed{'s' if args.n_unseen != 1 else ''} "
        f"({info['train_seconds']:.0f} s). Objective: `relabel={{{args.source}: "
        f"{args.target}}}`, source {info['source']} → target {info['target']}. Distiller: "
        f"{args.n_distilled} images, {args.n_steps} steps, {args.max_iter} iterations, "
        f"outer learning rate {args.learning_rate} ({rec['fit_seconds']:.0f} s).",
        "Numbers in %, mean ± std over the networks (× "
        f"{args.n_draws} draws of real images for the baseline).",
    ]
    for group, title in (("seen", "networks of p(θ0)"),
                         ("unseen", "unseen networks (other seeds)")):
        if group not in rec["before"]:
            continue
        lines += ["", f"## {title}", ""]
        rows = []
        for key, label in ROWS:
            label = label.format(n_steps=args.n_steps, n=args.n_distilled,
                                 lr=rec["baseline_lr"])
            r = rec[key][group]
            rows.append([label, mean_std(r["share"]), mean_std(r["others"]),
                         mean_std(r["overall"])])
        lines.append(markdown_table(
            ["", "source predicted as target", "accuracy on the other 9 classes",
             "accuracy (true labels)"], rows))
    lines += ["", "Learned step sizes: " + ", ".join(f"{v:.3f}" for v in rec["learned_lr"])
              + "."]
    return "\n".join(lines)


def figure(rec, info):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    labels = ["before", "distilled", "real, poisoned labels"]
    groups = [g for g in ("seen", "unseen") if g in rec["before"]]
    for ax, key, title in zip(axes, ["share", "others"],
                              [f"{info['source']} predicted as {info['target']}",
                               "accuracy on the other classes"]):
        width = 0.8 / len(ROWS)
        for i, (row, _) in enumerate(ROWS):
            x = np.arange(len(groups)) + (i - 1) * width
            vals = [100 * np.mean(rec[row][g][key]) for g in groups]
            errs = [100 * np.std(rec[row][g][key]) for g in groups]
            ax.bar(x, vals, width, yerr=errs, capsize=3, label=labels[i],
                   edgecolor="black" if row == "distilled" else None)
        ax.set_xticks(np.arange(len(groups)))
        ax.set_xticklabels(["p(θ0) networks", "unseen networks"][: len(groups)])
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of test images")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    bar = progress(args.n_nets + args.n_unseen + args.max_iter + 1, "poisoning",
                   disable=args.no_progress)
    try:
        info, rec, distiller = run(args, bar, device)
    finally:
        bar.close()
    import matplotlib.pyplot as plt

    from skdistill.plotting import plot_distilled

    fig = figure(rec, info)
    paths = write_results(args.name, report(info, rec, args, meta),
                          {"meta": meta, "config": config, "info": info, "results": rec},
                          fig, args.out_dir)
    plt.close(fig)
    images = Path(args.out_dir) / f"{args.name.replace('poisoning', 'poisoning_images')}.png"
    fig = plot_distilled(distiller, class_names=info["target_names"],
                         title=f"{args.n_distilled} distilled images: {args.n_steps} steps on "
                               f"them make {info['source']} predicted as {info['target']}")
    fig.savefig(images, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(report(info, rec, args, meta))
    print("\nwrote " + ", ".join(str(p) for p in (*paths, images)))


if __name__ == "__main__":
    main()

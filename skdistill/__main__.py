"""Command line: ``python -m skdistill demo`` (also installed as the ``skdistill`` script)."""

import argparse
import os
import sys
import time


def _demo(args):
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from skorch import NeuralNetClassifier

    from . import DatasetDistiller, DistilledClassifier, RandomSelector
    from .nets import MLP
    from .plotting import plot_distilled, plot_learning_curve

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=args.seed
    )
    n = args.ipc * 10
    print(f"digits: {X_train.shape[0]} training and {X_test.shape[0]} test images of 8x8; "
          f"distilling to {n} ({args.ipc} per class)")

    distiller = DatasetDistiller(n_distilled=n, max_iter=args.max_iter, random_state=args.seed,
                                 verbose=args.verbose, device=args.device)
    start = time.perf_counter()
    distiller.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    print(f"distilled in {seconds:.1f} s ({distiller.n_iter_} iterations, state of iteration "
          f"{distiller.best_iter_} kept, device {distiller.device_})")

    def mean_std(values):
        return f"{100 * np.mean(values):5.1f}% ± {100 * np.std(values):4.1f}"

    def standard(sampler, runs=5):
        return [DistilledClassifier(sampler, training="standard", random_state=k,
                                    device=args.device).fit(X_train, y_train).score(X_test, y_test)
                for k in range(runs)]

    rows = []
    recipe = distiller.evaluate(X_test, y_test, n_inits=5, random_state=1)
    rows.append((f"distilled, {n} images, learned recipe ({distiller.n_steps} steps)", recipe))
    rows.append((f"distilled, {n} images, standard training (Adam, 300 epochs)",
                 standard(distiller)))
    selector = RandomSelector(n_distilled=n, random_state=args.seed)
    rows.append((f"random real, {n} images, standard training (Adam, 300 epochs)",
                 standard(selector)))
    full = []
    for k in range(3):
        torch.manual_seed(k)
        net = NeuralNetClassifier(MLP, module__n_features=64, module__n_classes=10,
                                  criterion=torch.nn.CrossEntropyLoss,
                                  optimizer=torch.optim.Adam, lr=1e-3, max_epochs=40,
                                  batch_size=64, train_split=None, verbose=0)
        net.fit(X_train, y_train.astype(np.int64))
        full.append(float(np.mean(net.predict(X_test) == y_test)))
    rows.append((f"full training set, {X_train.shape[0]} images (Adam, 40 epochs)", full))
    print("\ntest accuracy (mean ± std over networks from fresh initialisations)")
    for name, values in rows:
        print(f"  {mean_std(values)}  {name}")

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_distilled(distiller).savefig(args.output, dpi=120)
    curve = os.path.splitext(args.output)[0] + "_curve.png"
    plot_learning_curve(distiller).savefig(curve, dpi=120)
    print(f"\nwrote {args.output} and {curve}")
    print("learned step sizes:", np.array2string(distiller.learned_lr_, precision=3))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="skdistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="distil the digits embedded in scikit-learn and compare "
                          "with random real images and the full training set")
    demo.add_argument("--ipc", type=int, default=1, help="images per class (default 1)")
    demo.add_argument("--max-iter", type=int, default=500, help="outer iterations")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    demo.add_argument("--output", default="distilled_digits.png", help="PNG of the images")
    demo.add_argument("-v", "--verbose", type=int, default=1, help="progress bar (0: none)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

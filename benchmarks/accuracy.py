"""Test accuracy against images per class: dataset distillation against coreset selectors.

For every dataset and number of images per class (ipc), each method builds a training set of
``10 * ipc`` images from the training split, and is scored on the test split by both
evaluation protocols of DESIGN.md:

1. learned recipe: ``n_steps`` gradient-descent steps from fresh θ0, with the learned step
   sizes for the distilled set and the constant ``inner_lr`` of the selectors for the others;
2. standard training: a fresh network (the distiller's, or ``--eval-module``) trained with
   ``--optimizer`` (Adam by default) for ``--epochs`` epochs, on the learned soft labels where
   the distiller learned them.

Accuracies are mean ± std over ``--n-inits`` θ0 draws (protocol 1) or training runs
(protocol 2) on one fitted set per method; the same θ0 draws are used for every method.
The time column is the time to build the set (distil or select), not to evaluate it.

Results go to ``benchmarks/results/accuracy.{md,json,png}`` (``accuracy_quick.*`` with
``--quick``) and are rewritten after every (dataset, ipc) block, so an interrupted run keeps
what it finished.

Examples
--------
python benchmarks/accuracy.py --quick
python benchmarks/accuracy.py --datasets digits --ipc 1 10 50 --max-iter 500
python benchmarks/accuracy.py --datasets fashion_mnist --ipc 1 --max-iter 1000
python benchmarks/accuracy.py --datasets fashion_mnist --ipc 1 --module convnet \
    --module-params '{"width": 32, "depth": 2}' --distill-inits 2 --learn-labels \
    --eval-module-params '{}' --optimizer sgd \
    --optimizer-params '{"momentum": 0.9, "weight_decay": 0.0005}'   # literature's protocol 2
"""

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Bunch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HelpFormatter,
    Timer,
    add_output_args,
    finish_args,
    markdown_table,
    mean_std,
    positive_int,
    progress,
    stamp_lines,
    standard_classifier,
    standard_training,
    start_run,
    write_results,
)

from skdistill import (  # noqa: E402
    DatasetDistiller,
    DistilledClassifier,
    TrainingScorer,
    load_digits_images,
    load_fashion_mnist,
    load_mnist,
)
from skdistill.coreset import SELECTORS  # noqa: E402
from skdistill.distiller import _fit_length  # noqa: E402
from skdistill.nets import default_module_params  # noqa: E402
from skdistill.preprocessing import ZCAWhitening  # noqa: E402

LOADERS = {"digits": load_digits_images, "fashion_mnist": load_fashion_mnist,
           "mnist": load_mnist}
METHODS = ["distilled", *SELECTORS]
LABELS = {"distilled": "distilled (DatasetDistiller)", "random": "random real",
          "means": "class means", "kmeans": "k-means centres", "herding": "herding",
          "kcenter": "k-center greedy"}
FULL = {"datasets": ["digits", "fashion_mnist"], "ipc": [1, 10, 50], "epochs": 300}
QUICK = {"datasets": ["digits"], "ipc": [1], "max_iter": 200, "epochs": 200}


def _lr_init(text):
    return text if text == "auto" else float(text)


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {text}")
    return value


# distiller parameters with their own option (--distill-params may give them too, as the
# recorded commands of the results do, but not both)
_OWN_OPTIONS = {"--backprop-window": "backprop_window",
                "--distilled-batch-size": "distilled_batch_size"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Test accuracy against images per class for dataset distillation and "
                    "every coreset selector, by both evaluation protocols.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"CI mode: defaults to digits, 1 image per class, max_iter "
                             f"{QUICK['max_iter']}, {QUICK['epochs']} epochs (about 30 s on "
                             "two CPU cores); writes accuracy_quick.*")
    parser.add_argument("--datasets", nargs="+", choices=sorted(LOADERS),
                        help="(default: digits fashion_mnist)")
    parser.add_argument("--ipc", nargs="+", type=int,
                        help="images per class (default: 1 10 50)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                        help="distilled and the coreset selectors to compare")
    parser.add_argument("--max-iter", type=int,
                        help="outer iterations of the distiller (each sees --batch-size real "
                             "samples) (default: the distiller's for --module: 250 for "
                             "convnet, else 500)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="real samples per outer iteration of the distiller")
    parser.add_argument("--n-steps", type=int,
                        help="inner gradient steps of protocol 1 (distiller and selectors) "
                             "(default: the distiller's for --module: 20 for convnet, else 10)")
    parser.add_argument("--inner-lr", type=float, default=0.3,
                        help="constant step size of the selectors in protocol 1")
    parser.add_argument("--n-inits", type=int, default=5,
                        help="θ0 draws (protocol 1) and training runs (protocol 2)")
    parser.add_argument("--epochs", type=int, help="epochs of protocol 2 (default: 300)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate of protocol 2")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                        help="optimiser of protocol 2 (full batch, one step per epoch)")
    parser.add_argument("--lr-schedule", choices=["none", "step", "cosine"], default="none",
                        help="learning-rate schedule of protocol 2: step = lr x 0.1 after half "
                             "the epochs, as the literature's evaluation code "
                             "(DistilledClassifier(lr_schedule=...))")
    parser.add_argument("--eval-batch-size", type=positive_int, default=None, metavar="B",
                        help="minibatches of B images, shuffled every epoch, in protocol 2 "
                             "(the literature's evaluation code uses 256); default: the "
                             "whole set at every step")
    parser.add_argument("--optimizer-params", type=json.loads, default=None,
                        help='other arguments of the protocol 2 optimiser as JSON, e.g. '
                             '\'{"momentum": 0.9, "weight_decay": 0.0005}\' for the '
                             "literature's SGD")
    parser.add_argument("--eval-augment", action="store_true",
                        help="also run protocol 2 with DSA-style augmentation of the set "
                             "(DistilledClassifier(augment='dsa')), as the literature's "
                             "evaluations since DSA do; reported as a third column")
    parser.add_argument("--learn-labels", action="store_true",
                        help="the distiller learns soft labels (learn_labels=True)")
    parser.add_argument("--label-teacher", type=positive_int, default=None, metavar="EPOCHS",
                        help="the distiller's soft labels start from a teacher's (label_init): "
                             "--module trained on the distiller's training split by Adam, "
                             "lr 0.001, minibatches of 256, for EPOCHS epochs, inside the fit "
                             "(its time counts); needs --learn-labels to learn them further")
    parser.add_argument("--label-temperature", type=_positive_float, default=1.0, metavar="T",
                        help="temperature of the teacher's labels (label_temperature)")
    parser.add_argument("--module", choices=["mlp", "lenet", "convnet"], default="mlp",
                        help="network of both protocols, for every method")
    parser.add_argument("--module-params", type=json.loads, default=None,
                        help='constructor arguments of --module as JSON, e.g. '
                             '\'{"width": 128, "depth": 3}\' for the ConvNet (default: '
                             "the distiller's own: width 32, depth 2 for the ConvNet)")
    parser.add_argument("--eval-module", choices=["mlp", "lenet", "convnet"], default=None,
                        help="network of protocol 2 (default: --module)")
    parser.add_argument("--eval-module-params", type=json.loads, default=None,
                        help="constructor arguments of the protocol 2 network as JSON "
                             "(default: --module-params when --eval-module is not given); "
                             "'{}' is the module's own defaults, e.g. the literature's "
                             "width-128 depth-3 ConvNet")
    parser.add_argument("--distill-lr-init", type=_lr_init, default=None,
                        help="the distiller's inner_lr_init: a number or auto (default: its "
                             "own, 0.2 for the MLP and auto for other modules)")
    parser.add_argument("--distill-init", choices=["real", "noise", *SELECTORS], default="real",
                        help="the distiller's initial images: random real ones (its default), "
                             "noise, or those a coreset selector of the training split picks "
                             "(with --multi-formation F, F^2 per stored image)")
    parser.add_argument("--init-from", default=None, metavar="STEM",
                        help="start each distillation from a set written by --save-dir "
                             "(STEM_<dataset>_ipc<ipc>.pt, same --ipc): its images (init=) "
                             "and, with --learn-labels, its soft labels (label_init=); the "
                             "network, unroll and step sizes are this run's options, so a set "
                             "distilled with one network can be fine-tuned with another")
    parser.add_argument("--distill-inits", type=int, default=None,
                        help="θ0 draws per outer iteration of the distiller (its n_inits; "
                             "default: the distiller's own, 4)")
    parser.add_argument("--multi-formation", type=int, default=1, metavar="F",
                        help="the distiller stores --ipc images per class, each decoded into "
                             "F x F training images of 1/F the resolution "
                             "(DatasetDistiller(multi_formation=F), n_distilled = 10 * ipc * "
                             "F^2); the selectors keep 10 * ipc real images")
    parser.add_argument("--backprop-window", type=positive_int, default=None, metavar="W",
                        help="random truncated backpropagation: each iteration unrolls "
                             "between W and --n-steps steps and differentiates the last W "
                             "(the distiller's backprop_window; default: every step)")
    parser.add_argument("--distilled-batch-size", type=positive_int, default=None, metavar="B",
                        help="synthetic images per unrolled step, class-balanced batches "
                             "cycled in order (the distiller's distilled_batch_size; "
                             "default: the whole set at every step)")
    parser.add_argument("--zca", type=_positive_float, default=None, metavar="REG",
                        help="ZCA-whiten every dataset first (ZCAWhitening(regularization=REG) "
                             "fitted on its training split, applied to both splits): every "
                             "method builds and is scored in the whitened space, as KIP, FRePo "
                             "and RCIG distil (default: raw pixels)")
    parser.add_argument("--validate-protocol2", type=positive_int, nargs="?", const=1,
                        default=None,
                        metavar="RUNS",
                        help="the distiller keeps the state that scores best by protocol 2 "
                             "(RUNS networks, default 1) on its held-out split, instead of by "
                             "its learned recipe (validation_scoring=TrainingScorer(...))")
    parser.add_argument("--fit-deadline", type=_positive_float, default=None, metavar="SECONDS",
                        help="interrupt each distillation after SECONDS (wall time, counted "
                             "from the start of its fit): it keeps its best validation state "
                             "as an interrupted fit does, and the evaluation runs as usual")
    parser.add_argument("--distill-params", type=json.loads, default=None,
                        help='other DatasetDistiller parameters as JSON, e.g. '
                             '\'{"learning_rate": 0.1, "validation_interval": 25}\'')
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the fits and the θ0 draws shared by all methods")
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if any")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the MLPs run best on one; a small conv net's "
                             "θ0 draws run in parallel threads with two or more, "
                             "skdistill/_threads.py)")
    parser.add_argument("--data-home", default=None, help="where the dataset files are")
    parser.add_argument("--save-dir", type=Path, default=None,
                        help="also write each fitted distiller there "
                             "(DatasetDistiller.save, <name>_<dataset>_ipc<ipc>.pt), to "
                             "evaluate it again later without distilling again")
    parser.add_argument("--from-saved", default=None, metavar="STEM",
                        help="evaluate the distilled sets written by --save-dir "
                             "(STEM_<dataset>_ipc<ipc>.pt) instead of distilling; the "
                             "distiller options must be the ones they were fitted with")
    add_output_args(parser, "accuracy")
    args = parser.parse_args(argv)
    finish_args(args, "accuracy", QUICK if args.quick else FULL)
    for option, key in _OWN_OPTIONS.items():
        if key in (args.distill_params or {}) and getattr(args, key) is not None:
            parser.error(f"{option} and --distill-params both give {key}: give it once")
    n_steps, max_iter = _fit_length(args.module)  # DatasetDistiller's defaults
    args.n_steps = n_steps if args.n_steps is None else args.n_steps
    args.max_iter = max_iter if args.max_iter is None else args.max_iter
    if args.from_saved and args.init_from:
        parser.error("--from-saved evaluates a saved set and --init-from distils from one: "
                     "give one of them")
    if args.init_from and args.distill_init != "real":
        parser.error(f"--init-from and --distill-init {args.distill_init} both give the "
                     "initial images: give one of them")
    if args.init_from and args.multi_formation > 1:
        parser.error("--init-from cannot be combined with --multi-formation: init= takes "
                     "decoded images, which the fit would average back into tiles")
    for option, stem in (("--from-saved", args.from_saved), ("--init-from", args.init_from)):
        if not stem or "distilled" not in args.methods:
            continue
        missing = [f"{stem}_{d}_ipc{i}.pt" for d in args.datasets for i in args.ipc
                   if not Path(f"{stem}_{d}_ipc{i}.pt").is_file()]
        if missing:  # before the datasets load and the selectors run
            parser.error(f"{option} {stem}: no such file(s): "
                         f"{', '.join(missing)} (STEM is a path: the --save-dir of the fit "
                         "joined with its --name)")
    # what the distiller and the selectors build for module_params=None (the ConvNet: 32x2)
    args.module_params = default_module_params(args.module, args.module_params)
    if args.eval_module is None:
        args.eval_module = args.module
        if args.eval_module_params is None:
            args.eval_module_params = args.module_params
    return args


def load(name, data_home):
    if name == "digits":
        return load_digits_images()
    return LOADERS[name](data_home=data_home)


def whiten(data, regularization):
    """``data`` with both splits ZCA-whitened by a whitening fitted on the training split."""
    zca = ZCAWhitening(regularization=regularization).fit(data.X_train)
    return Bunch(**{**data, "X_train": zca.transform(data.X_train),
                    "X_test": zca.transform(data.X_test)})


def protocol2_params(args, data, device, augment=None):
    """The training of protocol 2, as arguments of ``standard_classifier``."""
    return dict(
        max_epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
        optimizer_params=args.optimizer_params, module=args.eval_module,
        module_params=args.eval_module_params,
        input_shape=data.image_shape if args.eval_module != "mlp" else None,
        device=device, augment=augment,
        lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule,
        batch_size=args.eval_batch_size,
    )


def build(method, ipc, data, args, device, dataset=""):
    shape = data.image_shape if args.module != "mlp" else None
    common = dict(n_distilled=10 * ipc, module=args.module, module_params=args.module_params,
                  input_shape=shape, n_steps=args.n_steps, random_state=args.seed,
                  device=str(device))
    if method == "distilled":
        extra = {} if args.distill_inits is None else {"n_inits": args.distill_inits}
        if args.distill_lr_init is not None:
            extra["inner_lr_init"] = args.distill_lr_init
        if args.validate_protocol2:
            extra["validation_scoring"] = TrainingScorer(
                standard_classifier(**protocol2_params(args, data, device)),
                n_runs=args.validate_protocol2, random_state=args.seed)
        if args.label_teacher:
            extra["label_init"] = teacher(args, data, device)
            extra["label_temperature"] = args.label_temperature
        extra.update(args.distill_params or {})
        extra.update({key: getattr(args, key) for key in _OWN_OPTIONS.values()
                      if getattr(args, key) is not None})
        if args.multi_formation > 1:
            common["n_distilled"] *= args.multi_formation ** 2
            extra["multi_formation"] = args.multi_formation
        if args.init_from:
            start = DatasetDistiller.load(f"{args.init_from}_{dataset}_ipc{ipc}.pt")
            if len(start.distilled_X_) != common["n_distilled"]:
                raise ValueError(
                    f"--init-from {args.init_from}: the saved set has "
                    f"{len(start.distilled_X_)} images, this run distils "
                    f"{common['n_distilled']}")
            extra["init"] = start.distilled_X_  # rows by class, as init= wants them
            if args.learn_labels and "label_init" not in extra:
                extra["label_init"] = start.distilled_y_proba_
        elif args.distill_init in SELECTORS:
            picked, classes = SELECTORS[args.distill_init](
                n_distilled=common["n_distilled"], random_state=args.seed,
            ).fit_resample(data.X_train, data.y_train)
            extra["init"] = picked[np.argsort(classes, kind="stable")]  # rows by class
        elif args.distill_init != "real":
            extra["init"] = args.distill_init
        return DatasetDistiller(max_iter=args.max_iter, batch_size=args.batch_size,
                                learn_labels=args.learn_labels, **extra, **common)
    return SELECTORS[method](inner_lr=args.inner_lr, **common)


def teacher(args, data, device):
    """The unfitted teacher of ``--label-teacher``: ``--module`` trained on real data."""
    from imblearn import FunctionSampler  # the identity sampler: train on all the data

    return DistilledClassifier(
        distiller=FunctionSampler(), training="standard", module=args.module,
        module_params=args.module_params,
        input_shape=data.image_shape if args.module != "mlp" else None,
        max_epochs=args.label_teacher, lr=0.001, optimizer="adam", batch_size=256,
        random_state=args.seed, device=device)


def _progress(bar, deadline=None):
    """The distiller's callback: advance ``bar``; past ``deadline`` seconds, interrupt the fit
    (the distiller treats a KeyboardInterrupt as an interruption and keeps its best state),
    unless the iteration that just ended was the fit's last: that fit is complete."""
    start = time.perf_counter()

    def callback(distiller, n_iter):
        bar.update(1)
        last = n_iter >= getattr(distiller, "_n_iter_planned", math.inf)
        if deadline is not None and not last and time.perf_counter() - start > deadline:
            raise KeyboardInterrupt(f"--fit-deadline {deadline:g} s reached")

    return callback


def run_one(method, ipc, data, args, device, bar, dataset=""):
    if method == "distilled" and args.from_saved:
        est = DatasetDistiller.load(f"{args.from_saved}_{dataset}_ipc{ipc}.pt")
        est.set_params(device=str(device))
        fit_time = None
        bar.update(args.max_iter)
    else:
        est = build(method, ipc, data, args, device, dataset)
        if method == "distilled":
            est.set_params(callback=_progress(bar, args.fit_deadline))
        with Timer() as fit_time, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(data.X_train, data.y_train)
        for w in caught:  # shown as usual, and kept in the record
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if method != "distilled":
        bar.update(1)
    elif args.save_dir is not None:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        est.save(args.save_dir / f"{args.name}_{dataset}_ipc{ipc}.pt")
    with Timer() as eval_time:
        p1 = est.evaluate(data.X_test, data.y_test, n_inits=args.n_inits,
                          random_state=args.seed)
        bar.update(1)
        # learned soft labels where the distiller has them, as DistilledClassifier uses them
        def protocol2(augment=None):
            return standard_training(
                est.distilled_X_, est.distilled_y_, data.X_train, data.y_train,
                data.X_test, data.y_test, seeds=range(args.seed, args.seed + args.n_inits),
                y_proba=getattr(est, "distilled_y_proba_", None), classes=est.classes_,
                **protocol2_params(args, data, device, augment),
            )

        p2 = protocol2()
        p2_dsa = protocol2("dsa") if args.eval_augment else None
        bar.update(1)
    record = {"method": method, "ipc": ipc, "n_distilled": len(est.distilled_X_),
              "learned_recipe": p1.tolist(), "standard_training": p2.tolist(),
              "fit_seconds": None if fit_time is None else fit_time.seconds,
              "eval_seconds": eval_time.seconds}
    if p2_dsa is not None:
        record["standard_training_dsa"] = p2_dsa.tolist()
    if method == "distilled":
        record["learned_lr"] = est.learned_lr_.tolist()
        if fit_time is not None:  # a saved file holds the result, not the fit's history
            record["inner_lr_init"] = est.inner_lr_init_
            record["n_iter"] = int(est.n_iter_)
            record["best_iter"] = int(est.best_iter_)
            record["best_validation_score"] = est.best_validation_score_
            # an interrupted or diverged fit keeps its best state and says so: the table too
            record["fit_warnings"] = [str(w.message) for w in caught
                                      if issubclass(w.category, ConvergenceWarning)]
    return record


def report(results, args, meta):
    lines = ["# Accuracy against images per class", ""]
    p2_net = "the same network" if (args.eval_module, args.eval_module_params) == (
        args.module, args.module_params) else f"module `{args.eval_module}`" + (
        f" with `{json.dumps(args.eval_module_params)}`" if args.eval_module_params else
        " with its class's default parameters"
        + (" (width 128, depth 3)" if args.eval_module == "convnet" else ""))
    distiller_settings = [
        f"`max_iter={args.max_iter}`", f"`batch_size={args.batch_size}`",
        f"`n_steps={args.n_steps}` with learned step sizes",
        f"`learn_labels={args.learn_labels}`",
        *([f"`n_inits={args.distill_inits}`"] if args.distill_inits else []),
        *(["soft labels started from a teacher's at "
           f"`label_temperature={args.label_temperature}` "
           f"(`label_init`: module `{args.module}` trained on the distiller's training "
           f"split by Adam, lr 0.001, minibatches of 256, {args.label_teacher} epoch(s), "
           "inside the fit)"]
          if args.label_teacher else []),
        *([f"`inner_lr_init={args.distill_lr_init}`"] if args.distill_lr_init else []),
        *([f"initial images from `{args.distill_init}`"]
          if args.distill_init != "real" else []),
        *([f"`multi_formation={args.multi_formation}` (ipc counts the stored images; each "
           f"decodes into {args.multi_formation ** 2} training images, so the distilled set "
           f"trains on {args.multi_formation ** 2} x ipc images per class)"]
          if args.multi_formation > 1 else []),
        *(f"`{k}={getattr(args, k)}`" for k in _OWN_OPTIONS.values()
          if getattr(args, k) is not None),
        *(f"`{k}={v!r}`" for k, v in (args.distill_params or {}).items()),
        *([f"the kept state chosen by protocol 2 ({args.validate_protocol2} run(s)) on the "
           "distiller's held-out split (`validation_scoring=TrainingScorer(...)`)"]
          if args.validate_protocol2 else []),
    ]
    zca = ("inputs ZCA-whitened for every method and both protocols "
           f"(`ZCAWhitening(regularization={args.zca})` fitted on the training split, "
           "not counted in the times); " if args.zca is not None else "")
    lines += stamp_lines(meta)
    lines += [
        "",
        f"Setup: {zca}module `{args.module}`"
        + (f" with `{json.dumps(args.module_params)}`" if args.module_params else "")
        + "; distiller " + ", ".join(distiller_settings) + ", "
        "other parameters at their defaults; selectors' protocol 1 uses the constant step "
        f"size `inner_lr={args.inner_lr}` (untuned). Protocol 2: {p2_net}, "
        + ("full-batch " if args.eval_batch_size is None else
           f"minibatches of {args.eval_batch_size} (shuffled every epoch), ")
        + f"{'Adam' if args.optimizer == 'adam' else 'SGD'}"
        + (f" `{json.dumps(args.optimizer_params)}`" if args.optimizer_params else "")
        + f", lr {args.lr}"
        + (" (x 0.1 after half the epochs)" if args.lr_schedule == "step" else
           " (cosine-annealed to 0)" if args.lr_schedule == "cosine" else "")
        + f", {args.epochs} epochs, cross-entropy against the learned soft labels "
        "where the distiller learned them (else the hard labels)"
        + ("; with DSA augmentation: the same, each step on randomly transformed copies of "
           "the set (`DistilledClassifier(augment='dsa')`: one of colour, crop, cutout, "
           "scale, rotation per step)" if args.eval_augment else "")
        + ". Accuracy in % on the test "
        f"split, mean ± std over {args.n_inits} θ0 draws / training runs of one fitted set "
        f"per method (seed {args.seed}). Time: building the set (distil or select)"
        + ("; loaded: the distilled set was read from "
           f"`{args.from_saved}_<dataset>_ipc<ipc>.pt`"
           ", fitted earlier with the options above" if args.from_saved else "") + ". "
        "**Bold**: best protocol 1 accuracy per block.",
    ]
    for ds, block in results.items():
        info = block["info"]
        lines += ["", f"## {ds} ({info['n_train']} train / {info['n_test']} test images "
                      f"of shape {tuple(info['image_shape'])})", ""]
        rows = []
        for ipc in sorted({r["ipc"] for r in block["records"]}):
            recs = [r for r in block["records"] if r["ipc"] == ipc]
            best = max(np.mean(r["learned_recipe"]) for r in recs)
            for r in recs:
                p1 = mean_std(r["learned_recipe"])
                if np.mean(r["learned_recipe"]) == best:
                    p1 = f"**{p1}**"
                rows.append([LABELS[r["method"]], ipc, p1, mean_std(r["standard_training"]),
                             *([mean_std(r["standard_training_dsa"])] if args.eval_augment
                               else []),
                             "loaded" if r["fit_seconds"] is None
                             else f"{r['fit_seconds']:.2f}"])
        lines.append(markdown_table(
            ["method", "ipc", "1: learned recipe / constant-step GD", "2: standard training",
             *(["2 with DSA augmentation"] if args.eval_augment else []), "time (s)"], rows))
        lines += [f"\nFit of {LABELS[r['method']]}, ipc {r['ipc']}: {fit_summary(r)}."
                  for r in block["records"] if "n_iter" in r]
        lines += [f"\nWarning of the fit of {LABELS[r['method']]}, ipc {r['ipc']}: {msg}"
                  for r in block["records"] for msg in r.get("fit_warnings", [])]
    return "\n".join(lines)


def fit_summary(record):
    """How a distiller's fit went, from its record: what a reader of the table asks first."""
    val = record["best_validation_score"]
    lr0, lr = record["inner_lr_init"], record["learned_lr"]
    return (f"{record['n_iter']} iterations, kept iteration {record['best_iter']}"
            + (f" (validation accuracy {val:.4g})" if val is not None else "")
            + (f"; step sizes started at {lr0:.3g}"
               if lr0 is not None and math.isfinite(lr0) else "")
            + f"; learned step sizes {min(lr):.3g}-{max(lr):.3g}")


def figure(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4 * len(results)), squeeze=False)
    for row, (ds, block) in zip(axes, results.items()):
        for ax, key, title in zip(row, ["learned_recipe", "standard_training"],
                                  ["1: learned recipe / constant-step GD",
                                   "2: standard training"]):
            for i, method in enumerate(METHODS):
                recs = sorted((r for r in block["records"] if r["method"] == method),
                              key=lambda r: r["ipc"])
                if not recs:
                    continue
                acc = np.array([r[key] for r in recs]) * 100
                # Small horizontal offsets keep methods with equal results visible.
                x = np.array([r["ipc"] for r in recs]) * 1.04 ** (i - len(METHODS) / 2)
                ax.errorbar(x, acc.mean(1), yerr=acc.std(1), marker="osDv^<"[i],
                            capsize=3, label=LABELS[method],
                            linewidth=2.5 if method == "distilled" else 1.2)
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(sorted({r["ipc"] for r in block["records"]}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("images per class")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{ds} — {title}", fontsize=10)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.suptitle(f"module {args.module}, distiller max_iter {args.max_iter}", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    data = {ds: load(ds, args.data_home) for ds in args.datasets}
    if args.zca is not None:
        data = {ds: whiten(d, args.zca) for ds, d in data.items()}
    # Progress: one step per distiller iteration, per selection and per protocol.
    per_block = sum(args.max_iter if m == "distilled" else 1 for m in args.methods)
    total = len(args.datasets) * len(args.ipc) * (per_block + 2 * len(args.methods))
    bar = progress(total, "accuracy", disable=args.no_progress)
    results = {}
    try:
        for ds in args.datasets:
            d = data[ds]
            results[ds] = {"info": {"n_train": len(d.y_train), "n_test": len(d.y_test),
                                    "image_shape": d.image_shape, "source": d.source},
                           "records": []}
            for ipc in args.ipc:
                for method in args.methods:
                    bar.set_description(f"{ds} ipc={ipc} {method}")
                    results[ds]["records"].append(
                        run_one(method, ipc, d, args, device, bar, ds))
                import matplotlib.pyplot as plt

                fig = figure(results, args)
                paths = write_results(args.name, report(results, args, meta),
                                      {"meta": meta, "config": config, "results": results},
                                      fig, args.out_dir)
                plt.close(fig)
    finally:
        bar.close()
    print(report(results, args, meta))
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()

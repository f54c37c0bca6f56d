"""Command line of skdistill (``python -m skdistill``, also installed as ``skdistill``).

  demo       distil the digits embedded in scikit-learn and compare with real images
  distill    distil a dataset (digits, mnist, fashion_mnist, cifar10 or a .npz file) to a file
  evaluate   score a saved file on a dataset's test split
  plot       draw a saved file's synthetic images and learning curves as PNG files
  info       show what a saved file holds

Run ``python -m skdistill COMMAND --help`` for the options of each command.
"""

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

from ._alloc import retain_freed_memory
from ._process import exit_without_finalising

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


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
        return [
            DistilledClassifier(sampler, training="standard", random_state=k,
                                device=args.device).fit(X_train, y_train).score(X_test, y_test)
            for k in range(runs)
        ]

    rows = []
    recipe = distiller.evaluate(X_test, y_test, n_inits=5, random_state=1)
    rows.append((f"distilled, {n} images, learned recipe ({distiller.n_steps_} steps)", recipe))
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


# ---------------------------------------------------------------------- data


def _load_dataset(name, data_home=None, seed=0):
    """A dataset Bunch (see skdistill.datasets) by name or from a ``.npz`` file."""
    from . import datasets

    if name in DATASETS:
        if name == "digits":
            return datasets.load_digits_images()
        loader = {"mnist": datasets.load_mnist, "fashion_mnist": datasets.load_fashion_mnist,
                  "cifar10": datasets.load_cifar10}[name]
        return loader(data_home=data_home)
    path = Path(name)
    if path.suffix != ".npz":
        raise ValueError(f"unknown dataset {name!r}: give one of {', '.join(DATASETS)} or a "
                         ".npz file.")
    return _load_npz(path, seed)


def _load_npz(path, seed):
    import numpy as np
    from sklearn.model_selection import train_test_split
    from sklearn.utils import Bunch

    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    expected = ("expected arrays X_train and y_train (and optionally X_test, y_test, "
                "image_shape, target_names), or X and y (split 80/20 here)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise ValueError(f"{path} cannot be read without pickle ({exc}); {expected}, as "
                         "numeric or string arrays.") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc}).") from None
    if {"X_train", "y_train"} <= arrays.keys():
        X_train, y_train = arrays["X_train"], arrays["y_train"]
        X_test, y_test = arrays.get("X_test"), arrays.get("y_test")
    elif {"X", "y"} <= arrays.keys():
        X_train, X_test, y_train, y_test = train_test_split(
            arrays["X"], arrays["y"], test_size=0.2, random_state=seed, stratify=arrays["y"])
    else:
        raise ValueError(f"{path} holds {sorted(arrays) or 'no arrays'}; {expected}.")
    X_train = X_train.reshape(X_train.shape[0], -1).astype(np.float32)
    if X_test is not None:
        X_test = X_test.reshape(X_test.shape[0], -1).astype(np.float32)
    shape = arrays.get("image_shape")
    names = arrays.get("target_names")
    return Bunch(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 image_shape=None if shape is None else tuple(int(v) for v in shape),
                 target_names=None if names is None else [str(n) for n in names],
                 source=str(path))


def _class_names(data, classes):
    names = getattr(data, "target_names", None)
    if not names or len(names) != len(classes):
        return None
    try:
        return [names[int(c)] for c in classes]  # loaders' labels index target_names
    except (ValueError, IndexError, TypeError):
        return None


def _parse_label(token, classes):
    for c in classes.tolist():
        if str(c) == token:
            return c
    raise ValueError(f"{token!r} is not a class of the dataset; its classes are "
                     f"{[str(c) for c in classes.tolist()]}.")


# DatasetDistiller parameters that `distill` sets from an option of its own.
_OPTION_OF = {
    "n_distilled": "--ipc or --n-distilled", "module": "--module",
    "module_params": "--module-params", "input_shape": "--input-shape",
    "model_init": "--model-init", "n_steps": "--n-steps", "n_inits": "--n-inits",
    "backprop_window": "--backprop-window", "inner_momentum": "--inner-momentum",
    "inner_optimizer": "--inner-optimizer",
    "shuffle_batches": "--shuffle-batches",
    "distilled_batch_size": "--distilled-batch-size", "learn_labels": "--learn-labels",
    "label_init": "--label-init", "label_temperature": "--label-temperature",
    "relabel": "--relabel", "batch_size": "--batch-size", "max_iter": "--max-iter",
    "multi_formation": "--multi-formation", "random_state": "--seed", "verbose": "--verbose",
    "device": "--device", "learning_rate": "--learning-rate", "checkpoint": "--checkpoint",
    "warm_start": "--checkpoint",  # a new process can only continue a checkpoint
}


def _extra_params(text):
    """The DatasetDistiller parameters of ``--params`` (a JSON object), checked by name."""
    from . import DatasetDistiller

    if not text:
        return {}
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params is not valid JSON ({exc}).") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--params must be a JSON object of DatasetDistiller parameters, "
                         f"e.g. '{{\"precision\": \"bfloat16\"}}', not {text!r}.")
    known = DatasetDistiller().get_params()
    for name in extra:
        if name not in known:
            raise ValueError(f"--params: {name!r} is not a DatasetDistiller parameter; the "
                             f"parameters are {', '.join(sorted(known))}.")
        if name in _OPTION_OF:
            raise ValueError(f"--params: {name!r} has an option of its own: use "
                             f"{_OPTION_OF[name]}.")
    if "callback" in extra:
        raise ValueError("--params: 'callback' takes a Python callable, which JSON cannot "
                         "give; use DatasetDistiller from Python.")
    return extra


def _load_label_init(path):
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--label-init: no such file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"--label-init {path}: not a .npy array of probabilities ({exc}).") \
            from None


def _size(n_bytes):
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


# ---------------------------------------------------------------------- commands


def _init_distributed():
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns ``(rank, joined)``: the rank (0 without torchrun) and whether this call joined
    the group, so that the caller leaves it again."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, False
    if dist.is_initialized():
        return dist.get_rank(), False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), True


def _distill(args):
    import torch.distributed as dist

    rank, joined = _init_distributed()
    if rank != 0:  # every rank fits the same set; rank 0 reports and writes it
        sys.stdout = open(os.devnull, "w")
    try:
        code = _distill_one(args, rank)
        if joined:
            dist.barrier()  # no rank leaves while another still works
    finally:
        if joined:
            dist.destroy_process_group()
        if rank != 0:
            sys.stdout.close()
            sys.stdout = sys.__stdout__
    if joined:  # everything is written; a gloo thread could abort the finalisation
        exit_without_finalising(code)
    return code


def _distill_one(args, rank):
    import numpy as np
    import torch
    from sklearn.model_selection import train_test_split

    from . import DatasetDistiller
    from ._io import save_distiller

    extra = _extra_params(args.params)  # checked before the data are read
    data = _load_dataset(args.dataset, args.data_home, args.seed)
    X, y = data.X_train, data.y_train
    if args.max_train is not None and args.max_train < X.shape[0]:
        X, _, y, _ = train_test_split(X, y, train_size=args.max_train, stratify=y,
                                      random_state=args.seed)
    classes = np.unique(y)
    f = args.multi_formation
    n_distilled = args.n_distilled or args.ipc * len(classes) * f * f
    relabel = None
    if args.relabel:
        relabel = {}
        for pair in args.relabel:
            src, sep, dst = pair.partition(":")
            if not sep:
                raise ValueError(f"--relabel {pair!r}: write SOURCE:TARGET, e.g. 3:8.")
            relabel[_parse_label(src, classes)] = _parse_label(dst, classes)
    model_init = args.model_init[0] if len(args.model_init) == 1 else args.model_init
    if args.model_init != ["random"] and args.model_init != ["fixed"]:
        states = []
        for p in args.model_init:
            if not Path(p).is_file():
                raise ValueError(f"--model-init {p!r} is neither 'random', 'fixed' nor a "
                                 "file holding a state dict (torch.save(net.state_dict())).")
            try:
                states.append(torch.load(p, map_location="cpu", weights_only=True))
            except Exception as exc:
                raise ValueError(f"--model-init {p}: cannot be read as a state dict with "
                                 f"torch.load(weights_only=True): {exc}") from None
        model_init = states[0] if len(states) == 1 else states
    module_params = json.loads(args.module_params) if args.module_params else None
    shape = tuple(args.input_shape) if args.input_shape else data.image_shape
    label_init = None
    if args.label_init is not None:
        label_init = _load_label_init(args.label_init)
    params = dict(
        n_distilled=n_distilled, module=args.module, module_params=module_params,
        input_shape=shape, model_init=model_init, n_steps=args.n_steps, n_inits=args.n_inits,
        distilled_batch_size=args.distilled_batch_size, learn_labels=args.learn_labels,
        label_init=label_init, label_temperature=args.label_temperature,
        relabel=relabel, batch_size=args.batch_size, max_iter=args.max_iter,
        multi_formation=f, random_state=args.seed, verbose=args.verbose, device=args.device,
        backprop_window=args.backprop_window, shuffle_batches=args.shuffle_batches,
    )
    if args.inner_momentum is not None:
        params["inner_momentum"] = args.inner_momentum
    if args.inner_optimizer is not None:
        params["inner_optimizer"] = args.inner_optimizer
    if args.learning_rate is not None:
        params["learning_rate"] = args.learning_rate
    if args.checkpoint is not None:  # resume the run the file holds, if there is one
        params.update(checkpoint=args.checkpoint, warm_start=True)
    params.update(extra)
    distiller = DatasetDistiller(**params)
    distiller._validate_params()  # a bad value is refused before the header says "distilling"
    print(f"{args.dataset}: {X.shape[0]} training samples of shape {shape or (X.shape[1],)}, "
          f"{len(classes)} classes; distilling to {n_distilled} samples"
          + (f" ({n_distilled // (f * f)} stored images of {f}x{f} tiles)" if f > 1 else "")
          + " with module "
          f"{args.module}, {distiller._n_steps()} steps")
    start = time.perf_counter()
    distiller.fit(X, y)
    seconds = time.perf_counter() - start
    val = distiller.best_validation_score_
    print(f"distilled in {seconds:.1f} s ({distiller.n_iter_} iterations, state of iteration "
          f"{distiller.best_iter_} kept" +
          (f", validation accuracy {100 * val:.1f}%)" if val is not None else ")"))
    output = Path(args.output or f"{Path(args.dataset).stem}_distilled.skd")
    metadata = {"dataset": args.dataset if args.dataset in DATASETS
                else str(Path(args.dataset).resolve()),
                "n_train": int(X.shape[0]), "seed": args.seed,
                "class_names": _class_names(data, classes), "seconds": round(seconds, 2)}
    if rank != 0:
        return 0
    save_distiller(distiller, output, metadata=metadata)
    size = output.stat().st_size
    raw = X.shape[0] * X.shape[1] * 4
    print(f"wrote {output}: {_size(size)} (the {X.shape[0]} training samples as float32: "
          f"{_size(raw)}, {raw / size:.0f}x more)")
    print("learned step sizes:", np.array2string(distiller.learned_lr_, precision=3))
    if args.plot:
        _write_plots(distiller, Path(args.plot), metadata["class_names"], args.dpi)
    return 0


def _evaluate(args):
    import numpy as np

    from . import DatasetDistiller
    from ._io import read_manifest

    manifest = read_manifest(args.file)
    distiller = DatasetDistiller.load(args.file)
    dataset = args.dataset or manifest.get("metadata", {}).get("dataset")
    if dataset is None:
        raise ValueError(f"{args.file} does not record its dataset; give --dataset.")
    data = _load_dataset(dataset, args.data_home, args.seed)
    if data.X_test is None:
        raise ValueError(f"{dataset} has no test split (X_test, y_test).")
    X_test, y_test = data.X_test, data.y_test
    if X_test.shape[1] != distiller.n_features_in_:
        raise ValueError(f"{args.file} was distilled from samples of "
                         f"{distiller.n_features_in_} features, but the test split of "
                         f"{dataset} has {X_test.shape[1]}.")
    names = manifest.get("metadata", {}).get("class_names") or None
    label = (lambda c: names[list(distiller.classes_).index(c)]) if names else str
    print(f"{args.file}: {distiller.distilled_X_.shape[0]} synthetic samples, "
          f"{len(distiller.learned_lr_)} steps; test split of {dataset}: "
          f"{X_test.shape[0]} samples")
    acc = distiller.evaluate(X_test, y_test, n_inits=args.n_inits, random_state=args.seed)
    results = {"learned_recipe": acc.tolist()}
    print(f"  learned recipe ({len(distiller.learned_lr_)} steps, {len(acc)} θ0 draw"
          f"{'s' if len(acc) > 1 else ''}): {100 * acc.mean():.1f}% ± {100 * acc.std():.1f}")
    if args.standard_epochs:
        from . import DistilledClassifier

        runs = []
        for k in range(args.n_inits):
            clf = DistilledClassifier(_SavedSet(str(args.file)), training="standard",
                                      max_epochs=args.standard_epochs,
                                      random_state=args.seed + k, device=args.device)
            # fit validates the real training split; the network trains on the saved set only
            runs.append(clf.fit(data.X_train, data.y_train).score(X_test, y_test))
        runs = np.array(runs)
        results["standard_training"] = runs.tolist()
        print(f"  standard training (Adam, {args.standard_epochs} epochs, {len(runs)} runs): "
              f"{100 * runs.mean():.1f}% ± {100 * runs.std():.1f}")
    for src, dst in (distiller.relabel or {}).items():
        rows = np.asarray(y_test) == src
        share = distiller.evaluate(X_test[rows], np.full(rows.sum(), dst, dtype=object)
                                   if distiller.classes_.dtype == object
                                   else np.full(rows.sum(), dst),
                                   n_inits=args.n_inits, random_state=args.seed)
        others = ~np.isin(np.asarray(y_test), list(distiller.relabel))
        rest = distiller.evaluate(X_test[others], np.asarray(y_test)[others],
                                  n_inits=args.n_inits, random_state=args.seed)
        results[f"relabel {src}->{dst}"] = {"share": share.tolist(), "others": rest.tolist()}
        print(f"  relabel {label(src)} → {label(dst)}: {100 * share.mean():.1f}% of the test "
              f"samples of {label(src)} are predicted as {label(dst)}; accuracy on the other "
              f"classes {100 * rest.mean():.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"file": str(args.file), "dataset": dataset,
                                               **results}, indent=1) + "\n")
    return 0


def _plot(args):
    from . import DatasetDistiller
    from ._io import read_manifest

    manifest = read_manifest(args.file)
    distiller = DatasetDistiller.load(args.file)
    names = manifest.get("metadata", {}).get("class_names") or None
    output = Path(args.output or Path(args.file).with_suffix(".png"))
    _write_plots(distiller, output, names, args.dpi, curve=not args.no_curve,
                 max_per_class=args.max_per_class)
    return 0


def _write_plots(distiller, output, class_names, dpi, curve=True, max_per_class=10):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import plot_distilled, plot_learning_curve

    output.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_distilled(distiller, class_names=class_names, max_per_class=max_per_class)
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    written = [output]
    if curve:
        path = output.with_name(output.stem + "_curve" + output.suffix)
        fig = plot_learning_curve(distiller)
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
    print("wrote " + " and ".join(str(p) for p in written))


def _info(args):
    from ._io import read_manifest

    m = read_manifest(args.file)
    arch = m["architecture"]
    params = m["params"]
    name = {"builtin": arch.get("name"), "class": arch.get("import_path"),
            "pickled": f"{arch.get('class')} (pickled)"}[arch["kind"]]
    n_params = sum(_prod(s) for s in arch["parameters"].values())
    init = m["model_init"]
    p_init = ("fresh weights from the module's initialisers" if init["kind"] == "random"
              else f"{init['n_states']} stored θ0 state(s)")
    size = Path(args.file).stat().st_size
    meta = m.get("metadata") or {}
    lines = [
        f"{args.file}: {_size(size)}, format {m['format']} version {m['format_version']}, "
        f"written by skdistill {m['written_by']['skdistill']} (torch "
        f"{m['written_by']['torch']}) on {m['date']}",
        f"  architecture: {name}, {n_params} parameters, input shape "
        f"{arch['input_shape'] or arch['n_features']}",
        f"  p(θ0): {p_init}",
        f"  synthetic set: {params.get('n_distilled')} samples"
        + (f" decoded from {params['n_distilled'] // params['multi_formation'] ** 2} stored "
           f"images ({params['multi_formation']}x{params['multi_formation']} tiles each)"
           if (params.get("multi_formation") or 1) > 1 else "")
        + f", {arch['n_classes']} classes "
        f"{m['classes']['values'][:10]}{' ...' if arch['n_classes'] > 10 else ''}, "
        f"{'hard' if m['hard_labels'] else 'soft'} labels",
        f"  recipe: {m['fitted'].get('n_steps', params.get('n_steps'))} steps, batches of "
        f"{params.get('distilled_batch_size') or 'the whole set'}"
        + (f", started at step size {m['fitted']['inner_lr_init']:.3g}"
           if m['fitted'].get('inner_lr_init') is not None else ""),
        f"  fit: {m['fitted']['n_iter']} iterations, kept iteration {m['fitted']['best_iter']}"
        + (f", validation accuracy {100 * m['fitted']['best_validation_score']:.1f}%"
           if m['fitted']['best_validation_score'] is not None else ""),
    ]
    if meta:
        lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()
                                                if k != "class_names"))
    print("\n".join(lines))
    return 0


def _prod(shape):
    out = 1
    for s in shape:
        out *= s
    return out


@functools.lru_cache(maxsize=None)
def _saved_set_class():
    from sklearn.base import BaseEstimator

    class SavedSet(BaseEstimator):
        """A sampler that returns the synthetic set of a saved file (for standard training).

        DistilledClassifier clones its distiller; a path survives the clone where a fitted
        estimator would not.
        """

        def __init__(self, path=None):
            self.path = path

        def fit_resample(self, X, y):
            from . import DatasetDistiller

            d = DatasetDistiller.load(self.path)
            self.classes_ = d.classes_
            self.distilled_y_proba_ = d.distilled_y_proba_
            self.module_ = d.module_
            self.input_shape_ = d.input_shape_
            return d.distilled_X_, d.distilled_y_

    return SavedSet


def _SavedSet(path):
    return _saved_set_class()(path)


# ---------------------------------------------------------------------- parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it is None or the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser():
    parser = argparse.ArgumentParser(prog="skdistill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = _DefaultsFormatter

    demo = sub.add_parser("demo", help="distil the digits embedded in scikit-learn and compare "
                          "with random real images and the full training set")
    demo.add_argument("--ipc", type=int, default=1, help="images per class (default 1)")
    demo.add_argument("--max-iter", type=int, default=500, help="outer iterations")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    demo.add_argument("--output", default="distilled_digits.png", help="PNG of the images")
    demo.add_argument("-v", "--verbose", type=int, default=1, help="progress bar (0: none)")
    demo.set_defaults(func=_demo)

    d = sub.add_parser(
        "distill", formatter_class=fmt,
        help="distil a dataset into a file (the compressed representation)",
        description="Distil the training split of a dataset into a small synthetic set and "
                    "learned step sizes, and save them to one file (DatasetDistiller.save). "
                    "DATASET is one of " + ", ".join(DATASETS) + " or a .npz file holding "
                    "X_train, y_train (optionally X_test, y_test, image_shape, target_names) "
                    "or X, y.")
    d.add_argument("dataset", metavar="DATASET", help="dataset name or .npz file")
    d.add_argument("-o", "--output", help="file to write (default: <DATASET>_distilled.skd)")
    d.add_argument("--ipc", type=_positive, default=1,
                   help="synthetic samples per class (stored images with --multi-formation)")
    d.add_argument("--n-distilled", type=_positive, help="total synthetic samples (overrides "
                   "--ipc)")
    d.add_argument("--multi-formation", type=_positive, default=1, metavar="F",
                   help="each stored image is F x F tiles, each a training sample upsampled "
                        "to full size (images only; --ipc stored images per class)")
    d.add_argument("--module", choices=["mlp", "lenet", "convnet"], default="mlp")
    d.add_argument("--module-params", help="JSON constructor arguments, e.g. "
                   "'{\"width\": 32, \"depth\": 2}'")
    d.add_argument("--input-shape", type=_positive, nargs=3, metavar=("C", "H", "W"),
                   help="shape of one sample (default: the dataset's image shape)")
    d.add_argument("--model-init", nargs="+", default=["random"], metavar="INIT",
                   help="p(θ0): 'random', 'fixed', or one or more files holding pretrained "
                        "state dicts (adaptation)")
    d.add_argument("--n-inits", type=_positive, default=4,
                       help="θ0 draws per iteration, split over processes under torchrun")
    d.add_argument("--n-steps", type=_positive,
                   help="unrolled inner steps (default: 20 for convnet, else 10)")
    d.add_argument("--backprop-window", type=_positive, metavar="W",
                   help="differentiate only the last W steps of an unroll whose length is "
                        "drawn from W to --n-steps at each iteration (random truncated "
                        "backpropagation; default: the whole unroll)")
    d.add_argument("--distilled-batch-size", type=_positive,
                   help="synthetic samples per step (default: all of them)")
    d.add_argument("--shuffle-batches", action="store_true",
                   help="with --distilled-batch-size, deal each class's samples into the "
                        "batches in a fresh random order at every outer iteration (default: "
                        "the same batches every time)")
    d.add_argument("--inner-momentum", type=float, metavar="MU",
                   help="heavy-ball momentum of the unrolled steps, in [0, 1), as "
                        "torch.optim.SGD(momentum=MU) (default: 0, the paper's plain steps)")
    d.add_argument("--inner-optimizer", choices=["sgd", "adam"],
                   help="optimiser of the unrolled steps: sgd (the paper's, default) or adam "
                        "(as torch.optim.Adam, the learned step sizes as its lr)")
    d.add_argument("--learn-labels", action="store_true", help="learn soft labels")
    d.add_argument("--relabel", nargs="+", metavar="SRC:DST",
                   help="malicious objective: networks trained on the set predict DST for "
                        "real samples of SRC")
    d.add_argument("--label-init", metavar="NPY",
                   help="starting soft labels: a .npy array of shape (samples, classes) "
                        "whose rows sum to 1, rows ordered as the synthetic samples (grouped "
                        "by sorted class; with --multi-formation F, F*F decoded samples per "
                        "stored image), columns as the sorted classes; kept fixed without "
                        "--learn-labels")
    d.add_argument("--label-temperature", type=_positive_float, default=1.0, metavar="T",
                   help="the labels of --label-init start as p^(1/T), renormalised")
    d.add_argument("--max-iter", type=_positive,
                   help="outer iterations (default: 250 for convnet, else 500)")
    d.add_argument("--learning-rate", type=_positive_float,
                   help="outer (Adam) learning rate of the synthetic samples and learned "
                        "labels (default: the distiller's, 0.03)")
    d.add_argument("--batch-size", type=_positive, default=256,
                   help="real samples per outer iteration")
    d.add_argument("--max-train", type=_positive,
                   help="distil a stratified subsample of this many training samples")
    d.add_argument("--checkpoint", metavar="FILE",
                   help="save the whole state of the fit to FILE as it runs; if FILE exists, "
                        "resume the run it holds (same options) up to --max-iter")
    d.add_argument("--params", metavar="JSON",
                   help="any other DatasetDistiller parameters as a JSON object, e.g. "
                        "'{\"precision\": \"bfloat16\", \"n_iter_no_change\": 5}'")
    d.add_argument("--plot", metavar="PNG", help="also draw the images (and <PNG>_curve)")
    d.add_argument("--dpi", type=_positive, default=120, help="resolution of --plot")
    d.add_argument("--seed", type=int, default=0, help="random_state of the distiller")
    d.add_argument("--device", default="auto", help="torch device; auto: CUDA if any")
    d.add_argument("--data-home", help="directory of the dataset files")
    d.add_argument("-v", "--verbose", type=int, default=1, help="progress bar (0: none)")
    d.set_defaults(func=_distill)

    e = sub.add_parser(
        "evaluate", formatter_class=fmt, help="score a saved file on a dataset's test split",
        description="Accuracy on a test split of networks trained by a saved file's learned "
                    "recipe from fresh θ0 (mean ± std over draws), optionally by standard "
                    "training too, and for a relabel objective the share of source samples "
                    "predicted as the target.")
    e.add_argument("file", metavar="FILE", help="file written by 'distill' or "
                   "DatasetDistiller.save")
    e.add_argument("--dataset", help="dataset name or .npz file (default: the one recorded "
                   "in FILE)")
    e.add_argument("--n-inits", type=_positive, default=5, help="θ0 draws / training runs")
    e.add_argument("--standard-epochs", type=_positive,
                   help="also train fresh networks on the set with Adam for this many epochs")
    e.add_argument("--seed", type=int, default=0, help="seeds the θ0 draws")
    e.add_argument("--device", default="auto", help="torch device of standard training")
    e.add_argument("--data-home", help="directory of the dataset files")
    e.add_argument("--json", metavar="PATH", help="also write the accuracies as JSON")
    e.set_defaults(func=_evaluate)

    p = sub.add_parser("plot", formatter_class=fmt, help="draw a saved file as PNG files",
                       description="Draw the synthetic images of a saved file (class x step "
                                   "batch) and its learning curves.")
    p.add_argument("file", metavar="FILE", help="file written by 'distill' or "
                   "DatasetDistiller.save")
    p.add_argument("-o", "--output", help="PNG of the images (default: FILE with .png); the "
                   "curves go to <output>_curve.png")
    p.add_argument("--max-per-class", type=_positive, default=10, help="rows of the grid")
    p.add_argument("--no-curve", action="store_true", help="skip the learning curves")
    p.add_argument("--dpi", type=_positive, default=120)
    p.set_defaults(func=_plot)

    i = sub.add_parser("info", help="show what a saved file holds",
                       description="Print the manifest of a saved file: architecture, "
                                   "p(θ0), synthetic set, recipe, fit and versions.")
    i.add_argument("file", metavar="FILE")
    i.set_defaults(func=_info)
    return parser


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    # A command runs in a process of its own: keep freed memory for reuse (skdistill._alloc).
    retain_freed_memory()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # Expected failures (bad file, unknown dataset, wrong option) get one line, no trace.
        print(f"skdistill {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Shared by the benchmark scripts: stamping, output files, progress and protocol 2 training.

Each script writes ``benchmarks/results/<name>.md``, ``<name>.json`` and ``<name>.png``; all
three carry the stamp (command, versions, device, date) so a number can be traced to the run
that produced it.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone

from skdistill.scoring import FixedSet

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------- stamping


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def stamp(device):
    """Command, versions, device and date of this run, as a JSON-ready dict."""
    import sklearn
    import torch

    import skdistill

    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = (f"CPU: {_cpu_name()}, {os.cpu_count()} cores, "
                    f"{torch.get_num_threads()} torch thread(s)")
    versions = {
        "python": platform.python_version(),
        "skdistill": skdistill.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
    try:
        import skorch

        versions["skorch"] = skorch.__version__
    except ImportError:
        pass
    return {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "device": hardware,
        "versions": versions,
    }


def stamp_lines(meta):
    """The stamp as Markdown bullet lines."""
    v = ", ".join(f"{k} {val}" for k, val in meta["versions"].items())
    return [
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']} (git {meta['git_commit']})",
        f"- device: {meta['device']}"
        + (f"; allocator: {meta['allocator']}" if "allocator" in meta else ""),
        f"- versions: {v}",
    ]


def start_run(args):
    """Apply ``args.threads`` and resolve ``args.device``; return ``(device, meta, config)``.

    ``meta`` is the run's :func:`stamp` and ``config`` the arguments as a JSON-ready dict,
    both written with the results.
    """
    import torch

    from skdistill.distiller import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    meta = stamp(device)
    set_allocator(args, meta)
    return device, meta, config


def set_allocator(args, meta):
    """Keep freed memory in the process unless ``--default-malloc``; records it in ``meta``.

    See :mod:`skdistill._alloc`: the same arithmetic, without a page fault per 4 KiB of every
    large tensor.
    """
    from skdistill._alloc import retain_freed_memory, user_tuned

    retained = not args.default_malloc and retain_freed_memory()
    meta["allocator"] = ("glibc malloc keeping freed memory (skdistill._alloc)" if retained
                         else "as the environment's MALLOC_* settings make it" if user_tuned()
                         else "default")


def vm_kb(field):
    """A memory figure of this process from ``/proc/self/status`` in KiB (Linux): ``VmRSS``
    (resident now), ``VmHWM`` (resident at its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


# ---------------------------------------------------------------------- timed fits

# The fits that allocator.py and threads.py time, each: what it is, its data, the
# distiller's parameters, the iterations per fit.
FIT_WORKLOADS = {
    "digits_mlp": ("digits, MLP, the default DatasetDistiller(n_distilled=10)", "digits",
                   dict(n_distilled=10), 20),
    "digits_lenet": ("digits, LeNet, 4 draws, 10 steps", "digits",
                     dict(n_distilled=10, module="lenet", input_shape=(1, 8, 8)), 20),
    "fashion_1ipc": ("Fashion-MNIST, ConvNet 32x2, one image per class: the README's default "
                     "fit", "fashion_mnist",
                     dict(n_distilled=10, module="convnet", input_shape=(1, 28, 28)), 10),
    "fashion_10ipc": ("Fashion-MNIST, ConvNet 32x2, ten stored images per class in 2x2 "
                      "multi-formation (400 training images), 30 steps, 1,024 real images, "
                      "2 draws, learned labels: the best ten-per-class row's fit",
                      "fashion_mnist",
                      dict(n_distilled=400, module="convnet", input_shape=(1, 28, 28),
                           multi_formation=2, n_steps=30, batch_size=1024, learn_labels=True,
                           n_inits=2), 4),
}


def load_fit_data(dataset, data_home=None):
    """Training images and labels of ``"digits"`` or ``"fashion_mnist"``."""
    from skdistill.datasets import load_digits_images, load_fashion_mnist

    data = load_fashion_mnist(data_home) if dataset == "fashion_mnist" else load_digits_images()
    return data.X_train, data.y_train


def timed_fit(X, y, params, max_iter, **extra):
    """Seconds per outer iteration of a seeded fit and the fitted distiller.

    Timed from the callback of the first iteration to that of the last, so that set-up
    (and the first iteration) is left out; ``max_iter`` must be at least 2.
    """
    import time

    from skdistill import DatasetDistiller

    stamps = []
    est = DatasetDistiller(**params, max_iter=max_iter, random_state=0, device="cpu",
                           callback=lambda est, it: stamps.append(time.perf_counter()),
                           **extra)
    est.fit(X, y)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1), est


def add_fit_args(parser, quick):
    """``--rounds``, ``--max-iter``, ``--threads`` and ``--data-home`` of the timed-fit
    scripts; ``quick`` names what ``--quick`` runs."""
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="fits per setting and workload, in alternating order "
                             "(default 2, 1 with --quick)")
    parser.add_argument("--max-iter", type=_at_least_two, default=None,
                        help=f"iterations per fit, at least 2: the time runs from the first "
                             f"iteration's end to the last's (default: the workload's; "
                             f"--quick: 4 iterations of {quick})")
    parser.add_argument("--threads", type=positive_int, default=2,
                        help="torch's intra-op threads")
    parser.add_argument("--data-home", default=None, help="where Fashion-MNIST's files are")


def parse_timed_fit_args(doc, stem, workloads, quick_workload, argv=None):
    """The command line of a timed-fit script (threads.py, allocator.py, window.py).

    ``--quick`` (``quick_workload`` only, 4 iterations, one round), ``--workloads`` (among
    ``workloads``; default all of them), the timed-fit options of :func:`add_fit_args` and
    the outputs of :func:`add_output_args`, named ``stem``. Runs on the CPU.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"CI: {quick_workload} only, 4 iterations, one round")
    parser.add_argument("--workloads", nargs="+", choices=sorted(workloads), default=None,
                        help=f"default: all of them ({quick_workload} with --quick)")
    add_fit_args(parser, quick_workload)
    add_output_args(parser, stem)
    args = parser.parse_args(argv)
    args.device = "cpu"
    defaults = ({"workloads": [quick_workload], "rounds": 1, "max_iter": 4} if args.quick
                else {"workloads": list(workloads), "rounds": 2})
    return finish_args(args, stem, defaults)


def _at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def alternating(settings, rounds):
    """``(round, setting)`` for ``rounds`` rounds, the order of ``settings`` reversed every
    other round, so that neither setting always runs first."""
    for r in range(rounds):
        for setting in (settings if r % 2 == 0 else settings[::-1]):
            yield r, setting


def seconds_per_iteration_figure(payload, workloads, settings, log=False):
    """Bars of each setting's median seconds per iteration, one group per workload."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(workloads), 3))
    x = np.arange(len(workloads))
    width = 0.8 / len(settings)
    for i, setting in enumerate(settings):
        ax.bar(x + (i - (len(settings) - 1) / 2) * width,
               [np.median(payload[n]["seconds_per_iteration"][setting]) for n in workloads],
               width=width, label=setting)
    ax.set_xticks(x, workloads)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("seconds per iteration")
    ax.legend()
    return fig


# ---------------------------------------------------------------------- command line


def add_output_args(parser, stem):
    """``--out-dir``, ``--name`` and ``--no-progress``, the same in every script."""
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                        help="where the .md, .json and .png files go")
    parser.add_argument("--name", default=None,
                        help=f"output file stem (default: {stem}, or {stem}_quick with "
                             "--quick)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep the C library's default allocator (by default freed "
                             "memory is kept for reuse: skdistill/_alloc.py)")


def finish_args(args, stem, defaults=None):
    """Fill the options left at None from ``defaults`` and name the outputs.

    ``--quick`` changes the defaults only: options given explicitly still apply.
    """
    for key, value in (defaults or {}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.name = args.name or (f"{stem}_quick" if args.quick else stem)
    return args


def positive_int(text):
    """argparse ``type`` for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options whose default (None) depends on --quick: their
    own help says so."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


# ---------------------------------------------------------------------- outputs


def markdown_table(headers, rows):
    """A GitHub Markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name, markdown, payload, figure, out_dir=RESULTS_DIR):
    """Write ``<name>.md``, ``<name>.json`` and ``<name>.png`` under ``out_dir``.

    Returns the three paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = (out_dir / f"{name}.{ext}" for ext in ("md", "json", "png"))
    md.write_text(markdown.rstrip() + "\n")
    js.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    figure.savefig(png, dpi=120, bbox_inches="tight")
    return md, js, png


def publish(name, markdown, payload, figure, out_dir=RESULTS_DIR):
    """:func:`write_results`, then close ``figure`` and print the table and the paths."""
    import matplotlib.pyplot as plt

    paths = write_results(name, markdown, payload, figure, out_dir)
    plt.close(figure)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return paths


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def progress(total, desc, disable=False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=disable, dynamic_ncols=True)


def mean_std(values):
    """``"mean ± std"`` of accuracies, in percent."""
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std():.1f}"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start


# ---------------------------------------------------------------------- protocol 2


def standard_classifier(*, max_epochs, lr, module, module_params, input_shape, device,
                        optimizer="adam", optimizer_params=None, augment=None,
                        lr_schedule=None, batch_size=None):
    """Protocol 2's training: an unfitted ``DistilledClassifier(training="standard")``.

    ``batch_size=None`` trains on the whole set at every step (one step per epoch); an
    integer shuffles the set into minibatches of that size every epoch, as the literature's
    evaluation code does (256).

    Its ``distiller`` (the set to train on) and ``random_state`` are set by whoever uses it:
    :func:`standard_training`, or ``TrainingScorer`` when the distiller selects its kept
    state by protocol 2.
    """
    from skdistill import DistilledClassifier

    return DistilledClassifier(
        training="standard", max_epochs=max_epochs, lr=lr, optimizer=optimizer,
        optimizer_params=optimizer_params, module=module, module_params=module_params,
        input_shape=input_shape, augment=augment, lr_schedule=lr_schedule,
        batch_size=batch_size, device=str(device),
    )


def standard_training(X_syn, y_syn, X_train, y_train, X_test, y_test, *, seeds, max_epochs,
                      lr, module, module_params, input_shape, device, y_proba=None,
                      classes=None, optimizer="adam", optimizer_params=None, augment=None,
                      lr_schedule=None, batch_size=None):
    """Protocol 2: test accuracy of fresh networks trained normally on ``(X_syn, y_syn)``.

    One network per seed, trained by :func:`standard_classifier`: ``max_epochs`` epochs of
    ``optimizer`` ("adam" or "sgd", with ``optimizer_params`` such as momentum), one
    full-batch step each unless ``batch_size`` is given (then minibatches of that size,
    shuffled every epoch); cross-entropy against ``y_proba`` (learned soft labels, columns as
    ``classes``) when given, else against the hard labels ``y_syn``; ``augment``,
    ``lr_schedule`` and ``batch_size`` as in DistilledClassifier.

    Returns
    -------
    accuracies : ndarray of shape (len(seeds),)
    """
    template = standard_classifier(
        max_epochs=max_epochs, lr=lr, module=module, module_params=module_params,
        input_shape=input_shape, device=device, optimizer=optimizer,
        optimizer_params=optimizer_params, augment=augment, lr_schedule=lr_schedule,
        batch_size=batch_size)
    accs = []
    for seed in seeds:
        clf = clone(template).set_params(distiller=FixedSet(X_syn, y_syn, y_proba, classes),
                                         random_state=seed)
        accs.append(clf.fit(X_train, y_train).score(X_test, y_test))
    return np.array(accs)


# ---------------------------------------------------------------------- plain GD baselines


def adam_train(make_net, X, y, *, seed, epochs, lr, batch_size, shape):
    """``make_net()`` trained with Adam on ``(X, y)``: a pretrained network, in eval mode.

    The network's init and the batch order come from ``seed`` (the global RNG is restored).
    """
    import torch
    import torch.nn.functional as F

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        xt = torch.as_tensor(X).reshape(-1, *shape)
        yt = torch.as_tensor(y)
        for _ in range(epochs):
            for b in torch.randperm(len(yt)).split(batch_size):
                opt.zero_grad()
                F.cross_entropy(net(xt[b]), yt[b]).backward()
                opt.step()
    return net.eval()


def predict(net, X, shape, chunk=2048):
    """Predicted classes of ``net`` for the rows of ``X`` (images of ``shape``), as numpy."""
    import torch

    with torch.no_grad():
        return torch.cat([net(c.reshape(-1, *shape)).argmax(1)
                          for c in torch.as_tensor(X).split(chunk)]).numpy()


def gd_steps(net, steps, X, targets, shape):
    """The learned recipe's loop on a module: θ ← θ − η_t ∇ CE(net(X[rows_t]), targets[rows_t]).

    ``steps`` is a list of (row indices, step size); returns a trained copy in eval mode.
    """
    import copy

    import torch
    import torch.nn.functional as F

    net = copy.deepcopy(net).train()
    x = torch.as_tensor(X, dtype=torch.float32).reshape(-1, *shape)
    t = torch.as_tensor(targets, dtype=torch.float32)
    for rows, lr in steps:
        rows = torch.as_tensor(rows)
        net.zero_grad()
        F.cross_entropy(net(x[rows]), t[rows]).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return net.eval()


def balanced_sample(y, n, rng, n_classes=10):
    """``n`` row indices of ``y``, spread evenly over the classes (the first take the rest)."""
    per_class = np.full(n_classes, n // n_classes)
    per_class[: n % n_classes] += 1
    return np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                           for c, k in enumerate(per_class)])

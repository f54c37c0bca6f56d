"""The compressed representation: the size of a saved distillation against its training set.

Wang et al. (2018) and the seed call a distillation a *compressed representation* of a
dataset: architecture + p(θ0) + learned step sizes + the small synthetic set. This script
distils datasets, writes each result with ``DatasetDistiller.save`` (one file, see
``skdistill/_io.py``), loads it back and reports

- the file's size, and what takes the room (synthetic samples, step sizes, stored θ0,
  manifest and curves);
- the training set's size: as uint8 pixels (the datasets' own format), gzip-compressed
  uint8, and float32 (what the distiller reads);
- the learned recipe's test accuracy from the loaded file, and whether it equals the saved
  estimator's (``score`` and ``train_model`` must match bit for bit).

Outputs: ``benchmarks/results/compression.{md,json,png}`` (``compression_quick.*`` with
``--quick``).

Examples
--------
python benchmarks/compression.py --quick
python benchmarks/compression.py
"""

import argparse
import gzip
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HelpFormatter,
    Timer,
    add_output_args,
    finish_args,
    markdown_table,
    mean_std,
    progress,
    publish,
    stamp_lines,
    start_run,
)

from skdistill import DatasetDistiller, load_digits_images, load_fashion_mnist  # noqa: E402

# (dataset, images per class, extra parameters, label)
FULL = [
    ("digits", 1, {}, "random θ0"),
    ("digits", 10, {}, "random θ0"),
    ("digits", 1, {"model_init": "fixed", "learn_labels": True}, "fixed θ0, soft labels"),
    ("fashion_mnist", 1, {}, "random θ0"),
    ("fashion_mnist", 10, {}, "random θ0"),
]
QUICK = [("digits", 1, {}, "random θ0")]
PIXEL_LEVELS = {"digits": 16, "fashion_mnist": 255}  # the loaders divide by these


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="File size of saved distillations against the size of their training "
                    "sets, and the accuracy of the loaded files.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: digits, 1 image per class, 50 iterations (seconds); "
                             "writes compression_quick.*")
    parser.add_argument("--max-iter", type=int, help="outer iterations per distillation "
                        "(default: 500 on digits, 300 on Fashion-MNIST; 50 with --quick)")
    parser.add_argument("--n-inits", type=int, default=5, help="θ0 draws of the accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data-home", default=None, help="where the Fashion-MNIST files are")
    parser.add_argument("--keep-files", type=Path, default=None,
                        help="directory to keep the saved distillations in (default: a "
                             "temporary one)")
    add_output_args(parser, "compression")
    args = parser.parse_args(argv)
    args.configs = QUICK if args.quick else FULL
    return finish_args(args, "compression")


def max_iter_for(dataset, args):
    if args.max_iter is not None:
        return args.max_iter
    if args.quick:
        return 50
    return 500 if dataset == "digits" else 300


def training_set_sizes(dataset, X):
    """Bytes of the training images as uint8 pixels, gzip-compressed uint8, and float32."""
    pixels = np.rint(X * PIXEL_LEVELS[dataset]).astype(np.uint8)
    return {"uint8": int(pixels.nbytes), "uint8_gzip": len(gzip.compress(pixels.tobytes(), 6)),
            "float32": int(X.shape[0] * X.shape[1] * 4)}


def file_breakdown(path, distiller):
    """Bytes of each part of the representation (uncompressed tensor payloads)."""
    kind, states = distiller._model_init_spec
    theta0 = 0 if states is None else sum(v.numel() * v.element_size()
                                          for s in states for v in s.values())
    if getattr(distiller, "model_init_", None) is not None and states is None:
        theta0 += sum(v.numel() * v.element_size() for v in distiller.model_init_.values())
    soft = not np.array_equal(distiller.distilled_y_proba_,
                              np.eye(len(distiller.classes_))[
                                  np.searchsorted(distiller.classes_, distiller.distilled_y_)])
    with zipfile.ZipFile(path) as zf:
        manifest = zf.getinfo("manifest.json").compress_size
    parts = {
        "synthetic_samples": int(distiller.distilled_X_.size * 4),
        "labels": int(distiller.distilled_y_.size * 8
                      + (distiller.distilled_y_proba_.size * 4 if soft else 0)),
        "step_sizes": int(distiller.learned_lr_.size * 4),
        "theta0": int(theta0),
        "curves": int(4 * (len(distiller.loss_curve_) + 2 * len(distiller.validation_scores_))),
        "manifest_compressed": int(manifest),
    }
    # Zip and torch.save headers, alignment and names, net of what deflate saved.
    parts["container"] = int(path.stat().st_size - sum(parts.values()))
    return parts


def run_one(dataset, ipc, extra, data, args, device, folder, bar):
    distiller = DatasetDistiller(
        n_distilled=10 * ipc, max_iter=max_iter_for(dataset, args), random_state=args.seed,
        device=str(device), callback=lambda d, it: bar.update(1), **extra)
    with Timer() as t_fit:
        distiller.fit(data.X_train, data.y_train)
    path = folder / f"{dataset}_ipc{ipc}{'_' + '_'.join(extra) if extra else ''}.skd"
    distiller.save(path)
    loaded = DatasetDistiller.load(path)
    acc = loaded.evaluate(data.X_test, data.y_test, n_inits=args.n_inits,
                          random_state=args.seed)
    same_eval = np.array_equal(acc, distiller.evaluate(
        data.X_test, data.y_test, n_inits=args.n_inits, random_state=args.seed))
    a = distiller.train_model(random_state=1).state_dict()
    b = loaded.train_model(random_state=1).state_dict()
    same_model = all(torch.equal(a[k], b[k]) for k in a)
    return {"dataset": dataset, "ipc": ipc, "n_distilled": 10 * ipc, "params": extra,
            "max_iter": distiller.max_iter, "fit_seconds": t_fit.seconds,
            "file": path.name, "file_bytes": path.stat().st_size,
            "parts": file_breakdown(path, loaded),
            "training_set": training_set_sizes(dataset, data.X_train),
            "n_train": int(data.X_train.shape[0]), "n_features": int(data.X_train.shape[1]),
            "learned_recipe": acc.tolist(), "round_trip_identical": bool(same_eval
                                                                         and same_model)}


def _ratio(a, b):
    return f"{a / b:,.0f}×" if a / b >= 10 else f"{a / b:.1f}×"


def _kb(n):
    return f"{n / 1000:,.1f} kB" if n < 1e6 else f"{n / 1e6:,.1f} MB"


def report(records, args, meta):
    lines = ["# The compressed representation: file size against the training set", ""]
    lines += stamp_lines(meta)
    lines += [
        "",
        "Each distillation (module `mlp`, 10 steps with learned step sizes, defaults "
        "otherwise) is written with `DatasetDistiller.save` and loaded back with "
        "`DatasetDistiller.load`; the accuracy is the loaded file's learned recipe on the "
        f"test split (mean ± std over {args.n_inits} θ0 draws). *Identical*: the loaded "
        "estimator's `evaluate` and `train_model` equal the saved one's bit for bit. Sizes in "
        "kB = 1,000 bytes; the ratios divide the training set's size by the file's.",
        "",
    ]
    rows = []
    for r in records:
        ts = r["training_set"]
        rows.append([
            f"{r['dataset']}, {r['ipc']}/class" + (f", {r['label']}" if r.get("label") else ""),
            f"{r['n_train']:,} × {r['n_features']}",
            _kb(r["file_bytes"]),
            f"{_kb(ts['uint8'])} ({_ratio(ts['uint8'], r['file_bytes'])})",
            f"{_kb(ts['uint8_gzip'])} ({_ratio(ts['uint8_gzip'], r['file_bytes'])})",
            f"{_kb(ts['float32'])} ({_ratio(ts['float32'], r['file_bytes'])})",
            mean_std(r["learned_recipe"]),
            "yes" if r["round_trip_identical"] else "**no**",
        ])
    lines.append(markdown_table(
        ["distillation", "training set", "file", "train set, uint8", "uint8, gzip",
         "float32", "accuracy (loaded file)", "identical"], rows))
    lines += ["", "What takes the room in each file (payloads before deflate; *container*: "
                  "zip and `torch.save` headers, alignment and names, less what deflate "
                  "saved):", ""]
    rows = [[f"{r['dataset']}, {r['ipc']}/class" + (f", {r['label']}" if r.get("label")
                                                    else ""),
             *(_kb(r["parts"][k]) for k in ("synthetic_samples", "labels", "step_sizes",
                                            "theta0", "curves", "manifest_compressed",
                                            "container"))]
            for r in records]
    lines.append(markdown_table(["distillation", "synthetic samples", "labels", "step sizes",
                                 "stored θ0", "curves", "manifest (deflated)",
                                 "container"], rows))
    return "\n".join(lines)


def figure(records):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    names = [f"{r['dataset']}\n{r['ipc']}/class" + (f"\n{r['label']}" if r.get("label") else "")
             for r in records]
    x = np.arange(len(records))
    series = [("training set, uint8", [r["training_set"]["uint8"] for r in records]),
              ("training set, uint8 gzip", [r["training_set"]["uint8_gzip"] for r in records]),
              ("saved distillation", [r["file_bytes"] for r in records])]
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        bars = ax.bar(x + (i - 1) * width, values, width, label=label,
                      edgecolor="black" if i == 2 else None)
        if i == 2:
            for bar_, r in zip(bars, records):
                ax.annotate(f"{100 * np.mean(r['learned_recipe']):.1f}%",
                            (bar_.get_x() + bar_.get_width() / 2, bar_.get_height()),
                            ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("bytes (log scale)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_title("saved distillation against its training set (labels: test accuracy of the "
                 "loaded file)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    device, meta, config = start_run(args)
    total = sum(max_iter_for(ds, args) for ds, _, _, _ in args.configs)
    bar = progress(total, "compression", disable=args.no_progress)
    loaders = {"digits": lambda: load_digits_images(),
               "fashion_mnist": lambda: load_fashion_mnist(data_home=args.data_home)}
    data = {}
    records = []
    tmp = None
    if args.keep_files is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    else:
        folder = args.keep_files
        folder.mkdir(parents=True, exist_ok=True)
    try:
        for dataset, ipc, extra, label in args.configs:
            bar.set_description(f"{dataset} {ipc}/class")
            if dataset not in data:
                data[dataset] = loaders[dataset]()
            rec = run_one(dataset, ipc, extra, data[dataset], args, device, folder, bar)
            rec["label"] = label if extra else None
            records.append(rec)
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    publish(args.name, report(records, args, meta),
            {"meta": meta, "config": config, "records": records}, figure(records),
            args.out_dir)


if __name__ == "__main__":
    main()

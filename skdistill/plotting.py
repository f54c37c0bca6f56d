"""Pictures of a distillation: the synthetic images and the learning curves.

matplotlib is imported only when a function here is called (``pip install skdistill[plot]``).
"""

import math

import numpy as np

__all__ = ["plot_distilled", "plot_learning_curve"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt  # headless machines fall back to Agg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skdistill.plotting needs matplotlib: pip install 'skdistill[plot]'"
        ) from exc
    return plt


def _as_images(X, input_shape):
    """Rows of ``X`` as 2-D (grey) or HxWx3 (colour) arrays scaled to [0, 1] together.

    Samples that are not images (no ``input_shape`` and not a square number of features)
    are drawn as one-pixel-high strips.
    """
    n, n_features = X.shape
    if input_shape is None:
        side = math.isqrt(n_features)
        input_shape = (1, side, side) if side * side == n_features else (1, 1, n_features)
    if math.prod(input_shape) != n_features:
        raise ValueError(
            f"input_shape {tuple(input_shape)} does not hold {n_features} features."
        )
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    elif len(input_shape) != 3:
        input_shape = (1, 1, n_features)
    imgs = X.reshape(n, *input_shape)
    lo, hi = np.percentile(imgs, 1), np.percentile(imgs, 99)
    imgs = np.clip((imgs - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    if imgs.shape[1] == 1:
        return imgs[:, 0]
    if imgs.shape[1] != 3:
        return imgs.mean(axis=1)  # neither grey nor RGB: draw the channel mean
    return np.moveaxis(imgs, 1, -1)


def _step_batches(distiller, n):
    """``[(rows, [(step, lr), ...]), ...]``: the synthetic rows each inner step trains on.

    Steps that train on the same rows (the batches are cycled) are grouped; a sampler without
    a learned recipe has one batch of every row and no steps.
    """
    steps_of = getattr(distiller, "training_steps", None)
    if not callable(steps_of):
        return [(np.arange(n), [])]
    groups = {}
    for t, (rows, lr) in enumerate(steps_of()):
        groups.setdefault(tuple(int(r) for r in rows), []).append((t + 1, lr))
    return [(np.array(rows), steps) for rows, steps in groups.items()]


def _steps_label(steps, limit=3):
    if not steps:
        return ""
    shown = steps[:limit]
    more = ", …" if len(steps) > limit else ""
    step_text = ", ".join(str(t) for t, _ in shown) + more
    lr_text = ", ".join(f"{lr:.3g}" for _, lr in shown) + more
    noun = "step" if len(steps) == 1 else "steps"
    return f"{noun} {step_text}\nη {lr_text}"


def plot_distilled(distiller, *, max_per_class=10, class_names=None, figsize=None,
                   title=None):
    """Draw the synthetic samples as a grid: one column per class, rows by step batch.

    Each inner training step of the learned recipe trains on a batch of the synthetic set
    (the whole set, or one of the class-balanced batches of ``distilled_batch_size``, cycled
    over the steps). Rows are grouped by batch and labelled with the steps that use it and
    their learned step sizes η. Each image is titled with its class and, where soft labels
    were learned, with its two most probable classes. All images share one grey scale (1st
    to 99th percentile); samples that are not square images are drawn as strips.

    Parameters
    ----------
    distiller : fitted DatasetDistiller (or any object with ``distilled_X_``,
        ``distilled_y_`` and ``classes_``, such as a coreset selector)
    max_per_class : int, default=10
        Rows of the grid at most (each row holds at most one image per class).
    class_names : sequence or dict, default=None
        Names to print for ``classes_`` (e.g. a dataset's ``target_names``), in the order of
        ``classes_`` or keyed by class.
    figsize : tuple, default=None
        Inches; by default about 1.2 per column and 1.3 per row.
    title : str, default=None
        Figure title; by default the number of samples and steps.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    plt = _pyplot()
    X = np.asarray(distiller.distilled_X_, dtype=float)
    y = np.asarray(distiller.distilled_y_)
    classes = np.asarray(distiller.classes_)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"distilled_X_ of shape {X.shape} and distilled_y_ of shape "
                         f"{y.shape} cannot be drawn.")
    if class_names is None:
        names = [str(c) for c in classes]
    elif isinstance(class_names, dict):
        names = [str(class_names.get(c, c)) for c in classes.tolist()]
    else:
        names = [str(n) for n in class_names]
        if len(names) != len(classes):
            raise ValueError(f"class_names has {len(names)} names for {len(classes)} classes.")
    imgs = _as_images(X, getattr(distiller, "input_shape_", None))
    strip = imgs.ndim == 3 and imgs.shape[1] == 1
    col = {c: j for j, c in enumerate(classes.tolist())}
    y_col = np.array([col[c] for c in y.tolist()])
    proba = getattr(distiller, "distilled_y_proba_", None)
    soft = proba is not None and not np.allclose(
        np.asarray(proba), np.eye(len(classes))[y_col])

    # Grid rows: within each batch, the k-th image of every class.
    batches = _step_batches(distiller, X.shape[0])
    grid = []
    for b, (rows, steps) in enumerate(batches):
        per_class = [rows[y_col[rows] == j] for j in range(len(classes))]
        depth = max(len(r) for r in per_class)
        for k in range(depth):
            cells = {j: int(r[k]) for j, r in enumerate(per_class) if k < len(r)}
            if len(batches) == 1:
                label = f"sample {k + 1}"
            else:
                label = f"batch {b + 1}" + (f" ({k + 1})" if depth > 1 else "")
            if k == 0 and steps and len(batches) > 1:
                label += "\n" + _steps_label(steps)
            grid.append((label, cells))
    n_grid = len(grid)
    grid = grid[:max_per_class]

    n_rows, n_cols = len(grid), len(classes)
    fig, axes = plt.subplots(
        n_rows, n_cols, squeeze=False,
        figsize=figsize or (1.2 * n_cols + 1.2, 1.3 * n_rows + 0.8),
    )
    for i, (label, cells) in enumerate(grid):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center",
                              labelpad=4)
            if j not in cells:
                continue
            r = cells[j]
            cmap = "gray" if imgs.ndim == 3 else None
            ax.imshow(imgs[r], cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                      aspect="auto" if strip else "equal")
            text = names[j]
            if soft:
                top = np.argsort(proba[r])[::-1][:2]
                text += "\n" + " ".join(f"{names[k]}:{proba[r, k]:.2f}" for k in top)
            ax.set_title(text, fontsize=7)
    if title is None:
        title = f"{X.shape[0]} synthetic samples"
        lrs = getattr(distiller, "learned_lr_", None)
        if lrs is not None:
            lrs = np.asarray(lrs)
            title += f", {len(lrs)} steps"
            if len(batches) == 1:
                title += f" on the whole set, η {lrs.min():.3g}–{lrs.max():.3g}"
        if soft:
            title += "; learned soft labels (top 2)"
        if n_grid > n_rows:
            title += f" (first {n_rows} of {n_grid} rows)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_learning_curve(distiller, *, figsize=(7, 3)):
    """Meta-loss per iteration and validation accuracy at each validation point.

    Parameters
    ----------
    distiller : fitted DatasetDistiller
    figsize : tuple, default=(7, 3)

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=figsize)
    loss = np.asarray(distiller.loss_curve_)
    start = distiller.n_iter_ - loss.shape[0] + 1
    ax_loss.plot(np.arange(start, start + loss.shape[0]), loss, lw=0.8)
    ax_loss.set_xlabel("outer iteration")
    ax_loss.set_ylabel("meta-loss (real data)")
    ax_loss.set_yscale("log")
    if distiller.validation_scores_:
        ax_val.plot(distiller.validation_iters_, distiller.validation_scores_, marker=".")
        ax_val.axvline(distiller.best_iter_, color="grey", ls="--", lw=0.8, label="kept state")
        ax_val.legend(fontsize=8)
    ax_val.set_xlabel("outer iteration")
    ax_val.set_ylabel("validation accuracy")
    fig.tight_layout()
    return fig

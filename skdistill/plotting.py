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
    """Rows of ``X`` as 2-D (grey) or HxWx3 (colour) arrays scaled to [0, 1] together."""
    n, n_features = X.shape
    if input_shape is None:
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"cannot draw {n_features} features as an image; give input_shape."
            )
        input_shape = (1, side, side)
    imgs = X.reshape(n, *input_shape)
    lo, hi = np.percentile(imgs, 1), np.percentile(imgs, 99)
    imgs = np.clip((imgs - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    if imgs.shape[1] == 1:
        return imgs[:, 0]
    return np.moveaxis(imgs, 1, -1)


def plot_distilled(distiller, *, max_per_class=10, figsize=None):
    """Draw the synthetic samples as a grid: one column per class, one row per sample.

    Titles give the class and, where labels were learned, the two largest soft-label
    probabilities. All images share one grey scale (1st to 99th percentile).

    Parameters
    ----------
    distiller : fitted DatasetDistiller (or any object with ``distilled_X_``,
        ``distilled_y_`` and ``classes_``)
    max_per_class : int, default=10
        Rows drawn per class.
    figsize : tuple, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    plt = _pyplot()
    X = np.asarray(distiller.distilled_X_, dtype=float)
    y = np.asarray(distiller.distilled_y_)
    classes = np.asarray(distiller.classes_)
    imgs = _as_images(X, getattr(distiller, "input_shape_", None))
    proba = getattr(distiller, "distilled_y_proba_", None)
    soft = proba is not None and getattr(distiller, "learn_labels", False)
    n_rows = min(max_per_class, max(int((y == c).sum()) for c in classes))
    n_cols = len(classes)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=figsize or (1.2 * n_cols, 1.35 * n_rows + 0.3), squeeze=False
    )
    for j, c in enumerate(classes):
        rows = np.flatnonzero(y == c)[:n_rows]
        for i in range(n_rows):
            ax = axes[i, j]
            ax.set_axis_off()
            if i >= rows.shape[0]:
                continue
            ax.imshow(imgs[rows[i]], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            title = str(c)
            if soft:
                top = np.argsort(proba[rows[i]])[::-1][:2]
                title = " ".join(f"{classes[k]}:{proba[rows[i], k]:.2f}" for k in top)
            ax.set_title(title, fontsize=7)
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

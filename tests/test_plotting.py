"""The pictures: PNG files of the synthetic images and of the learning curves."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from skdistill import DatasetDistiller, RandomSelector  # noqa: E402
from skdistill.plotting import plot_distilled, plot_learning_curve  # noqa: E402


@pytest.fixture(scope="module")
def digits_small():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:300] / 16, y[:300]


@pytest.fixture(scope="module")
def batched(digits_small):
    """20 images in two class-balanced batches, soft labels learned."""
    X, y = digits_small
    return DatasetDistiller(n_distilled=20, distilled_batch_size=10, n_steps=4,
                            learn_labels=True, max_iter=15, validation_interval=5,
                            random_state=0, device="cpu").fit(X, y)


def save_png(fig, path, dpi=50):
    fig.savefig(path, dpi=dpi)
    width, height = fig.get_size_inches() * dpi
    plt.close(fig)
    return mpimg.imread(path), (round(height), round(width))


def assert_not_blank(image):
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # more than a flat colour
    dark = (rgb.mean(axis=-1) < 0.5).mean()
    assert 0.02 < dark < 0.98  # something drawn on a light background


def test_distilled_grid_png_has_a_row_per_step_batch_and_soft_label_titles(batched, tmp_path):
    fig = plot_distilled(batched)
    axes = np.array(fig.axes).reshape(2, 10)  # 2 step batches x 10 classes
    assert axes[0, 0].get_ylabel().startswith("batch 1\nsteps 1, 3")
    assert axes[1, 0].get_ylabel().startswith("batch 2\nsteps 2, 4")
    title = axes[0, 3].get_title()
    assert title.startswith("3\n3:0.")  # the class, then its top soft-label classes
    assert "soft labels" in fig._suptitle.get_text()
    image, size = save_png(fig, tmp_path / "grid.png")
    assert image.shape[:2] == size and size[1] > 400
    assert_not_blank(image)


def test_distilled_grid_of_the_whole_set_uses_class_names(digits_small, tmp_path):
    X, y = digits_small
    d = DatasetDistiller(n_distilled=20, max_iter=3, random_state=0, device="cpu").fit(X, y)
    names = [f"digit {i}" for i in range(10)]
    fig = plot_distilled(d, class_names=names)
    assert len(fig.axes) == 20
    assert fig.axes[0].get_title() == "digit 0" and fig.axes[0].get_ylabel() == "sample 1"
    assert "on the whole set" in fig._suptitle.get_text()
    image, size = save_png(fig, tmp_path / "whole.png")
    assert image.shape[:2] == size
    assert_not_blank(image)


def test_max_per_class_caps_the_rows(batched):
    fig = plot_distilled(batched, max_per_class=1)
    assert len(fig.axes) == 10
    assert "first 1 of 2 rows" in fig._suptitle.get_text()
    plt.close(fig)


def test_samples_that_are_not_images_are_drawn_as_strips(tiny_data, tmp_path):
    X, y = tiny_data  # 6 features
    d = DatasetDistiller(n_distilled=3, max_iter=2, random_state=0, device="cpu").fit(X, y)
    image, size = save_png(plot_distilled(d), tmp_path / "strips.png", dpi=80)
    assert image.shape[:2] == size
    assert_not_blank(image)


def test_coreset_selectors_are_drawn_too(digits_small, tmp_path):
    X, y = digits_small
    selector = RandomSelector(n_distilled=10, random_state=0).fit(X, y)
    image, _ = save_png(plot_distilled(selector), tmp_path / "random.png")
    assert_not_blank(image)


def test_colour_images_are_drawn_in_colour(tmp_path):
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 10)
    X = rng.uniform(size=(20, 3 * 4 * 4)) + y[:, None]
    d = DatasetDistiller(n_distilled=2, input_shape=(3, 4, 4), max_iter=2, random_state=0,
                         device="cpu").fit(X, y)
    image, _ = save_png(plot_distilled(d), tmp_path / "colour.png", dpi=80)
    assert np.abs(image[..., 0] - image[..., 1]).max() > 0.1  # not grey


def test_learning_curve_png(batched, tmp_path):
    fig = plot_learning_curve(batched)
    loss_ax, val_ax = fig.axes
    assert len(loss_ax.lines[0].get_xdata()) == batched.n_iter_
    np.testing.assert_allclose(val_ax.lines[0].get_ydata(), batched.validation_scores_)
    image, size = save_png(fig, tmp_path / "curve.png", dpi=60)
    assert image.shape[:2] == size
    assert_not_blank(image)


def test_mismatched_class_names_are_refused(batched):
    with pytest.raises(ValueError, match="class_names has 3 names for 10 classes"):
        plot_distilled(batched, class_names=["a", "b", "c"])

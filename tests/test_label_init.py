"""label_init: soft labels the synthetic samples start with, given or from a teacher."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from skdistill import DatasetDistiller

FAST = dict(max_iter=15, module_params={"hidden_layer_sizes": (16,)}, n_inits=2, n_steps=3,
            random_state=0)
# a fit that leaves the synthetic samples where they start
FROZEN = dict(max_iter=1, learning_rate=1e-12, step_size_learning_rate=1e-12)

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]])


def fast(**kw):
    return DatasetDistiller(**{**FAST, **kw})


def test_given_labels_are_the_fixed_targets(tiny_data):
    X, y = tiny_data
    d = fast(n_distilled=3, label_init=P).fit(X, y)
    np.testing.assert_allclose(d.distilled_y_proba_, P, atol=1e-6)
    np.testing.assert_array_equal(d.distilled_y_, [0, 1, 2])
    # the same fit with hard targets learns other samples
    hard = fast(n_distilled=3).fit(X, y)
    assert np.abs(hard.distilled_X_ - d.distilled_X_).max() > 1e-3


def test_given_labels_start_the_learned_ones(tiny_data):
    X, y = tiny_data
    start = fast(n_distilled=3, label_init=P, learn_labels=True, **FROZEN).fit(X, y)
    np.testing.assert_allclose(start.distilled_y_proba_, P, atol=1e-6)
    learned = fast(n_distilled=3, label_init=P, learn_labels=True,
                   validation_fraction=0).fit(X, y)
    assert np.abs(learned.distilled_y_proba_ - P).max() > 1e-3
    np.testing.assert_allclose(learned.distilled_y_proba_.sum(1), 1.0, atol=1e-6)


def test_temperature_softens_the_labels(tiny_data):
    X, y = tiny_data
    d = fast(n_distilled=3, label_init=P, label_temperature=2.0, **FROZEN).fit(X, y)
    expected = np.sqrt(P) / np.sqrt(P).sum(1, keepdims=True)
    np.testing.assert_allclose(d.distilled_y_proba_, expected, atol=1e-6)
    assert (d.distilled_y_proba_.max(1) < P.max(1)).all()


def test_an_unfitted_teacher_is_cloned_and_fitted_on_the_training_split(tiny_data):
    X, y = tiny_data
    teacher = LogisticRegression(C=0.01)
    d = fast(n_distilled=6, label_init=teacher, validation_fraction=0, **FROZEN).fit(X, y)
    assert not hasattr(teacher, "coef_")  # the given estimator stays as it was
    expected = LogisticRegression(C=0.01).fit(X, y).predict_proba(d.distilled_X_)
    np.testing.assert_allclose(d.distilled_y_proba_, expected, atol=1e-5)
    assert d.distilled_y_proba_.max() < 0.99  # soft: a weak teacher


def test_a_fitted_teacher_is_used_as_it_is(tiny_data):
    X, y = tiny_data
    teacher = LogisticRegression(C=0.01).fit(X[::3], y[::3])
    coef = teacher.coef_.copy()
    d = fast(n_distilled=6, label_init=teacher, **FROZEN).fit(X, y)
    np.testing.assert_array_equal(teacher.coef_, coef)
    np.testing.assert_allclose(d.distilled_y_proba_, teacher.predict_proba(d.distilled_X_),
                               atol=1e-5)


def test_a_frozen_teacher_survives_clone(tiny_data):
    X, y = tiny_data
    teacher = LogisticRegression(C=0.01).fit(X[::3], y[::3])
    # clone (GridSearchCV, Pipelines) would refit a bare fitted teacher; a frozen one stays
    d = clone(fast(n_distilled=6, label_init=FrozenEstimator(teacher), **FROZEN)).fit(X, y)
    np.testing.assert_allclose(d.distilled_y_proba_, teacher.predict_proba(d.distilled_X_),
                               atol=1e-5)


def test_the_teacher_labels_the_decoded_images(digits_split):
    X, _, y, _ = digits_split
    teacher = LogisticRegression(C=0.01, max_iter=200).fit(X, y)
    d = DatasetDistiller(n_distilled=40, multi_formation=2, input_shape=(1, 8, 8), max_iter=1,
                         label_init=teacher, learning_rate=1e-12, random_state=0).fit(X, y)
    assert d.distilled_X_.shape == (40, 64)
    np.testing.assert_allclose(d.distilled_y_proba_, teacher.predict_proba(d.distilled_X_),
                               atol=1e-5)


@pytest.mark.parametrize(
    "label_init, match",
    [
        (P[:2],
         r"label_init has shape \(2, 3\); expected \(n_distilled, n_classes\) = \(3, 3\)"),
        (P * [[1], [1], [2]], "label_init has rows that do not sum to 1 \\(row 2 sums to 2\\)"),
        (np.array([[1.5, -0.5, 0.0], *P[1:]]), "label_init has negative, NaN or infinite"),
        (np.where(P == 0.8, np.nan, P), "label_init has negative, NaN or infinite"),
        ("teacher", "'label_init' parameter"),
    ],
)
def test_bad_labels_are_refused_before_any_work(tiny_data, label_init, match):
    X, y = tiny_data
    d = fast(n_distilled=3, label_init=label_init)
    with pytest.raises(ValueError, match=match):
        d.fit(X, y)
    assert not hasattr(d, "distilled_X_")


def test_a_teacher_of_other_classes_is_refused(tiny_data):
    X, y = tiny_data
    teacher = LogisticRegression().fit(X, y + 1)
    d = fast(n_distilled=3, label_init=teacher)
    with pytest.raises(ValueError, match=r"classes_ \[1, 2, 3\] are not the classes of y"):
        d.fit(X, y)
    assert not hasattr(d, "distilled_X_")


def test_nonpositive_temperature_is_refused(tiny_data):
    X, y = tiny_data
    with pytest.raises(ValueError, match="'label_temperature' parameter"):
        fast(n_distilled=3, label_init=P, label_temperature=0.0).fit(X, y)


def test_saved_fixed_labels_come_back_and_a_warm_start_keeps_them(tiny_data, tmp_path):
    X, y = tiny_data
    d = fast(n_distilled=3, label_init=P).fit(X, y)
    d.save(tmp_path / "soft.pt")
    back = DatasetDistiller.load(tmp_path / "soft.pt")
    np.testing.assert_array_equal(back.get_params()["label_init"], P)
    np.testing.assert_allclose(back.distilled_y_proba_, d.distilled_y_proba_, atol=1e-7)
    # without label_init, a warm start continues from the soft labels it had, not hard ones
    back.set_params(label_init=None, warm_start=True, max_iter=3)
    back.fit(X, y)
    np.testing.assert_allclose(back.distilled_y_proba_, P, atol=1e-6)


def test_a_checkpoint_of_soft_labels_does_not_resume_with_hard_ones(tiny_data, tmp_path):
    X, y = tiny_data
    path = tmp_path / "soft.ckpt"
    fast(n_distilled=3, label_init=P, checkpoint=path, checkpoint_interval=5).fit(X, y)
    again = fast(n_distilled=3, checkpoint=path, warm_start=True)
    with pytest.raises(ValueError, match="soft_labels: checkpoint True, now False"):
        again.fit(X, y)


def test_a_teacher_is_not_saved_but_its_labels_are(tiny_data, tmp_path):
    X, y = tiny_data
    teacher = LogisticRegression(C=0.01).fit(X, y)
    d = fast(n_distilled=3, label_init=teacher, **FROZEN).fit(X, y)
    d.save(tmp_path / "teacher.pt")
    back = DatasetDistiller.load(tmp_path / "teacher.pt")
    assert back.get_params()["label_init"] is None
    np.testing.assert_allclose(back.distilled_y_proba_, d.distilled_y_proba_, atol=1e-7)
    assert back.distilled_y_proba_.max() < 0.99


class _Uniform:
    """Not an estimator: only predict_proba, as any labelling object may offer."""

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)


def test_an_object_with_only_predict_proba_labels_as_it_is(tiny_data):
    X, y = tiny_data
    d = fast(n_distilled=3, label_init=_Uniform(), **FROZEN).fit(X, y)
    np.testing.assert_allclose(d.distilled_y_proba_, 1 / 3, atol=1e-6)

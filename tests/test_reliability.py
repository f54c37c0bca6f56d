"""Faults a long distillation run meets: checkpoints, resumption, devices, odd input."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning

from skdistill import DatasetDistiller

FAST = dict(max_iter=30, module_params={"hidden_layer_sizes": (16,)}, n_inits=2, n_steps=3,
            random_state=0, validation_interval=5)


def _interrupt_at(n):
    def callback(distiller, n_iter):
        if n_iter == n:
            raise KeyboardInterrupt

    return callback


# --------------------------------------------------------------------------- checkpoints


def test_resumed_run_equals_the_uninterrupted_run(tiny_data, tmp_path):
    X, y = tiny_data
    whole = DatasetDistiller(**FAST, checkpoint=tmp_path / "a.ckpt",
                             checkpoint_interval=10).fit(X, y)

    path = tmp_path / "b.ckpt"
    broken = DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10,
                              callback=_interrupt_at(17))
    with pytest.warns(ConvergenceWarning, match="interrupted at iteration 17"):
        broken.fit(X, y)
    assert broken.n_iter_ == 17  # the callback runs after the step of iteration 17

    resumed = DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10,
                               warm_start=True).fit(X, y)  # a new process would do the same
    assert resumed.n_iter_ == whole.n_iter_ == 30
    np.testing.assert_array_equal(resumed.distilled_X_, whole.distilled_X_)
    np.testing.assert_array_equal(resumed.learned_lr_, whole.learned_lr_)
    assert resumed.loss_curve_ == whole.loss_curve_
    assert resumed.validation_scores_ == whole.validation_scores_
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic writes leave no temporary file


def _checkpointed_iteration(path):
    from skdistill._checkpoint import read

    return read(path)["n_iter"]


def _assert_resumes_to(path, whole, X, y, callback=None):
    resumed = DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10,
                               warm_start=True, callback=callback).fit(X, y)
    assert resumed.n_iter_ == whole.n_iter_ == 30
    np.testing.assert_array_equal(resumed.distilled_X_, whole.distilled_X_)
    np.testing.assert_array_equal(resumed.learned_lr_, whole.learned_lr_)
    assert resumed.loss_curve_ == whole.loss_curve_
    assert resumed.validation_scores_ == whole.validation_scores_
    assert resumed.validation_iters_ == whole.validation_iters_
    assert resumed.best_iter_ == whole.best_iter_


def test_an_interrupt_checkpoints_the_last_finished_iteration(tiny_data, tmp_path):
    """Interrupted by its callback at iteration 17 (a deadline, say), the fit writes the
    checkpoint of iteration 17, not only the periodic one of 10, and says so."""
    X, y = tiny_data
    whole = DatasetDistiller(**FAST).fit(X, y)
    path = tmp_path / "run.ckpt"
    with pytest.warns(ConvergenceWarning, match="the checkpoint holds iteration 17"):
        DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10,
                         callback=_interrupt_at(17)).fit(X, y)
    assert _checkpointed_iteration(path) == 17
    _assert_resumes_to(path, whole, X, y)


def test_an_interrupt_inside_the_meta_gradient_checkpoints_the_iteration_before(
        tiny_data, tmp_path, monkeypatch):
    """Ctrl-C while iteration 13 computes its meta-gradient (its real minibatch already
    drawn, so the random stream has moved on): the checkpoint holds iteration 12 with the
    random stream as it was then, and the resumed run is the uninterrupted one."""
    import skdistill.distiller as distiller_module

    X, y = tiny_data
    whole = DatasetDistiller(**FAST).fit(X, y)
    real = distiller_module.sample_params
    calls = []

    def interrupted(*args, **kwargs):
        if "subset" in kwargs:  # the θ0 draws of a training iteration, not of validation
            calls.append(1)
            if len(calls) == 13:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        m.setattr(distiller_module, "sample_params", interrupted)
        with pytest.warns(ConvergenceWarning, match="at iteration 13 .*checkpoint holds "
                                                    "iteration 12"):
            broken = DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10).fit(X, y)
    assert broken.n_iter_ == 12 and _checkpointed_iteration(path) == 12
    _assert_resumes_to(path, whole, X, y)


def test_an_interrupt_during_validation_checkpoints_the_iteration_to_validate_again(
        tiny_data, tmp_path, monkeypatch):
    """Ctrl-C while iteration 15 is being validated: the iteration's update is done, so the
    checkpoint holds iteration 15 without its score, the fit keeps the books of iteration
    10, and the resumed run validates iteration 15 first, runs the callback that the
    interruption skipped, and ends as the uninterrupted run."""
    import skdistill._unroll as unroll_module

    X, y = tiny_data
    whole = DatasetDistiller(**FAST).fit(X, y)
    assert 15 in whole.validation_iters_
    real = unroll_module.predict_stacked
    finished = [0]  # the last iteration the callback saw
    seen = []  # every iteration the callbacks saw, with its validation books

    def interrupted(*args, **kwargs):
        if finished[0] == 14:  # inside iteration 15, after its update: its validation
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    def note(distiller, n_iter):
        finished[0] = n_iter
        seen.append((n_iter, list(distiller.validation_iters_)))

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        m.setattr(unroll_module, "predict_stacked", interrupted)
        with pytest.warns(ConvergenceWarning, match=r"at iteration 15 .*checkpoint holds "
                                                    r"iteration 15 \(its validation runs"):
            broken = DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10,
                                      callback=note).fit(X, y)
    assert broken.n_iter_ == 15 and _checkpointed_iteration(path) == 15
    assert broken.validation_iters_ == [0, 5, 10]  # 15's score was never taken
    assert [n for n, _ in seen] == list(range(1, 15))
    _assert_resumes_to(path, whole, X, y, callback=note)
    # one call per iteration in all, 15's after its validation on resuming
    assert [n for n, _ in seen] == list(range(1, 31))
    assert seen[14] == (15, [0, 5, 10, 15])


def test_an_interrupt_during_the_update_keeps_the_periodic_checkpoint(
        tiny_data, tmp_path, monkeypatch):
    """Interrupted just after the optimiser moved the state of iteration 13, the fit holds
    a state that belongs to no finished iteration: the checkpoint of iteration 10 stays,
    the warning says so, and resuming from it still gives the uninterrupted result."""
    X, y = tiny_data
    whole = DatasetDistiller(**FAST).fit(X, y)
    real = torch.optim.Adam.step
    calls = []

    def step_then_interrupt(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 13:
            raise KeyboardInterrupt
        return out

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as m:
        m.setattr(torch.optim.Adam, "step", step_then_interrupt)
        with pytest.warns(ConvergenceWarning, match="no checkpoint was written at the stop"):
            DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10).fit(X, y)
    assert _checkpointed_iteration(path) == 10
    _assert_resumes_to(path, whole, X, y)


def test_truncated_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    X, y = tiny_data
    path = tmp_path / "run.ckpt"
    DatasetDistiller(**FAST, checkpoint=path, checkpoint_interval=10).fit(X, y)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    d = DatasetDistiller(**FAST, checkpoint=path, warm_start=True)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        d.fit(X, y)
    assert not hasattr(d, "distilled_X_")


def test_checkpoint_of_another_fit_is_refused(tiny_data, tmp_path):
    X, y = tiny_data
    path = tmp_path / "run.ckpt"
    DatasetDistiller(**FAST, checkpoint=path).fit(X, y)
    with pytest.raises(ValueError, match="n_steps: checkpoint 3, now 4"):
        DatasetDistiller(**{**FAST, "n_steps": 4}, checkpoint=path, warm_start=True).fit(X, y)


def test_a_file_that_is_not_a_checkpoint_is_refused(tiny_data, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a skdistill checkpoint"):
        DatasetDistiller(**FAST, checkpoint=path, warm_start=True).fit(*tiny_data)


# --------------------------------------------------------------------------- divergence


def test_exploding_step_sizes_stop_the_fit_with_the_best_state(tiny_data):
    X, y = tiny_data
    d = DatasetDistiller(**{**FAST, "max_iter": 300}, step_size_learning_rate=50.0,
                         learning_rate_schedule="constant")
    with pytest.warns(ConvergenceWarning, match="lower learning_rate or inner_lr_init"):
        d.fit(X, y)
    assert np.isfinite(d.distilled_X_).all() and np.isfinite(d.learned_lr_).all()
    assert d.best_validation_score_ == max(d.validation_scores_)


# --------------------------------------------------------------------------- devices


def test_model_fitted_on_gpu_scores_on_a_cpu_only_machine(tiny_data):
    X, y = tiny_data
    d = DatasetDistiller(**FAST).fit(X, y)
    expected = d.score(X, y)
    d.device_ = torch.device("cuda", 0)  # what a GPU fit records
    restored = pickle.loads(pickle.dumps(d))
    if not torch.cuda.is_available():
        assert restored.score(X, y) == expected  # falls back to the CPU


def test_device_auto_falls_back_to_cpu(tiny_data):
    d = DatasetDistiller(**{**FAST, "max_iter": 2}, device="auto").fit(*tiny_data)
    assert d.device_.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_device_is_named(tiny_data):
    with pytest.raises(ValueError, match="device='tpu9' is not a valid torch device"):
        DatasetDistiller(**FAST, device="tpu9").fit(*tiny_data)


# --------------------------------------------------------------------------- odd input


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda X, y: (sp.csr_matrix(X), y), TypeError, "dense data is required"),
        (lambda X, y: (X.reshape(len(X), 2, 3), y), ValueError, "Found array with dim 3"),
        (lambda X, y: (X[:0], y[:0]), ValueError, "0 sample"),
        (lambda X, y: (X.astype(object), y), None, None),  # numeric objects are converted
    ],
)
def test_array_forms(tiny_data, make, error, match):
    X, y = make(*tiny_data)
    d = DatasetDistiller(**{**FAST, "max_iter": 2})
    if error is None:
        assert d.fit(X, y).distilled_X_.dtype == np.float64
    else:
        with pytest.raises(error, match=match):
            d.fit(X, y)
        assert not hasattr(d, "distilled_X_")


def test_column_vector_y_warns_as_scikit_learn_does(tiny_data):
    X, y = tiny_data
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        DatasetDistiller(**{**FAST, "max_iter": 2}).fit(X, y[:, None])


def test_class_smaller_than_its_share_warns(tiny_data):
    X, y = tiny_data
    keep = (y != 2) | (np.arange(len(y)) < 62)  # class 2 keeps 2 samples
    with pytest.warns(UserWarning, match="class 2 has .* fewer than its 4 synthetic samples"):
        d = DatasetDistiller(**{**FAST, "max_iter": 2, "validation_fraction": 0.0},
                             n_distilled=12).fit(X[keep], y[keep])
    assert d.distilled_X_.shape == (12, 6)


# --------------------------------------------------------------------------- properties

DOCUMENTED = (ValueError, TypeError)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_samples=st.integers(1, 40),
    n_features=st.integers(1, 8),
    n_classes=st.integers(1, 5),
    n_distilled=st.integers(1, 12),
    labels=st.sampled_from(["int", "str", "float"]),
    dtype=st.sampled_from([np.float32, np.float64, np.int64]),
    seed=st.integers(0, 1000),
)
def test_fit_succeeds_with_documented_shapes_or_raises_a_documented_error(
        n_samples, n_features, n_classes, n_distilled, labels, dtype, seed):
    rng = np.random.RandomState(seed)
    X = (rng.normal(size=(n_samples, n_features)) * 3).astype(dtype)
    y_int = rng.randint(0, n_classes, size=n_samples)
    y = {"int": y_int, "str": np.array([f"c{v}" for v in y_int]),
         "float": y_int.astype(float) + 0.5}[labels]
    d = DatasetDistiller(n_distilled=n_distilled, max_iter=2, n_steps=2, n_inits=1,
                         module_params={"hidden_layer_sizes": (4,)}, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            d.fit(X, y)
        except DOCUMENTED as exc:
            assert str(exc)  # a message, and no fitted state left behind
            assert not hasattr(d, "distilled_X_")
            return
    k = len(np.unique(y))
    assert d.distilled_X_.shape == (n_distilled, n_features)
    assert np.isfinite(d.distilled_X_).all()
    assert d.distilled_y_.shape == (n_distilled,) and set(d.distilled_y_) <= set(y)
    assert d.distilled_y_proba_.shape == (n_distilled, k)
    assert d.learned_lr_.shape == (2,) and (d.learned_lr_ > 0).all()


def _every_estimator():
    from skdistill import (
        ClassMeans,
        DistilledClassifier,
        Herding,
        KCenterGreedy,
        KMeansSelector,
        RandomSelector,
    )

    small = DatasetDistiller(**{**FAST, "max_iter": 2})
    yield small
    yield DistilledClassifier(small, max_epochs=2)
    for cls in (RandomSelector, ClassMeans, KMeansSelector, Herding, KCenterGreedy):
        yield cls(n_distilled=3, random_state=0)


@pytest.mark.parametrize("estimator", list(_every_estimator()), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda X, y: (np.where(X > 2, np.nan, X), y), ValueError, "NaN"),
        (lambda X, y: (np.where(X > 2, np.inf, X), y), ValueError, "infinity"),
        (lambda X, y: (sp.csr_matrix(X), y), TypeError, "dense data is required"),
        (lambda X, y: (X.reshape(len(X), 2, 3), y), ValueError, "dim 3"),
        (lambda X, y: (X[:0], y[:0]), ValueError, "0 sample"),
        (lambda X, y: (X, y[:-1]), ValueError, "inconsistent numbers of samples"),
        (lambda X, y: (X, np.zeros_like(y)), ValueError, "y has 1 class"),
    ],
    ids=["nan", "inf", "sparse", "3-d", "empty", "lengths", "one-class"],
)
def test_every_estimator_refuses_bad_input_before_any_work(tiny_data, estimator, make, error,
                                                           match):
    X, y = make(*tiny_data)
    est = clone(estimator)
    with pytest.raises(error, match=match):
        est.fit(X, y)
    assert not [a for a in vars(est) if a.endswith("_") and not a.startswith("_")]

"""Distillation inside the tools users already have: Pipelines, searches, CV and pickles."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdistill import DatasetDistiller, DistilledClassifier


def quick_distiller(**params):
    """A distiller that fits digits in well under a second (about 60% test accuracy)."""
    defaults = dict(n_distilled=10, max_iter=10, n_steps=5, inner_lr_init=0.3,
                    learning_rate=0.05, random_state=0)
    return DatasetDistiller(**{**defaults, **params})


def test_pipeline_distils_the_scaled_data(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    pipe = make_pipeline(StandardScaler(),
                         DistilledClassifier(quick_distiller(), random_state=0))
    pipe.fit(X_train, y_train)

    scaled_test = pipe[0].transform(X_test)
    expected = pipe[-1].distiller_.evaluate(scaled_test, y_test, n_inits=1, random_state=0)[0]
    assert pipe.score(X_test, y_test) == pytest.approx(expected, abs=1e-12)
    assert pipe.score(X_test, y_test) > 0.4


def test_grid_search_over_distiller_parameters_gives_the_same_result_with_two_jobs(
        digits_split):
    X_train, _, y_train, _ = digits_split
    grid = {"distiller__n_distilled": [10, 20]}
    clf = DistilledClassifier(quick_distiller(), random_state=0)

    serial = GridSearchCV(clf, grid, cv=2, n_jobs=1).fit(X_train, y_train)
    parallel = GridSearchCV(clf, grid, cv=2, n_jobs=2).fit(X_train, y_train)

    assert serial.best_params_ in ({"distiller__n_distilled": 10},
                                   {"distiller__n_distilled": 20})
    assert serial.best_estimator_.distiller_.distilled_X_.shape[0] == \
        serial.best_params_["distiller__n_distilled"]
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])
    assert serial.best_score_ > 0.3


def test_cross_val_score_gives_one_accuracy_per_fold(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), training="standard", max_epochs=30,
                              random_state=0)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)

    scores = cross_val_score(clf, X_train, y_train, cv=cv)

    train, test = next(cv.split(X_train, y_train))
    first_fold = clone(clf).fit(X_train[train], y_train[train])
    assert scores.shape == (3,)
    assert scores[0] == first_fold.score(X_train[test], y_train[test])
    assert scores.min() > 0.4


def test_distiller_as_imblearn_sampler_feeds_only_the_synthetic_set_to_the_estimator(
        digits_split):
    from imblearn.pipeline import make_pipeline as make_imblearn_pipeline

    X_train, X_test, y_train, y_test = digits_split
    pipe = make_imblearn_pipeline(StandardScaler(), quick_distiller(), LogisticRegression())
    pipe.fit(X_train, y_train)

    scaler, distiller, logreg = pipe[0], pipe[1], pipe[-1]
    on_synthetic = LogisticRegression().fit(distiller.distilled_X_, distiller.distilled_y_)
    np.testing.assert_allclose(logreg.coef_, on_synthetic.coef_)
    # At prediction the sampler is skipped: real (scaled) samples reach the estimator.
    np.testing.assert_array_equal(pipe.predict(X_test),
                                  on_synthetic.predict(scaler.transform(X_test)))
    assert pipe.score(X_test, y_test) > 0.4  # 10 samples after 10 iterations; chance is 0.1


def test_pickled_classifier_predicts_identically(digits_split):
    X_train, X_test, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), random_state=0).fit(X_train, y_train)

    restored = pickle.loads(pickle.dumps(clf))

    np.testing.assert_array_equal(restored.predict_proba(X_test), clf.predict_proba(X_test))
    np.testing.assert_array_equal(restored.distiller_.distilled_X_, clf.distiller_.distilled_X_)


def test_grid_search_over_a_distiller_maximises_its_own_score(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(quick_distiller(), {"n_distilled": [10, 20]}, cv=cv)
    search.fit(X_train, y_train)

    # The split score is DatasetDistiller.score: the learned recipe's accuracy over 5 θ0.
    train, test = next(cv.split(X_train, y_train))
    best = clone(search.best_estimator_).fit(X_train[train], y_train[train])
    best_index = search.best_index_
    assert search.cv_results_["split0_test_score"][best_index] == \
        best.score(X_train[test], y_train[test])
    assert search.score(X_test, y_test) == search.best_estimator_.score(X_test, y_test)
    assert search.best_score_ > 0.4

"""validation_scoring: the distiller keeps the state that a user-given score prefers."""

import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from skdistill import DatasetDistiller, DistilledClassifier, TrainingScorer
from skdistill.scoring import FixedSet


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


class ScriptedScore:
    """Returns the given scores in turn and records what each call saw."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = []

    def __call__(self, distiller, X, y):
        self.seen.append({"X": distiller.distilled_X_.copy(),
                          "proba": distiller.distilled_y_proba_.copy(),
                          "lr": distiller.learned_lr_.copy(),
                          "n_val": len(y), "y": np.asarray(y).copy(), "X_val": X})
        return self.scores[len(self.seen) - 1]


def test_the_kept_state_is_the_one_the_scoring_preferred(digits):
    X, y = digits
    # validation at iterations 0, 3, 6, 9, 12: the scripted score prefers iteration 6
    scoring = ScriptedScore([0.1, 0.5, 0.9, 0.2, 0.3])
    d = DatasetDistiller(n_distilled=10, max_iter=12, validation_interval=3,
                         learn_labels=True, validation_scoring=scoring,
                         random_state=0).fit(X, y)
    assert d.validation_iters_ == [0, 3, 6, 9, 12]
    assert d.validation_scores_ == [0.1, 0.5, 0.9, 0.2, 0.3]
    assert d.best_iter_ == 6 and d.best_validation_score_ == 0.9
    kept = scoring.seen[2]
    np.testing.assert_array_equal(d.distilled_X_, kept["X"])
    np.testing.assert_array_equal(d.distilled_y_proba_, kept["proba"])
    np.testing.assert_array_equal(d.learned_lr_, kept["lr"])
    # each call saw another state, and the held-out split (10 % of 1797 rows), real labels
    assert not np.array_equal(scoring.seen[1]["X"], scoring.seen[2]["X"])
    assert scoring.seen[0]["n_val"] == 180 and scoring.seen[0]["X_val"].shape == (180, 64)
    assert set(np.unique(scoring.seen[0]["y"])) == set(range(10))


def test_a_nan_score_never_counts_as_the_best(digits):
    X, y = digits
    nan = float("nan")
    # a scorer that fails on the initial state and once more later: iteration 9 is kept
    scoring = ScriptedScore([nan, 0.5, nan, 0.7, 0.6])
    with pytest.warns(RuntimeWarning, match="returned nan at iteration") as record:
        d = DatasetDistiller(n_distilled=10, max_iter=12, validation_interval=3,
                             validation_scoring=scoring, random_state=0).fit(X, y)
    nan_iterations = [int(re.search(r"returned nan at iteration (\d+)", str(w.message))[1])
                      for w in record if "returned nan" in str(w.message)]
    assert nan_iterations == [0, 6]
    assert d.best_iter_ == 9 and d.best_validation_score_ == 0.7
    np.testing.assert_array_equal(d.distilled_X_, scoring.seen[3]["X"])


def test_the_scorer_can_run_the_learned_recipe_of_the_state_under_test(digits):
    X, y = digits

    class RecipeScore:
        def __init__(self):
            self.scores, self.held_out = [], None

        def __call__(self, distiller, X_val, y_val):
            self.held_out = (X_val, y_val)
            self.scores.append(distiller.score(X_val, y_val))
            return self.scores[-1]

    scoring = RecipeScore()
    d = DatasetDistiller(n_distilled=10, max_iter=8, validation_interval=4,
                         validation_scoring=scoring, random_state=0).fit(X, y)
    assert len(scoring.scores) == 3 and len(set(scoring.scores)) > 1
    # the kept state, scored again after the fit, gives what the scorer saw for it
    assert d.best_validation_score_ == max(scoring.scores)
    assert d.score(*scoring.held_out) == pytest.approx(d.best_validation_score_, abs=1e-12)


def test_without_validation_scoring_the_recipe_decides(digits):
    X, y = digits
    d = DatasetDistiller(n_distilled=10, max_iter=12, validation_interval=3,
                         random_state=0).fit(X, y)
    # the recipe's accuracy on the held-out split: fractions of 180 samples x 4 draws
    assert all(abs(s * 720 - round(s * 720)) < 1e-9 for s in d.validation_scores_)
    assert d.best_validation_score_ == max(d.validation_scores_)


def test_the_scoring_sees_the_labels_of_the_malicious_objective(digits):
    X, y = digits
    scoring = ScriptedScore([0.0, 0.0])
    DatasetDistiller(n_distilled=10, max_iter=2, validation_interval=2, relabel={3: 8},
                     validation_scoring=scoring, random_state=0).fit(X, y)
    labels = scoring.seen[0]["y"]
    assert 3 not in labels and 8 in labels  # real 3s are to be called 8


def test_training_scorer_is_the_mean_accuracy_of_its_trained_networks(digits):
    X, y = digits
    d = DatasetDistiller(n_distilled=20, max_iter=5, learn_labels=True,
                         random_state=0).fit(X[:1500], y[:1500])
    template = DistilledClassifier(training="standard", max_epochs=30, device="cpu")
    score = TrainingScorer(template, n_runs=2, random_state=7)(d, X[1500:], y[1500:])
    by_hand = []
    for seed in (7, 8):
        clf = clone(template).set_params(
            distiller=FixedSet(d.distilled_X_, d.distilled_y_, d.distilled_y_proba_,
                               d.classes_, d.module_, d.input_shape_), random_state=seed)
        by_hand.append(clf.fit(X[:1500], y[:1500]).score(X[1500:], y[1500:]))
    assert score == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert by_hand[0] != by_hand[1]  # two different networks
    assert 0.5 < score <= 1.0  # 20 samples trained into a network that generalises


def test_training_scorer_trains_the_distillers_network_by_default(digits, monkeypatch):
    X, y = digits
    d = DatasetDistiller(n_distilled=10, max_iter=3, module_params={"hidden_layer_sizes": (7,)},
                         random_state=0).fit(X, y)
    trained = []
    original = DistilledClassifier.fit

    def spy(self, X_, y_):
        trained.append(original(self, X_, y_).net_.module_)
        return self

    monkeypatch.setattr(DistilledClassifier, "fit", spy)
    TrainingScorer(DistilledClassifier(training="standard", max_epochs=5))(d, X, y)
    (net,) = trained
    # the distiller's MLP 64-7-10, not the built-in default (256 hidden units)
    assert sum(p.numel() for p in net.parameters()) == 64 * 7 + 7 + 7 * 10 + 10


def test_fits_with_a_training_scorer_are_reproducible(digits):
    X, y = digits
    scorer = TrainingScorer(DistilledClassifier(training="standard", max_epochs=10))
    params = dict(n_distilled=10, max_iter=6, validation_interval=2, random_state=3,
                  validation_scoring=scorer)
    a = DatasetDistiller(**params).fit(X, y)
    b = DatasetDistiller(**params).fit(X, y)
    assert a.validation_scores_ == b.validation_scores_
    np.testing.assert_array_equal(a.distilled_X_, b.distilled_X_)


def test_validation_scoring_needs_a_held_out_split(digits):
    X, y = digits
    d = DatasetDistiller(validation_fraction=0, validation_scoring=ScriptedScore([1.0]))
    with pytest.raises(ValueError, match="validation_scoring=.*validation_fraction=0"):
        d.fit(X, y)
    assert not hasattr(d, "distilled_X_")


@pytest.mark.parametrize("bad, message", [
    (TrainingScorer(DistilledClassifier(training="learned")), "training='standard'"),
    (TrainingScorer(n_runs=0), "n_runs"),
])
def test_a_bad_training_scorer_is_refused_before_any_work(digits, bad, message):
    X, y = digits
    calls = []
    d = DatasetDistiller(max_iter=3, validation_scoring=bad,
                         callback=lambda est, it: calls.append(it))
    with pytest.raises(ValueError, match=message):
        d.fit(X, y)
    assert calls == [] and not hasattr(d, "distilled_X_")


def test_validation_scoring_must_be_callable(digits):
    X, y = digits
    with pytest.raises(ValueError, match="validation_scoring"):
        DatasetDistiller(validation_scoring="accuracy").fit(X, y)


def test_an_interrupted_fit_names_the_score_it_kept(digits):
    X, y = digits

    def stop(est, it):
        if it == 4:
            raise KeyboardInterrupt

    scoring = ScriptedScore([0.25, 0.75, 0.5])
    with pytest.warns(ConvergenceWarning, match=r"iteration 2, score 0\.7500"):
        d = DatasetDistiller(max_iter=10, validation_interval=2, validation_scoring=scoring,
                             callback=stop, random_state=0).fit(X, y)
    assert d.best_iter_ == 2
    np.testing.assert_array_equal(d.distilled_X_, scoring.seen[1]["X"])


def test_a_distiller_with_a_training_scorer_clones_and_saves(digits, tmp_path):
    X, y = digits
    scorer = TrainingScorer(DistilledClassifier(training="standard", max_epochs=5), n_runs=2)
    d = DatasetDistiller(n_distilled=10, max_iter=2, validation_interval=2,
                         validation_scoring=scorer, random_state=0)
    assert d.get_params()["validation_scoring__n_runs"] == 2
    assert clone(d).get_params()["validation_scoring__classifier__max_epochs"] == 5
    d.fit(X, y)
    d.save(tmp_path / "d.pt")
    loaded = DatasetDistiller.load(tmp_path / "d.pt")
    np.testing.assert_array_equal(loaded.distilled_X_, d.distilled_X_)
    # a scorer is code, not data: it is not stored, and the loaded estimator says None
    assert loaded.validation_scoring is None

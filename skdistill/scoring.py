"""Validation scores of a distilled set by the training that its users will run on it.

A :class:`~skdistill.DatasetDistiller` keeps the state of its fit that scores best on its
held-out split. By default that score is the accuracy of networks trained by the learned
recipe (the distiller's own network, its learned step sizes). When the set is meant for
ordinary training of another network, as in the dataset-distillation literature's tables,
:class:`TrainingScorer` scores each state by that training instead, so the state kept is the
one best for it.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval

__all__ = ["TrainingScorer"]


class FixedSet(BaseEstimator):
    """A sampler whose ``fit_resample`` returns a set computed beforehand.

    It lets :class:`skdistill.DistilledClassifier` train on a selection or distillation that
    is already fitted, instead of fitting one again. With ``y_proba`` (rows of class
    probabilities, columns as ``classes``) it exposes ``distilled_y_proba_`` like a fitted
    distiller, so that standard training uses the learned soft labels, as DistilledClassifier
    does with a DatasetDistiller. ``module`` and ``input_shape`` are exposed as ``module_``
    and ``input_shape_``: the network that DistilledClassifier trains when its own
    ``module`` is None.
    """

    def __init__(self, X=None, y=None, y_proba=None, classes=None, module=None,
                 input_shape=None):
        self.X = X
        self.y = y
        self.y_proba = y_proba
        self.classes = classes
        self.module = module
        self.input_shape = input_shape

    def fit_resample(self, X, y):
        if self.y_proba is not None:
            self.distilled_y_proba_ = self.y_proba
            self.classes_ = self.classes
        if self.module is not None:
            self.module_ = self.module
        if self.input_shape is not None:
            self.input_shape_ = tuple(self.input_shape)
        return self.X, self.y


class TrainingScorer(BaseEstimator):
    """Score a distilled set by ordinary training of fresh networks on it.

    Pass it as ``DatasetDistiller(validation_scoring=TrainingScorer(...))``: at every
    validation point the distiller calls it with itself (its ``distilled_X_``,
    ``distilled_y_`` and ``distilled_y_proba_`` are the state under test) and its held-out
    split, and keeps the state that scores best. The score is the mean accuracy on the split
    of ``n_runs`` networks, each a clone of ``classifier`` trained on the set only (with the
    learned soft labels where the distiller learns them), from seeds ``random_state``,
    ``random_state + 1``, ...: the same seeds at every validation point, so that the scores
    of different states compare.

    Each call trains ``n_runs`` networks to the end: with the literature's protocol (a
    ConvNet of width 128 and depth 3, 300 epochs, on 40 images) that was 1-2 minutes per
    validation point on two CPU cores beside other jobs, so validate every 10-25 iterations
    (``validation_interval``).

    Parameters
    ----------
    classifier : DistilledClassifier, default=None
        The training to score by, with ``training="standard"``; its ``distiller`` and
        ``random_state`` are replaced. None: ``DistilledClassifier(training="standard")``
        (the distiller's own network, Adam, 300 epochs).
    n_runs : int, default=1
        Networks trained per call; their accuracies are averaged.
    random_state : int, default=0
        Seed of the first network's initial weights.

    Examples
    --------
    The literature's protocol (ConvNet 128×3, SGD with momentum, 300 epochs) selects the
    state of a fit that distils with a smaller ConvNet:

    >>> from skdistill import DatasetDistiller, DistilledClassifier, TrainingScorer
    >>> protocol = DistilledClassifier(
    ...     training="standard", module="convnet", module_params={}, optimizer="sgd",
    ...     optimizer_params={"momentum": 0.9, "weight_decay": 5e-4})
    >>> distiller = DatasetDistiller(module="convnet", input_shape=(1, 28, 28),
    ...                              validation_scoring=TrainingScorer(protocol),
    ...                              validation_interval=25)
    """

    _parameter_constraints: dict = {
        "classifier": [HasMethods(["fit", "score", "get_params"]), None],
        "n_runs": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, classifier=None, *, n_runs=1, random_state=0):
        self.classifier = classifier
        self.n_runs = n_runs
        self.random_state = random_state

    def check(self):
        """The classifier template, checked before a fit starts (not one network trained)."""
        from .classifier import DistilledClassifier

        self._validate_params()
        template = (DistilledClassifier(training="standard") if self.classifier is None
                    else self.classifier)
        params = template.get_params(deep=False)
        if params.get("training", "standard") != "standard":
            raise ValueError(
                f"TrainingScorer needs a classifier with training='standard', got "
                f"training={params['training']!r}: the learned recipe is the distiller's own "
                "validation score (validation_scoring=None)."
            )
        if "distiller" not in params or "random_state" not in params:
            raise ValueError(
                f"TrainingScorer's classifier must take distiller and random_state "
                f"parameters, as DistilledClassifier does; {type(template).__name__} does not."
            )
        return template

    def __call__(self, distiller, X, y):
        """Mean accuracy on ``X, y`` of ``n_runs`` networks trained on ``distiller``'s set.

        Parameters
        ----------
        distiller : DatasetDistiller
            A fitted distiller, or one during its fit (its current state).
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        score : float
        """
        template = self.check()
        X_syn, y_syn = distiller.distilled_X_, distiller.distilled_y_
        fixed = FixedSet(X_syn, y_syn, getattr(distiller, "distilled_y_proba_", None),
                         distiller.classes_, getattr(distiller, "module_", None),
                         getattr(distiller, "input_shape_", None))
        scores = []
        for run in range(self.n_runs):
            clf = clone(template).set_params(distiller=fixed,
                                             random_state=self.random_state + run)
            # the set itself stands in for the training data: it holds every class
            clf.fit(X_syn, y_syn)
            scores.append(clf.score(X, y))
        return float(np.mean(scores))

"""What the distiller and the coreset selectors share as samplers that can be scored."""

from numbers import Integral

import numpy as np
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

__all__ = ["ScoredSamplerMixin", "N_SCORE_INITS"]

# θ0 draws of ``score`` (the evaluation protocol: at least 5).
N_SCORE_INITS = 5


class ScoredSamplerMixin:
    """``fit_resample``, ``evaluate`` and ``score`` for an estimator that builds a small set.

    The estimator implements ``_correct(X, y, n_inits, random_state)``: a boolean matrix
    (n_draws, n_samples) telling whether each sample is classified right by the network that
    each θ0 draw gives after training on the small set by its protocol.
    """

    def fit_resample(self, X, y):
        """Fit, then return the small set ``(distilled_X_, distilled_y_)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        X_resampled : ndarray of shape (n_distilled, n_features)
        y_resampled : ndarray of shape (n_distilled,)
        """
        self.fit(X, y)
        return self.distilled_X_, self.distilled_y_

    def evaluate(self, X, y, n_inits=N_SCORE_INITS, random_state=None):
        """Accuracy on ``X, y`` of networks trained on the small set, one per θ0 draw.

        For :class:`~skdistill.DatasetDistiller` each network takes exactly the learned recipe
        (``n_steps`` steps with ``learned_lr_``) from a fresh θ0 ~ p(θ0) (a fixed or single
        pretrained θ0 is evaluated once); for a coreset selector, ``n_steps`` steps of the
        constant size ``inner_lr``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels from ``classes_``; any other label counts as an error.
        n_inits : int, default=5
            θ0 draws.
        random_state : int, RandomState instance or None, default=None
            Seeds the θ0 draws.

        Returns
        -------
        accuracies : ndarray of shape (n_draws,)
        """
        X, y = self._check_eval_data(X, y)
        return self._correct(X, y, n_inits, random_state).mean(axis=1)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy over 5 θ0 draws (see :meth:`evaluate`).

        The draws are seeded by ``random_state``, so an integer seed gives a deterministic
        score; this is what :class:`~sklearn.model_selection.GridSearchCV` maximises.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        X, y = self._check_eval_data(X, y)
        sample_weight = _check_sample_weight(sample_weight, X)
        seed = (np.random.RandomState(self.random_state)
                if isinstance(self.random_state, Integral) else None)
        correct = self._correct(X, y, N_SCORE_INITS, seed)
        return float(np.mean(correct @ sample_weight / sample_weight.sum()))

    def _check_eval_data(self, X, y):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(
                f"X has {X.shape[0]} samples but y has {y.shape[0]}; they must match."
            )
        return X, y

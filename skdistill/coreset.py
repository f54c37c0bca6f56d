"""Coreset baselines: small class-balanced training sets built from the real data.

Every selector has the parameters and API of :class:`~skdistill.DatasetDistiller` where they
apply (``n_distilled``, ``random_state``, ``fit_resample``, ``score``), so a selector and a
distiller can be swapped in a Pipeline or compared by the same protocol. They differ only in
how each class contributes its share of the ``n_distilled`` samples:

=================  ==========================================================  ===========
selector           the samples of one class                                    real rows
=================  ==========================================================  ===========
RandomSelector     drawn uniformly without replacement                         yes
ClassMeans         means of a random partition into equal groups (one group:   no
                   the class mean, the "average real image" of Wang et al.)
KMeansSelector     k-means centres (Wang et al.'s strongest baseline)          no
Herding            greedy mean matching in input space (Welling 2009, iCaRL)   yes
KCenterGreedy      greedy k-center from the sample nearest the class mean      yes
                   (Sener & Savarese 2018)
=================  ==========================================================  ===========

``score`` trains ``n_steps`` plain gradient-descent steps with the constant step size
``inner_lr`` on the selected set (the learned recipe of the distiller with untuned step sizes),
from 5 fresh θ0, and returns the mean test accuracy.
"""

from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from . import _unroll
from ._base import ScoredSamplerMixin
from ._validation import restore_on_error
from .distiller import resolve_device
from .nets import MAX_SEED, check_input_shape, default_module_params, make_module, sample_params

__all__ = [
    "CoresetSelector",
    "RandomSelector",
    "ClassMeans",
    "KMeansSelector",
    "Herding",
    "KCenterGreedy",
    "SELECTORS",
]


class CoresetSelector(ScoredSamplerMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class of the coreset baselines: validation, class balance and scoring.

    A subclass implements ``_select_class(X, n, rng)`` for the samples ``X`` of one class and
    returns either ``n`` row indices into ``X`` (when ``_picks_real_samples`` is True) or an
    ``(n, n_features)`` array of new samples.

    Parameters
    ----------
    n_distilled : int, default=10
        Total number of selected samples, spread evenly over the classes (the first classes
        of ``classes_`` take one more when it does not divide). At least the number of
        classes, and no class may have fewer samples than its share.
    module : {"mlp", "lenet", "convnet"}, nn.Module subclass or instance, default="mlp"
        Network trained by :meth:`score`, as in :class:`~skdistill.DatasetDistiller`.
    module_params : dict, default=None
        Constructor arguments of the module. None: its own defaults, except that
        ``"convnet"`` is of width 32 and depth 2, as in :class:`~skdistill.DatasetDistiller`.
    input_shape : tuple of int, default=None
        Shape of one sample for convolutional modules; inferred for square images.
    n_steps : int, default=10
        Gradient-descent steps of :meth:`score`.
    inner_lr : float, default=0.3
        Constant step size of every step of :meth:`score`. Not tuned per method or dataset;
        the distiller's comparable number is its ``learned_lr_``.
    random_state : int, RandomState instance or None, default=None
        Seeds the selection (where it is random) and the θ0 draws of :meth:`score`.
    device : str or torch.device, default="auto"
        Device of :meth:`score`; ``"auto"`` uses CUDA when available.

    Attributes
    ----------
    distilled_X_ : ndarray of shape (n_distilled, n_features)
        The selected samples, in the dtype of ``X``, ordered by class.
    distilled_y_ : ndarray of shape (n_distilled,)
        Class of each selected sample, from ``classes_``.
    sample_indices_ : ndarray of shape (n_distilled,)
        Rows of ``X`` that were selected; only for selectors of real samples.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.
    module_ : nn.Module
        The architecture trained by :meth:`score`.
    input_shape_ : tuple or None
    device_ : torch.device
    """

    _picks_real_samples = True

    _parameter_constraints: dict = {
        "n_distilled": [Interval(Integral, 1, None, closed="left")],
        "module": [StrOptions({"mlp", "lenet", "convnet"}), callable],
        "module_params": [dict, None],
        "input_shape": [tuple, list, None],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        n_distilled=10,
        *,
        module="mlp",
        module_params=None,
        input_shape=None,
        n_steps=10,
        inner_lr=0.3,
        random_state=None,
        device="auto",
    ):
        self.n_distilled = n_distilled
        self.module = module
        self.module_params = module_params
        self.input_shape = input_shape
        self.n_steps = n_steps
        self.inner_lr = inner_lr
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags

    @abstractmethod
    def _select_class(self, X, n, rng):
        """Row indices into ``X`` (or new samples) standing for one class."""

    # ------------------------------------------------------------------ public API

    @_fit_context(prefer_skip_nested_validation=True)
    @restore_on_error
    def fit(self, X, y):
        """Select ``n_distilled`` samples, class by class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Real training samples (images flattened).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : CoresetSelector
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        n_classes = classes.shape[0]
        if n_classes < 2:
            raise ValueError(
                f"y has 1 class ({classes.tolist()[0]!r}); a class-balanced selection "
                "needs at least 2."
            )
        if self.n_distilled < n_classes:
            raise ValueError(
                f"n_distilled={self.n_distilled} is smaller than the number of classes "
                f"({n_classes}); at least one sample per class is needed."
            )
        per_class = np.full(n_classes, self.n_distilled // n_classes)
        per_class[: self.n_distilled % n_classes] += 1
        counts = np.bincount(y_enc, minlength=n_classes)
        short = np.flatnonzero(counts < per_class)
        if short.size:
            c = short[0]
            raise ValueError(
                f"class {classes.tolist()[c]!r} has {counts[c]} samples, fewer than the "
                f"{per_class[c]} it must contribute to n_distilled={self.n_distilled}; lower "
                "n_distilled."
            )
        # The scoring network is checked by the distiller's own rules, before any selection.
        input_shape = check_input_shape(self.input_shape, self.module, X.shape[1])
        net = make_module(self.module, default_module_params(self.module, self.module_params),
                          X.shape[1], n_classes, input_shape)
        device = resolve_device(self.device)

        rng = check_random_state(self.random_state)
        rows, indices = [], []
        for c in range(n_classes):
            members = np.flatnonzero(y_enc == c)
            out = np.asarray(self._select_class(X[members], int(per_class[c]), rng))
            if self._picks_real_samples:
                indices.append(members[out])
                rows.append(X[members[out]])
            else:
                rows.append(out.astype(X.dtype, copy=False))
        self.classes_ = classes
        self.distilled_X_ = np.concatenate(rows)
        self.distilled_y_ = np.repeat(classes, per_class)
        if self._picks_real_samples:
            self.sample_indices_ = np.concatenate(indices)
        self.module_ = net
        self.input_shape_ = input_shape
        self.device_ = device
        return self

    # ------------------------------------------------------------------ helpers

    @_unroll.ieee_float32()
    def _correct(self, X, y, n_inits, random_state):
        """Boolean matrix (n_inits, n_samples): is each sample right for each θ0 draw."""
        rng = check_random_state(random_state)
        device = self.device_
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        net = self.module_
        forward = _unroll.make_forward(net, self.input_shape_)
        vectorize = _unroll.choose_vectorize(forward, net, n_inits, device.type)

        def as_t(a):
            return torch.as_tensor(np.array(a, dtype=np.float32), device=device)

        with torch.no_grad():
            params0 = sample_params(("random", None), net, n_inits, rng, device)
            x_syn = as_t(self.distilled_X_)
            y_syn = torch.nn.functional.one_hot(
                torch.as_tensor(np.searchsorted(self.classes_, self.distilled_y_)),
                self.classes_.shape[0],
            ).to(device=device, dtype=torch.float32)
            lrs = torch.full((self.n_steps,), float(self.inner_lr), device=device)
            final = _unroll.unroll_stacked(
                forward, params0, x_syn, y_syn, lrs, [slice(None)], vectorize
            )
            pred = _unroll.predict_stacked(forward, final, as_t(X)).cpu().numpy()
        known = np.isin(y, self.classes_)
        y_idx = np.where(
            known, np.searchsorted(self.classes_, np.where(known, y, self.classes_[0])), -1
        )
        return pred == y_idx[None, :]


class RandomSelector(CoresetSelector):
    """Class-balanced random real samples.

    Parameters are those of :class:`~skdistill.coreset.CoresetSelector`.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdistill import RandomSelector
    >>> X, y = load_digits(return_X_y=True)
    >>> X_small, y_small = RandomSelector(20, random_state=0).fit_resample(X / 16, y)
    >>> X_small.shape, sorted(set(y_small)) == list(range(10))
    ((20, 64), True)
    """

    def _select_class(self, X, n, rng):
        return rng.choice(X.shape[0], n, replace=False)


class ClassMeans(CoresetSelector):
    """Means of real samples: with one sample per class, the class mean.

    With ``n`` samples per class the class is cut at random into ``n`` groups of (nearly)
    equal size and each group is averaged, so the set stays an average of real images.
    Parameters are those of :class:`~skdistill.coreset.CoresetSelector`.

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill import ClassMeans
    >>> X = np.array([[0.0], [2.0], [10.0], [12.0]]); y = np.array([0, 0, 1, 1])
    >>> ClassMeans(2).fit(X, y).distilled_X_.ravel().tolist()
    [1.0, 11.0]
    """

    _picks_real_samples = False

    def _select_class(self, X, n, rng):
        groups = np.array_split(rng.permutation(X.shape[0]), n)
        return np.stack([X[g].mean(axis=0) for g in groups])


class KMeansSelector(CoresetSelector):
    """Centres of k-means clusters of each class (k = the class's share of ``n_distilled``).

    Uses :class:`sklearn.cluster.KMeans` with k-means++ seeding from ``random_state``.
    Parameters are those of :class:`~skdistill.coreset.CoresetSelector`.

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill import KMeansSelector
    >>> X = np.array([[0.0], [1.0], [9.0], [10.0], [20.0], [21.0], [29.0], [30.0]])
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> KMeansSelector(4, random_state=0).fit(X, y).distilled_X_.ravel().round(1).tolist()
    [0.5, 9.5, 20.5, 29.5]
    """

    _picks_real_samples = False

    def _select_class(self, X, n, rng):
        km = KMeans(n_clusters=n, n_init=1, random_state=rng.randint(MAX_SEED)).fit(X)
        # Sorted for a stable order within the class.
        return km.cluster_centers_[np.lexsort(km.cluster_centers_.T[::-1])]


class Herding(CoresetSelector):
    """Herding: real samples whose running mean tracks the class mean (Welling 2009).

    Greedy mean matching in input space, as in iCaRL (Rebuffi et al. 2017): the ``k``-th
    sample is the unselected one that brings the mean of the ``k`` selected samples closest
    (Euclidean) to the class mean. Deterministic; ``random_state`` only seeds :meth:`score`.
    The dataset-condensation literature herds in the features of a trained network instead;
    input space keeps the baseline independent of any trained model.
    Parameters are those of :class:`~skdistill.coreset.CoresetSelector`.

    References
    ----------
    Welling, M. (2009). Herding dynamical weights to learn. ICML.
    Rebuffi, S.-A. et al. (2017). iCaRL: Incremental classifier and representation learning.

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill import Herding
    >>> X = np.array([[0.0], [4.0], [5.0], [9.0], [20.0], [21.0]]); y = [0, 0, 0, 0, 1, 1]
    >>> Herding(4).fit(X, y).distilled_X_.ravel().tolist()   # class 0 mean is 4.5
    [4.0, 5.0, 20.0, 21.0]
    """

    def _select_class(self, X, n, rng):
        X = X.astype(np.float64, copy=False)
        mu = X.mean(axis=0)
        total = np.zeros_like(mu)
        available = np.ones(X.shape[0], dtype=bool)
        chosen = []
        for k in range(1, n + 1):
            gap = np.linalg.norm((total + X) / k - mu, axis=1)
            gap[~available] = np.inf
            i = int(np.argmin(gap))
            chosen.append(i)
            available[i] = False
            total += X[i]
        return np.array(chosen)


class KCenterGreedy(CoresetSelector):
    """Greedy k-center per class (Sener & Savarese 2018): each pick is the farthest sample.

    The first sample of a class is the one nearest to the class mean; each next one maximises
    the Euclidean distance to its nearest already selected sample, so the set covers the
    class. Deterministic; ``random_state`` only seeds :meth:`score`.
    Parameters are those of :class:`~skdistill.coreset.CoresetSelector`.

    References
    ----------
    Sener, O., Savarese, S. (2018). Active learning for convolutional neural networks: a
    core-set approach. ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> from skdistill import KCenterGreedy
    >>> X = np.array([[0.0], [4.0], [5.0], [9.0], [20.0], [21.0]]); y = [0, 0, 0, 0, 1, 1]
    >>> KCenterGreedy(4).fit(X, y).distilled_X_.ravel().tolist()
    [4.0, 9.0, 20.0, 21.0]
    """

    def _select_class(self, X, n, rng):
        X = X.astype(np.float64, copy=False)
        first = int(np.argmin(np.linalg.norm(X - X.mean(axis=0), axis=1)))
        chosen = [first]
        nearest = np.linalg.norm(X - X[first], axis=1)
        for _ in range(n - 1):
            i = int(np.argmax(nearest))
            chosen.append(i)
            nearest = np.minimum(nearest, np.linalg.norm(X - X[i], axis=1))
        return np.array(chosen)


#: Short names of the selectors, as used by the benchmarks.
SELECTORS = {
    "random": RandomSelector,
    "means": ClassMeans,
    "kmeans": KMeansSelector,
    "herding": Herding,
    "kcenter": KCenterGreedy,
}

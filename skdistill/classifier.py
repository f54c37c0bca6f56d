"""DistilledClassifier: a skorch network trained on a distilled (or selected) training set."""

import copy
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, LRScheduler
from torch import nn
from torch.utils.data import DataLoader

from ._validation import restore_on_error
from .augment import AugmentedModule, check_strategy
from .distiller import DatasetDistiller, resolve_device
from .nets import MAX_SEED, check_input_shape, make_module, reset_parameters

__all__ = ["DistilledClassifier", "LearnedStepSizes"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
_LR_SCHEDULES = {"step", "cosine"}
# Rows per forward pass at prediction time.
_PREDICT_BATCH_SIZE = 1024
# Below about 16 rows the float32 matrix products of some CPUs' BLAS (MKL on Xeons with
# AMX, measured) take other kernels whose results differ in the last bits, so a sample's
# probabilities would depend on the batch it came in; prediction pads its last batch to this.
_MIN_PREDICT_ROWS = 32


class LearnedStepSizes(Callback):
    """skorch callback: the ``i``-th training batch of an epoch uses the ``i``-th step size.

    Parameters
    ----------
    step_sizes : sequence of float
        Learning rate of every parameter group for each batch, in order.
    """

    def __init__(self, step_sizes):
        self.step_sizes = step_sizes

    def on_epoch_begin(self, net, **kwargs):
        self.step_ = 0

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.step_ >= len(self.step_sizes):
            raise RuntimeError(
                f"the epoch has more training batches than the {len(self.step_sizes)} "
                "learned step sizes."
            )
        for group in net.optimizer_.param_groups:
            group["lr"] = self.step_sizes[self.step_]
        self.step_ += 1


def recipe_loader(dataset, batch_size=None, batches=()):
    """skorch ``iterator_train`` yielding the rows of each learned step, in order.

    ``batch_size`` is skorch's and is ignored: the batches are the recipe's.
    """
    return DataLoader(dataset, batch_sampler=[list(rows) for rows in batches])


class DistilledClassifier(ClassifierMixin, BaseEstimator):
    """Classifier trained on a tiny synthetic training set distilled from the data.

    :meth:`fit` fits a clone of ``distiller`` to ``X, y`` and trains a skorch
    :class:`~skorch.NeuralNetClassifier` (``net_``) on its output only, either by replaying
    the learned recipe (``training="learned"``: SGD from θ0 ~ p(θ0), one batch and one
    learned step size per step, with the distiller's ``inner_momentum``, or Adam steps with
    its ``inner_optimizer="adam"``) or by ordinary training of a fresh network
    (``training="standard"``: the protocol of the dataset-distillation literature's tables).

    Parameters
    ----------
    distiller : estimator with ``fit_resample``, default=None
        Builds the small training set: a :class:`~skdistill.DatasetDistiller`
        (``DatasetDistiller()`` when None), a coreset selector such as
        :class:`~skdistill.RandomSelector`, or any imbalanced-learn style sampler. It is
        cloned; when its ``random_state`` is None it receives this estimator's
        ``random_state``.
    training : {"learned", "standard"}, default="learned"
        ``"learned"`` replays the distiller's learned recipe exactly (its
        ``training_steps()`` from ``sample_model_init()``), so the network equals
        ``distiller_.train_model(random_state)``; only a DatasetDistiller has a recipe.
        ``"standard"`` trains a freshly initialised network for ``max_epochs`` epochs with
        ``optimizer``, on soft labels where the distiller learned them.
    module : {"mlp", "lenet", "convnet"}, nn.Module subclass or instance, default=None
        Network of standard training. None trains the fitted distiller's own ``module_``
        (a DatasetDistiller's or selector's), or the built-in MLP when it has none. Another
        network evaluates the set across architectures, e.g. ``"convnet"`` (width 128,
        depth 3) for images distilled with a smaller ConvNet, as the literature's tables do.
        ``training="learned"`` always replays the distiller's network, so it takes None.
    module_params : dict, default=None
        Constructor arguments of ``module`` (unused when the distiller's network is used).
    input_shape : tuple of int, default=None
        Shape of one sample for ``module``; None takes the distiller's ``input_shape_``, or
        infers square grey images for the convolutional built-ins.
    max_epochs : int, default=300
        Epochs of standard training (learned training is the recipe's single pass).
    lr : float, default=0.01
        Learning rate of standard training.
    optimizer : {"adam", "sgd"} or torch.optim.Optimizer subclass, default="adam"
        Optimiser of standard training.
    optimizer_params : dict, default=None
        Other optimiser arguments of standard training, e.g. ``{"momentum": 0.9}``.
    lr_schedule : {"step", "cosine"} or None, default=None
        Learning-rate schedule of standard training over its ``max_epochs`` epochs: ``"step"``
        multiplies ``lr`` by 0.1 after half of them, as the evaluations of the
        dataset-distillation literature do (Zhao et al. 2021 and after); ``"cosine"`` anneals
        it to zero; None keeps it constant.
    batch_size : int, default=None
        Minibatch size of standard training (shuffled every epoch); None uses the whole
        synthetic set in every step.
    augment : "dsa", sequence of str or None, default=None
        Standard training on randomly transformed copies of the synthetic images, one
        transformation per step (:func:`skdistill.augment.augment_images`): ``"dsa"`` draws
        from colour, crop, cutout, scale and rotation, as the literature's evaluations do
        (Zhao & Bilen 2021); a sequence names the transformations (add ``"flip"`` for
        natural images). Needs images (an ``input_shape``) and ``training="standard"``.
        Predictions are never augmented.
    random_state : int, RandomState instance or None, default=None
        Seeds θ0 (learned) or the initial weights and shuffling (standard), and the
        distiller when its own ``random_state`` is None.
    device : str or torch.device, default="auto"
        Device of the network: ``"auto"`` uses CUDA when available, else the CPU.
    verbose : int, default=0
        skorch's verbosity (a table of the training loss per epoch when 1).

    Attributes
    ----------
    distiller_ : estimator
        The fitted clone of ``distiller``.
    net_ : skorch.NeuralNetClassifier
        The trained network. Its targets are rows of class probabilities and it predicts
        class indices into ``classes_``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.
    input_shape_ : tuple or None
        Shape each row of ``X`` is restored to before the network.

    See Also
    --------
    skdistill.DatasetDistiller : learns the synthetic set and the recipe replayed here.

    References
    ----------
    Wang, T., Zhu, J.-Y., Torralba, A., Efros, A. A. (2018). Dataset Distillation.
    arXiv:1811.10959.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdistill import DatasetDistiller, DistilledClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DistilledClassifier(DatasetDistiller(n_distilled=10, max_iter=10),
    ...                           random_state=0).fit(X / 16, y)
    >>> clf.distiller_.distilled_X_.shape
    (10, 64)
    >>> clf.predict(X[:3] / 16).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "distiller": [HasMethods(["fit_resample"]), None],
        "training": [StrOptions({"learned", "standard"})],
        "module": [StrOptions({"mlp", "lenet", "convnet"}), callable, None],
        "module_params": [dict, None],
        "input_shape": [tuple, list, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), callable],
        "optimizer_params": [dict, None],
        "lr_schedule": [StrOptions(_LR_SCHEDULES), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "augment": [str, list, tuple, None],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        distiller=None,
        *,
        training="learned",
        module=None,
        module_params=None,
        input_shape=None,
        max_epochs=300,
        lr=0.01,
        optimizer="adam",
        optimizer_params=None,
        lr_schedule=None,
        batch_size=None,
        augment=None,
        random_state=None,
        device="auto",
        verbose=0,
    ):
        self.distiller = distiller
        self.training = training
        self.module = module
        self.module_params = module_params
        self.input_shape = input_shape
        self.max_epochs = max_epochs
        self.lr = lr
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.lr_schedule = lr_schedule
        self.batch_size = batch_size
        self.augment = augment
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # The distiller's own parameters are validated by its fit.
    @_fit_context(prefer_skip_nested_validation=False)
    @restore_on_error
    def fit(self, X, y):
        """Distil ``X, y`` and train ``net_`` on the distilled set only.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Real training samples (images flattened).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : DistilledClassifier
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.shape[0] < 2:
            raise ValueError(
                f"y has 1 class ({classes.tolist()[0]!r}); a classifier needs at least 2."
            )
        distiller = DatasetDistiller() if self.distiller is None else clone(self.distiller)
        if self.training == "learned" and self.module is not None:
            raise ValueError(
                f"module={self.module!r} applies to training='standard' only: the learned "
                "recipe replays the distiller's own network from its θ0. Leave module=None, "
                "or set the distiller's module."
            )
        if self.lr_schedule is not None and self.training != "standard":
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} applies to training='standard' only: the "
                "learned recipe replays the distiller's learned step sizes."
            )
        strategy = None
        if self.augment is not None:
            strategy = check_strategy(self.augment)
            if self.training != "standard":
                raise ValueError(
                    f"augment={self.augment!r} applies to training='standard' only: the "
                    "learned recipe replays the distiller's steps on the images as they are."
                )
            shape = self._predicted_input_shape(distiller, X.shape[1])
            if shape is None or len(shape) != 3:
                raise ValueError(
                    f"augment={self.augment!r} transforms images, but the network takes flat "
                    f"rows (input_shape={shape}); give input_shape=(channels, height, width) "
                    "and a convolutional module."
                )
        if self.training == "learned" and not _has_recipe(distiller):
            raise ValueError(
                f"training='learned' replays a learned recipe (training_steps and "
                f"sample_model_init), but {type(distiller).__name__} has none; use "
                "training='standard' to train a fresh network on its samples."
            )
        rng = check_random_state(self.random_state)
        unseeded = distiller.get_params(deep=False).get("random_state", 0) is None
        if self.random_state is not None and unseeded:
            seed = (self.random_state if isinstance(self.random_state, Integral)
                    else rng.randint(MAX_SEED))
            distiller.set_params(random_state=seed)

        X_syn, y_syn = distiller.fit_resample(X, y)
        self.distiller_ = distiller
        self.classes_ = classes
        y_proba = self._targets(y_syn)
        self.input_shape_ = self._resolve_input_shape(X.shape[1])
        with torch.random.fork_rng(devices=[]):
            if self.training == "learned":
                net = self._learned_net(rng)
            else:
                torch.manual_seed(rng.randint(MAX_SEED))  # initial weights and shuffling
                module = reset_parameters(copy.deepcopy(self._architecture(X.shape[1])))
                if strategy is not None:
                    module = AugmentedModule(module, strategy, seed=rng.randint(MAX_SEED))
                net = self._standard_net(module)
            net.fit(self._net_input(X_syn), y_proba.astype(np.float32))
        self.net_ = net
        return self

    def predict_proba(self, X):
        """Class probabilities: the softmax of the network's outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns ordered as ``classes_``.
        """
        return softmax(self._logits(X), axis=1)

    def predict(self, X):
        """Class of each sample: the largest output of the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ helpers

    def _net_params(self):
        """skorch parameters shared by both kinds of training."""
        return dict(
            criterion=nn.CrossEntropyLoss,  # accepts rows of class probabilities as targets
            train_split=None,
            classes=list(range(self.classes_.shape[0])),
            iterator_valid__batch_size=_PREDICT_BATCH_SIZE,
            device=resolve_device(self.device),
            verbose=self.verbose,
        )

    def _learned_net(self, rng):
        """SGD from θ0, one batch and one learned step size per step of the recipe (with the
        distiller's ``inner_momentum``, if any; Adam with its ``inner_optimizer="adam"``)."""
        theta0_seed = self.random_state if isinstance(self.random_state, Integral) else rng
        steps = self.distiller_.training_steps()
        # float32 step sizes: the unrolled recipe multiplies float32 gradients by them.
        step_sizes = [float(np.float32(lr)) for _, lr in steps]
        momentum = float(getattr(self.distiller_, "inner_momentum", 0.0) or 0.0)
        if getattr(self.distiller_, "inner_optimizer", "sgd") == "adam":
            optimizer = {"optimizer": torch.optim.Adam}
        else:
            optimizer = {"optimizer": torch.optim.SGD,
                         **({"optimizer__momentum": momentum} if momentum else {})}
        return NeuralNetClassifier(
            self.distiller_.sample_model_init(theta0_seed),
            **optimizer,
            lr=step_sizes[0],
            max_epochs=1,
            batch_size=-1,
            iterator_train=recipe_loader,
            iterator_train__batches=[rows for rows, _ in steps],
            callbacks=[("learned_step_sizes", LearnedStepSizes(step_sizes))],
            **self._net_params(),
        )

    def _standard_net(self, module):
        """``module`` (freshly initialised) and an ordinary optimiser."""
        optimizer = (_OPTIMIZERS[self.optimizer] if isinstance(self.optimizer, str)
                     else self.optimizer)
        callbacks = []
        if self.lr_schedule == "step":
            # One decay by 10 after half the epochs, as in Zhao et al.'s evaluation code. A
            # milestone at 0 would decay before the first epoch: one epoch keeps the rate.
            callbacks.append(("lr_schedule", LRScheduler(
                torch.optim.lr_scheduler.MultiStepLR,
                milestones=[max(1, self.max_epochs // 2)],
                gamma=0.1)))
        elif self.lr_schedule == "cosine":
            callbacks.append(("lr_schedule", LRScheduler(
                torch.optim.lr_scheduler.CosineAnnealingLR, T_max=self.max_epochs)))
        return NeuralNetClassifier(
            module.train(),
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=-1 if self.batch_size is None else self.batch_size,
            iterator_train__shuffle=True,
            callbacks=callbacks,
            **{f"optimizer__{k}": v for k, v in (self.optimizer_params or {}).items()},
            **self._net_params(),
        )

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        x = self._net_input(X)
        n = x.shape[0]
        last = n % _PREDICT_BATCH_SIZE
        if 0 < last < _MIN_PREDICT_ROWS:
            x = np.concatenate([x, np.zeros((_MIN_PREDICT_ROWS - last, *x.shape[1:]), x.dtype)])
        logits = self.net_.forward(x, training=False)
        return logits[:n].double().numpy()

    def _net_input(self, X):
        # A float32 copy: skorch shares memory with the array, which may be read-only.
        X = np.array(X, dtype=np.float32, order="C", copy=True)
        if self.input_shape_ is not None:
            X = X.reshape(X.shape[0], *self.input_shape_)
        return X

    def _targets(self, y_syn):
        """Rows of class probabilities for the synthetic samples, columns as ``classes_``."""
        d = self.distiller_
        if hasattr(d, "distilled_y_proba_"):
            if not np.array_equal(getattr(d, "classes_", self.classes_), self.classes_):
                raise ValueError(
                    f"the distiller's classes {list(d.classes_)} differ from those of y "
                    f"{list(self.classes_)}."
                )
            return np.asarray(d.distilled_y_proba_, dtype=np.float64)
        y_syn = np.asarray(y_syn)
        unknown = ~np.isin(y_syn, self.classes_)
        if unknown.any():
            raise ValueError(
                f"the distiller returned labels {np.unique(y_syn[unknown]).tolist()} that "
                "are not classes of y."
            )
        return np.eye(self.classes_.shape[0])[np.searchsorted(self.classes_, y_syn)]

    def _distillers_network(self):
        return self.module is None and hasattr(self.distiller_, "module_")

    def _predicted_input_shape(self, distiller, n_features):
        """What :meth:`_resolve_input_shape` will give, known before the distiller is fitted
        (from its ``module`` and ``input_shape`` parameters), so that errors come first."""
        params = distiller.get_params(deep=False)
        distilled_shape = None
        if "module" in params:
            try:
                distilled_shape = check_input_shape(params.get("input_shape"), params["module"],
                                                    n_features)
            except ValueError:
                pass  # the distiller's own fit says what is wrong with it
        if self.module is None and "module" in params:
            return distilled_shape
        shape = self.input_shape if self.input_shape is not None else distilled_shape
        return check_input_shape(shape, self.module or "mlp", n_features)

    def _resolve_input_shape(self, n_features):
        distilled_shape = getattr(self.distiller_, "input_shape_", None)
        if self._distillers_network():
            return distilled_shape
        shape = self.input_shape if self.input_shape is not None else distilled_shape
        return check_input_shape(shape, self.module or "mlp", n_features)

    def _architecture(self, n_features):
        """The network to train (its weights are a template): the distiller's, or built."""
        if self._distillers_network():
            return self.distiller_.module_
        return make_module(self.module or "mlp", self.module_params, n_features,
                           self.classes_.shape[0], self.input_shape_)


def _has_recipe(distiller):
    return all(hasattr(distiller, m) for m in ("training_steps", "sample_model_init"))

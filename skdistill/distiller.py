"""DatasetDistiller: dataset distillation (Wang et al. 2018) as a scikit-learn estimator."""

import contextlib
import copy
import math
import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    Options,
    RealNotInt,
    StrOptions,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from . import _checkpoint, _distributed, _formation, _threads, _unroll
from ._base import ScoredSamplerMixin
from ._validation import restore_on_error
from .augment import augment_steps, check_strategy
from .nets import MAX_SEED as _MAX_SEED
from .nets import (
    check_input_shape,
    default_module_params,
    make_module,
    param_dict,
    reset_parameters,
    sample_params,
)

__all__ = ["DatasetDistiller"]

# θ0 draws used for validation scores; fixed for a fit so that scores are comparable.
_N_VALIDATION_INITS = 4
# Most samples held out for validation: scoring 6,000 Fashion-MNIST images with 4 draws every
# 10 iterations made the width-32 ConvNet's default fit 14 minutes instead of 12.
_MAX_VALIDATION_SAMPLES = 2000
# memory="auto" keeps every unrolled step up to this many steps, then checkpoints.
_FULL_MEMORY_STEPS = 20
# inner_lr_init=None: measured for the built-in MLP; "auto" for other modules
_MLP_INNER_LR = 0.2
# (n_steps, max_iter) that None stands for, by module: the built-in ConvNet gains about 2
# points of Fashion-MNIST accuracy from twice the unroll for half the iterations, in the same
# time (benchmarks/results/accuracy_fashion_mnist_convnet_default_steps20_seed*.md); the
# MLP's 10 steps are the digits demo's.
_FIT_LENGTH = {"convnet": (20, 250)}
_FIT_LENGTH_OTHER = (10, 500)
# candidates of inner_lr_init="auto": 0.001 to 1, a quarter decade apart (SGD steps), and
# 0.0001 to 0.1 for Adam steps, whose size does not scale with the gradient's
_AUTO_INNER_LRS = {"sgd": [10 ** (k / 4) for k in range(-12, 1)],
                   "adam": [10 ** (k / 4) for k in range(-16, -3)]}
# "auto" takes the smallest candidate whose loss is within this share of the scan's whole
# drop of the minimum's. On Fashion-MNIST the width-128 ConvNet's scan (multi_formation=2,
# 30 steps, seed 1) fell ever more slowly up to its minimum at 0.178; the fit started there
# ended at 62 % (protocol 2) where seeds 1 and 2 started at 0.0316 reached 78.6 % and 79.2 %
# (benchmarks/results/accuracy_fashion_mnist_convnet_cuda_w128_f2_s30_p2val*.md).
_AUTO_TOLERANCE = 0.05


def _improves(score, best):
    """Whether a validation score replaces the best so far: a NaN score (a scorer that
    failed) never does, and any other score replaces a NaN best."""
    return not math.isnan(score) and (math.isnan(best) or score > best)


def resolve_device(device):
    """``"auto"`` is CUDA when available, else CPU; anything else must exist here."""
    if isinstance(device, str) and device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process takes the GPU of its local rank
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a valid torch device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available here; use "
            "device='auto' to fall back to the CPU."
        )
    return dev


class DatasetDistiller(ScoredSamplerMixin, BaseEstimator):
    """Learn a tiny synthetic training set and the step sizes that train a network on it.

    Dataset distillation (Wang et al. 2018) optimises ``n_distilled`` synthetic samples x̃
    and ``n_steps`` step sizes η̃ so that a network started from θ0 ~ p(θ0) and trained by
    ``n_steps`` gradient-descent steps on x̃ (step ``t`` with size η̃_t) classifies the real
    data well. Each outer iteration draws a minibatch of real data and ``n_inits`` θ0,
    unrolls the inner steps, evaluates the loss on the real minibatch and updates x̃, η̃
    (and soft labels with ``learn_labels=True``) with Adam through the unrolled steps.

    The estimator is an imbalanced-learn style sampler: :meth:`fit_resample` returns the
    synthetic set, so it can stand inside :class:`imblearn.pipeline.Pipeline`. Its
    :meth:`score` is the accuracy of networks trained by the learned recipe.

    Parameters
    ----------
    n_distilled : int, default=10
        Total number of synthetic samples, spread evenly over the classes (the first classes
        of ``classes_`` take one more when it does not divide). Must be at least the number
        of classes. With ``multi_formation=f`` the ``n_distilled / f²`` stored images are
        spread so, and each class trains on ``f²`` images per stored image.
    module : {"mlp", "lenet", "convnet"}, nn.Module subclass or instance, default="mlp"
        The network architecture. Built-in names are sized from the data; a subclass is
        built with ``module_params``; an instance is copied. BatchNorm is not supported.
    module_params : dict, default=None
        Constructor arguments of the module, e.g. ``{"hidden_layer_sizes": (64,)}`` for
        ``"mlp"`` or ``{"width": 128, "depth": 3}`` for ``"convnet"``. None: the module's
        own defaults, except that ``"convnet"`` is of width 32 and depth 2, which distilled
        Fashion-MNIST in 9-11 minutes on one CPU thread (75.7-76.3 % with one image per
        class, evaluated on the literature's width-128 depth-3 ConvNet); distilling with that
        ConvNet itself (``{}``) takes about two hours there, 91 s on an H200 GPU (77.1 %, at
        10 steps).
    input_shape : tuple of int, default=None
        Shape of one sample, e.g. ``(1, 28, 28)``; rows of ``X`` are reshaped to it before
        the network. When None and the module is a convolutional built-in, ``(1, s, s)`` is
        inferred if ``n_features == s * s``.
    init : {"noise", "real"} or array-like of shape (n_distilled, n_features), default="real"
        Initial synthetic samples: Gaussian noise with the data's mean and standard
        deviation, randomly chosen real samples of each class, or given values (rows ordered
        as ``distilled_y_`` will be: by class in ``classes_`` order). With
        ``multi_formation=f`` each run of ``f²`` rows is averaged down into the tiles of one
        stored image.
    multi_formation : int, default=1
        Tiles per side of each stored image (Kim et al. 2022): with ``f > 1`` the fit learns
        ``n_distilled / f²`` stored images, each cut into an ``f × f`` grid whose tiles,
        upsampled bilinearly to the full size, are ``f²`` of the ``n_distilled`` training
        images (``distilled_X_``). At the storage of ``n_distilled / f²`` images the networks
        train on ``f²`` times as many, at ``1/f`` of the resolution. Needs images
        (``input_shape``) whose height and width ``f`` divides, and ``n_distilled`` a
        multiple of ``f²`` with at least one stored image per class. The stored images are
        ``stored_X_``; :meth:`save` writes them rather than ``distilled_X_``.
    model_init : {"random", "fixed"}, nn.Module, state dict or list of them, default="random"
        The distribution p(θ0) of initial weights: ``"random"`` draws fresh weights from the
        module's own initialisers at every iteration; ``"fixed"`` draws one θ0 (by
        ``random_state``) and keeps it; a module or state dict is a pretrained θ0 (adaptation
        of its weights to the new data); a list of them is sampled uniformly per draw.
    n_inits : int, default=4
        θ0 draws per outer iteration. A single θ0 (``"fixed"`` or one pretrained) is drawn
        once, whatever this value.
    n_steps : int, default=None
        Unrolled inner gradient-descent steps, each with its own learned step size. None:
        20 for ``module="convnet"``, 10 for every other module. A ConvNet on Fashion-MNIST
        (one image per class) trained with 20 steps for 250 iterations reached 75.7-76.3 %
        by ordinary training (three seeds), against 73.9-74.5 % with 10 steps for 500
        iterations, in about the same time. The value used is ``n_steps_``.
    distilled_batch_size : int, default=None
        None: every step uses the whole synthetic set. Otherwise the set is cut into
        class-balanced batches of this size, cycled in order over the ``n_steps`` steps.
    shuffle_batches : bool, default=False
        With ``distilled_batch_size``, deal each class's samples into the batches in a fresh
        random order at every outer iteration, so that every sample learns to teach beside
        changing company; otherwise the batches are the same at every iteration. The
        learned recipe, validation and :meth:`score` keep the fixed batches. Not with
        ``compile=True``. Without batches (``distilled_batch_size`` None or at least
        ``n_distilled``) it has no effect, and ``fit`` warns. On Fashion-MNIST at fifty
        images per class (``n_steps=120``, ``backprop_window=40``,
        ``distilled_batch_size=100``, two seeds) it left the literature's protocol level
        (85.6 % either way) and added 0.3 points by the learned recipe (86.3 % against
        86.0 %; benchmarks/README.md, "every run").
    inner_lr_init : float, "auto" or None, default=None
        Initial value of every learned step size. Starting near a step size that already
        trains the network in ``n_steps`` steps matters: the step sizes are learned in
        log-space, so a start 10x too small takes a few hundred iterations to catch up, and
        one too large may never recover. ``"auto"`` tries constant step sizes from 0.001 to
        1 (0.0001 to 0.1 with ``inner_optimizer="adam"``; a quarter decade apart), in
        increasing order, on the initial synthetic set before the first iteration (each an
        unroll of ``n_steps`` steps, or of ``backprop_window`` steps when that is set, with
        the inner optimiser and momentum), and starts from the one whose
        trained networks have the lowest loss on a real minibatch before that loss first
        rises (at most a dozen unrolls without gradients; larger steps can fit the batch
        well again, but by chaotic training that distillation does not improve on), or from
        the smallest step size whose loss is within 5 % of the scan's whole drop of that
        minimum (the loss is often flat over a decade before it; fits started at its far end
        did worse). None: 0.2 for ``module="mlp"`` with SGD steps (measured on digits and
        Fashion-MNIST), ``"auto"`` otherwise (a ConvNet on Fashion-MNIST started at 0.2
        reached 40 % by its learned recipe after 300 iterations, where ``"auto"`` reached
        75 %). The value used is ``inner_lr_init_``.
    inner_momentum : float in [0, 1), default=0.0
        Momentum μ of the unrolled training steps: 0 is the seed's plain gradient descent;
        μ > 0 makes every step a heavy-ball step, as ``torch.optim.SGD(momentum=μ)`` takes it
        (v ← μ v + g with v = g at the first step, θ ← θ − η_t v), inside the fit, the
        learned recipe, :meth:`train_model`, :meth:`score` and
        ``DistilledClassifier(training="learned")``. Fashion-MNIST, ten per class, the
        160-step ConvNet 32×2 configuration: +0.8 / +0.5 by the learned recipe and
        +0.3 / +0.1 on the literature's protocol for two seeds at μ = 0.9; no gain for the
        default one-per-class fit at μ = 0.9 or 0.5 (user guide, "Inner momentum").
        The meta-gradient flows through the velocities too (checkpointing and
        ``backprop_window`` carry them, so a stored training state holds twice the tensors
        of the weights alone; the built-in MLP's hand-written path carries them as well).
        Momentum is part of the learned recipe: a set distilled with it is meant to be
        replayed with it. Only with ``inner_optimizer="sgd"``.
    inner_optimizer : {"sgd", "adam"}, default="sgd"
        The optimiser of the unrolled training steps. ``"sgd"``: the seed's gradient descent
        (with ``inner_momentum``, if set). ``"adam"``: every step an Adam step, as
        ``torch.optim.Adam`` with its default betas (0.9, 0.999) takes it, with the learned
        step size η_t as its learning rate; the meta-gradient flows through both moments.
        RaT-BPTT (Feng et al. 2024) distils with Adam steps.
        Adam's step sizes live on another scale: ``inner_lr_init=None`` means ``"auto"``
        for every module, and ``"auto"`` scans 0.0001 to 0.1. Part of the learned recipe,
        like ``inner_momentum``; the built-in MLP's hand-written path takes SGD steps only,
        so an Adam fit of it runs the generic ``torch.func`` path.
    learn_lr : bool, default=True
        Learn the step sizes (else they stay at ``inner_lr_init``).
    learn_labels : bool, default=False
        Learn a soft label (a distribution over classes) per synthetic sample.
    label_init : array-like of shape (n_distilled, n_classes), classifier or None, \
            default=None
        Soft labels the synthetic samples start with (kept fixed when ``learn_labels=False``,
        the start of the learned ones otherwise): given probabilities (rows ordered as
        ``distilled_y_``, columns as ``classes_``), or a classifier with ``predict_proba``
        (a teacher) applied to the initial synthetic samples as the networks see them
        (decoded, with ``multi_formation``). A fitted classifier is used as it is; an
        unfitted one is cloned and fitted on the training split (not the validation rows)
        first. None: hard labels, or with ``learn_labels=True`` probability 0.9 on the
        assigned class. Ignored by a warm start, which continues from the previous labels.
        On Fashion-MNIST a ConvNet teacher's labels at ``label_temperature=3`` as the start
        of learned labels gave no gain over the 0.9 start: +0.2 points on the literature's
        protocol and 0.0 by the recipe, averaged over three seeds at ten images per class,
        and 0.8 points less by the recipe at one (benchmarks/README.md, "every run").
    label_temperature : float, default=1.0
        Temperature ``T`` applied to ``label_init``: the labels start as ``p^(1/T)``,
        renormalised (a teacher's softmax at temperature ``T``). Above 1 softens them.
    relabel : dict, default=None
        ``{real_class: target_class}``: the outer objective asks networks trained on the
        synthetic set to predict ``target_class`` for real samples of ``real_class`` (the
        malicious objective of Wang et al.). Validation scores measure that objective.
    learning_rate : float, default=0.03
        Step size of the outer Adam optimiser for the synthetic samples (in units of the
        data's standard deviation) and the soft-label logits.
    step_size_learning_rate : float, default=0.01
        Step size of the outer Adam optimiser for the log of the learned step sizes. Smaller
        than ``learning_rate`` because step sizes that grow fast destabilise the fit. It caps
        their growth at about a factor e^rate per iteration (scaled by the schedule); the
        default Fashion-MNIST fit's step sizes grow at that cap (x3.1-3.6 in 190 iterations),
        yet with 0.03 and 0.1 they grew to 0.08-0.29 and up to 40 and the set scored 1.8 and
        3.3 points less on the literature's protocol (73.9 and 72.4 % against 75.7 %, seed 0).
    learning_rate_schedule : {"constant", "cosine"}, default="cosine"
        Outer step size over the ``max_iter`` iterations of a fit: constant, or cosine
        decay from ``learning_rate`` to zero.
    batch_size : int, default=256
        Real samples per outer iteration (all of them when fewer).
    max_iter : int, default=None
        Outer iterations. None: 250 for ``module="convnet"`` (whose default unroll is twice
        as long; see ``n_steps``), 500 for every other module.
    validation_fraction : float, default=0.1
        Share of the training data held out to score the synthetic set every
        ``validation_interval`` iterations with fixed θ0 draws, at most 2,000 samples (the
        rest train: scoring more costs much time on large image sets for little, as 2,000
        samples with four draws resolve about a point of accuracy); the best state seen is kept,
        so more iterations never give a worse validation score. 0 disables validation and
        keeps the last state.
    n_iter_no_change : int, default=None
        Stop when the validation score has not improved for this many iterations.
    validation_interval : int, default=10
        Iterations between validation scores.
    validation_scoring : callable, default=None
        What the validation score is. None: the accuracy of networks trained by the learned
        recipe from fixed θ0 draws. A callable ``scoring(distiller, X_val, y_val) -> float``
        (higher is better; NaN never counts as the best, with a ``RuntimeWarning``) is
        called at each validation point with this estimator, whose
        ``distilled_X_``, ``distilled_y_``, ``distilled_y_proba_`` and ``learned_lr_`` then
        hold the state under test (its ``score`` and ``evaluate`` run that state's learned
        recipe), and the held-out split (labels as the outer objective wants them, so
        with ``relabel`` applied); :class:`skdistill.TrainingScorer` scores by ordinary
        training of another network, e.g. the literature's ConvNet, so that the state kept
        is the best one for that training rather than for the recipe.
    memory : {"auto", "full", "checkpoint"}, default="auto"
        How the meta-gradient keeps the unrolled steps: ``"full"`` keeps every step's graph
        (memory grows linearly with ``n_steps``); ``"checkpoint"`` keeps the parameters at the
        start of ⌈√n_steps⌉-step segments and recomputes one segment at a time (memory
        O(√n_steps), about one more unrolled pass of compute, the same gradient); beyond 64
        steps the segments are nested one level deeper (segments of b² steps cut into
        b-step ones, b = ⌈n_steps^(1/3)⌉: about 3·b parameter sets, one more unrolled pass);
        ``"auto"`` checkpoints beyond 20 steps (counted in ``backprop_window`` when set).
    backprop_window : int, default=None
        Random truncated backpropagation through the unroll (RaT-BPTT, Feng et al. 2024):
        at every iteration the unroll stops after a number of steps ``N`` drawn uniformly
        from ``backprop_window`` to ``n_steps``, and the meta-gradient flows back through
        only its last ``backprop_window`` steps (the steps before them run without a graph).
        The cost of an iteration is that of a ``backprop_window``-step unroll plus a
        cheaper graph-free pass over the rest, so the synthetic set can be tuned to the whole
        of a longer training run; the step sizes of the steps after ``N`` get no update at
        that iteration, and ``loss_curve_`` holds the real-data loss after each
        iteration's ``N`` steps. The learned recipe, validation and :meth:`score` still
        train for all ``n_steps`` steps. None (or ``n_steps``): every iteration
        differentiates the whole unroll (the seed's algorithm). Not with ``compile=True``.
        ``inner_lr_init="auto"`` scans unrolls of the window's length. On Fashion-MNIST at
        ten images per class, ``n_steps=80`` with a window of 40, started at the step size
        that a 40-step scan picks (0.032), scored 84.6 % on the literature's protocol and
        85.5 % by the recipe (mean of three seeds), against 84.3 % and 85.2 % for
        ``n_steps=40`` differentiated whole, at 1.09x the time per iteration; started at the
        0.018 that an 80-step scan picks, 0.3-0.6 points below the 40-step fits on the
        protocol and 1.1-1.2 by the recipe (two seeds; benchmarks/README.md, "every run").
    augment : "dsa", sequence of str or None, default=None
        Differentiable augmentation of the synthetic images inside the fit's unrolls (DSA
        style, Zhao & Bilen 2021): every inner step sees its batch through one random
        transformation (colour, crop, cutout, scale or rotation, parameters per image;
        :func:`skdistill.augment.augment_images`), drawn afresh at every outer iteration,
        and the meta-gradient flows back through it, so the images learn to teach through
        such changes. A sequence names the transformations. Needs images (``input_shape``);
        takes the generic draw path for MLPs, and not ``compile=True``. Validation,
        :meth:`score` and the learned recipe train on the images as they are.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the meta-gradient under bf16 autocast (matrix products and
        convolutions in bf16, reductions and the learned tensors in float32): faster on CPUs
        with AMX and on recent GPUs. The bf16 meta-gradient stays close to the float32 one
        for small MLPs but drifts over long ConvNet unrolls (cosine 0.86-0.98 measured by
        ``benchmarks/speed.py``); the ConvNet fits measured in ``benchmarks/README.md`` kept
        their float32 accuracy within 0.4 points. Small networks (the default ConvNet 32x2)
        ran no faster in bf16 on an AVX-512 CPU without AMX. Validation and scoring stay in
        float32.
    compile : bool, default=False
        Compile the meta-loss with ``torch.compile`` (every unrolled step in memory, so not
        with checkpointing: ``memory="full"``, or ``"auto"`` with at most 20 steps). The
        first iteration pays the compilation (tens of seconds to minutes); afterwards, on
        two CPU cores, the compiled generic path of the MLP ran at 1.6-2.4x the naive
        reference but slower than skdistill's default batched MLP path (1.6-7.3x), and the
        width-128 ConvNet's took 13 minutes to compile and ran at half the eager speed
        (``benchmarks/results/speed.md``). It is meant for GPUs and other networks, where
        kernel launches dominate: measure before relying on it. Where compilation fails
        (no C++ compiler, an unsupported platform), a ``RuntimeWarning`` says so and the fit
        goes on eagerly.
    checkpoint : str or path-like, default=None
        File that receives the whole state of the fit (synthetic set, step sizes, optimiser
        and schedule, iteration, RNG, best state) every ``checkpoint_interval`` iterations,
        at the end of a fit that completes, and when a fit is interrupted (Ctrl-C, or a
        ``KeyboardInterrupt`` raised by ``callback``): then it holds the last iteration that
        finished (if it stopped during that iteration's validation, the resumed fit
        validates it first and then calls ``callback`` for it), unless the interruption came
        while the state was being updated (a diverged fit, too, leaves the last periodic
        one). Written atomically (a temporary file, then a rename). With ``warm_start=True``
        and an existing file, ``fit`` resumes that run and continues it up to ``max_iter``
        iterations in all; on CPU the result is the same as that of an uninterrupted run
        with the same ``random_state``.
    checkpoint_interval : int, default=50
        Iterations between checkpoints.
    callback : callable, default=None
        Called as ``callback(distiller, n_iter)`` after every iteration; ``n_iter_`` and
        ``loss_curve_`` are current during the call.
    verbose : int, default=0
        Show a progress bar (tqdm) with the loss and validation accuracy.
    random_state : int, RandomState instance or None, default=None
        Seeds the synthetic init, the θ0 draws, the real minibatches and the validation
        split. The same integer on CPU gives the same result (for a given number of torch
        threads, which moves float rounding).
    warm_start : bool, default=False
        Continue from the previous fit's synthetic set, step sizes and optimiser state.
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU. On the CPU a convolutional
        module with several θ0 draws and a small inner step (at most 0.1 GFLOP per forward
        pass) runs its draws in parallel threads when ``torch.get_num_threads()`` is 2 or
        more, sharing those threads out among them (only in a fit called from the main
        thread).

    Attributes
    ----------
    distilled_X_ : ndarray of shape (n_distilled, n_features)
        The synthetic samples, in the space and dtype of ``X``, ordered by class.
    stored_X_ : ndarray of shape (n_distilled / multi_formation², n_features)
        The stored images that decode to ``distilled_X_`` (equal to it when
        ``multi_formation=1``).
    distilled_y_ : ndarray of shape (n_distilled,)
        Class of each synthetic sample, from ``classes_``.
    distilled_y_proba_ : ndarray of shape (n_distilled, n_classes)
        Training targets of the synthetic samples: one-hot, or the learned soft labels.
    learned_lr_ : ndarray of shape (n_steps_,)
        Positive step size of each unrolled step.
    n_steps_ : int
        Number of unrolled steps of the learned recipe: ``n_steps``, or its default for the
        module.
    inner_lr_init_ : float
        The step size the fit started from: ``inner_lr_init``, or the one ``"auto"`` chose
        (saved with the set; NaN after loading a file written before it was kept).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.
    n_iter_ : int
        Outer iterations run (over all warm starts).
    loss_curve_ : list of float
        Outer (meta) loss per iteration.
    validation_scores_ : list of float
        Validation accuracy at each validation point (empty without validation).
    validation_iters_ : list of int
        Iteration of each validation score (0 is the initial state).
    best_validation_score_ : float or None
        Validation accuracy of the kept state.
    best_iter_ : int
        Iteration of the kept state.
    model_init_ : dict or None
        The θ0 state dict for ``"fixed"`` or a single pretrained init, else None.
    module_ : nn.Module
        The architecture (its weights are a template, not θ0).
    input_shape_ : tuple or None
        Shape used to restore samples for the module.
    device_ : torch.device
        Device of the fit.

    See Also
    --------
    skdistill.DistilledClassifier : trains a skorch net on the distilled set.

    References
    ----------
    Wang, T., Zhu, J.-Y., Torralba, A., Efros, A. A. (2018). Dataset Distillation.
    arXiv:1811.10959.

    Feng, Y., Vedantam, R., Kempe, J. (2024). Embarrassingly Simple Dataset Distillation.
    ICLR 2024 (``backprop_window``).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdistill import DatasetDistiller
    >>> X, y = load_digits(return_X_y=True)
    >>> distiller = DatasetDistiller(n_distilled=10, max_iter=20, random_state=0)
    >>> X_small, y_small = distiller.fit_resample(X / 16, y)
    >>> X_small.shape, distiller.learned_lr_.shape
    ((10, 64), (10,))
    """

    _parameter_constraints: dict = {
        "n_distilled": [Interval(Integral, 1, None, closed="left")],
        "module": [StrOptions({"mlp", "lenet", "convnet"}), callable],
        "module_params": [dict, None],
        "input_shape": [tuple, list, None],
        "init": [StrOptions({"noise", "real"}), "array-like"],
        "multi_formation": [Interval(Integral, 1, None, closed="left")],
        "model_init": [StrOptions({"random", "fixed"}), nn.Module, dict, list],
        "n_inits": [Interval(Integral, 1, None, closed="left")],
        "n_steps": [Interval(Integral, 1, None, closed="left"), None],
        "distilled_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "shuffle_batches": ["boolean"],
        "inner_momentum": [Interval(Real, 0, 1, closed="left")],
        "inner_optimizer": [StrOptions({"sgd", "adam"})],
        "inner_lr_init": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"}),
                          None],
        "learn_lr": ["boolean"],
        "learn_labels": ["boolean"],
        "label_init": ["array-like", HasMethods(["predict_proba"]), None],
        "label_temperature": [Interval(Real, 0, None, closed="neither")],
        "relabel": [dict, None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "step_size_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "learning_rate_schedule": [StrOptions({"constant", "cosine"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        # the integer 0 disables validation as 0.0 does (a fraction, so 1 is not allowed)
        "validation_fraction": [Interval(RealNotInt, 0, 1, closed="left"),
                                Options(Integral, {0})],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "validation_interval": [Interval(Integral, 1, None, closed="left")],
        "validation_scoring": [callable, None],
        "memory": [StrOptions({"auto", "full", "checkpoint"})],
        "backprop_window": [Interval(Integral, 1, None, closed="left"), None],
        "checkpoint": [str, os.PathLike, None],
        "checkpoint_interval": [Interval(Integral, 1, None, closed="left")],
        "augment": [str, list, tuple, None],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "compile": ["boolean"],
        "callback": [callable, None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        n_distilled=10,
        *,
        module="mlp",
        module_params=None,
        input_shape=None,
        init="real",
        multi_formation=1,
        model_init="random",
        n_inits=4,
        n_steps=None,
        distilled_batch_size=None,
        shuffle_batches=False,
        inner_lr_init=None,
        inner_momentum=0.0,
        inner_optimizer="sgd",
        learn_lr=True,
        learn_labels=False,
        label_init=None,
        label_temperature=1.0,
        relabel=None,
        learning_rate=0.03,
        step_size_learning_rate=0.01,
        learning_rate_schedule="cosine",
        batch_size=256,
        max_iter=None,
        validation_fraction=0.1,
        n_iter_no_change=None,
        validation_interval=10,
        validation_scoring=None,
        memory="auto",
        backprop_window=None,
        augment=None,
        precision="float32",
        compile=False,
        checkpoint=None,
        checkpoint_interval=50,
        callback=None,
        verbose=0,
        random_state=None,
        warm_start=False,
        device="auto",
    ):
        self.n_distilled = n_distilled
        self.module = module
        self.module_params = module_params
        self.input_shape = input_shape
        self.init = init
        self.multi_formation = multi_formation
        self.model_init = model_init
        self.n_inits = n_inits
        self.n_steps = n_steps
        self.distilled_batch_size = distilled_batch_size
        self.shuffle_batches = shuffle_batches
        self.inner_lr_init = inner_lr_init
        self.inner_momentum = inner_momentum
        self.inner_optimizer = inner_optimizer
        self.learn_lr = learn_lr
        self.learn_labels = learn_labels
        self.label_init = label_init
        self.label_temperature = label_temperature
        self.relabel = relabel
        self.learning_rate = learning_rate
        self.step_size_learning_rate = step_size_learning_rate
        self.learning_rate_schedule = learning_rate_schedule
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.validation_interval = validation_interval
        self.validation_scoring = validation_scoring
        self.memory = memory
        self.backprop_window = backprop_window
        self.augment = augment
        self.precision = precision
        self.compile = compile
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.callback = callback
        self.verbose = verbose
        self.random_state = random_state
        self.warm_start = warm_start
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ public API

    @_fit_context(prefer_skip_nested_validation=True)
    @restore_on_error
    def fit(self, X, y):
        """Distil ``X, y`` into ``n_distilled`` synthetic samples and ``n_steps`` step sizes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Real training samples (images flattened).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : DatasetDistiller
        """
        setup = self._prepare(X, y)
        with _unroll.ieee_float32(), contextlib.ExitStack() as resources:
            self._run(setup, resources)
        return self

    @_unroll.ieee_float32()
    def train_model(self, random_state=None):
        """Decode the compressed representation: train a network by the learned recipe.

        Parameters
        ----------
        random_state : int, RandomState instance or None, default=None
            Seeds the θ0 draw (ignored for a fixed or single pretrained θ0).

        Returns
        -------
        net : nn.Module
            A copy of ``module_`` holding the trained weights, on the CPU, in eval mode.
        """
        check_is_fitted(self)
        rng = check_random_state(random_state)
        with torch.no_grad():
            final = self._final_params(1, rng)
        net = copy.deepcopy(self.module_)
        net.load_state_dict(
            {k: v[0].cpu() for k, v in final.items()}, strict=False
        )
        return net.eval()

    def save(self, path):
        """Write the compressed representation to one self-contained file.

        The file holds the architecture and its parameters, p(θ0) (the fixed or pretrained θ0
        where there is one), the learned step sizes, the synthetic samples and labels, the
        classes and the package and format versions. See :meth:`load`.

        Parameters
        ----------
        path : str or path-like
        """
        from ._io import save_distiller

        check_is_fitted(self)
        save_distiller(self, path)

    @classmethod
    def load(cls, path):
        """Restore a fitted distiller written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        distiller : DatasetDistiller
            Its ``score``, ``evaluate`` and ``train_model`` match the saved estimator's.
        """
        from ._io import load_distiller

        return load_distiller(path, cls)

    def sample_model_init(self, random_state=None):
        """A network at θ0 ~ p(θ0), the start of the learned recipe.

        Parameters
        ----------
        random_state : int, RandomState instance or None, default=None
            Seeds the draw (ignored for a fixed or single pretrained θ0).

        Returns
        -------
        net : nn.Module
            A copy of ``module_`` holding θ0, on the CPU, in training mode.
        """
        check_is_fitted(self)
        rng = check_random_state(random_state)
        params0 = sample_params(self._model_init_spec, self.module_, 1, rng,
                                torch.device("cpu"))
        net = copy.deepcopy(self.module_)
        net.load_state_dict({k: v[0] for k, v in params0.items()}, strict=False)
        return net.train()

    def training_steps(self):
        """The learned recipe, step by step.

        Returns
        -------
        steps : list of (ndarray of int, float)
            For each of the ``n_steps`` gradient-descent steps, the rows of ``distilled_X_``
            (and ``distilled_y_proba_``) in its batch and its step size. Each step minimises
            the mean cross-entropy of the batch against ``distilled_y_proba_``; with
            ``inner_momentum`` μ > 0 a step is heavy-ball SGD with momentum μ (as
            ``torch.optim.SGD(momentum=μ)``), the velocity carried from step to step; with
            ``inner_optimizer="adam"`` an Adam step (as ``torch.optim.Adam``) whose learning
            rate is the step size, the moments carried from step to step.
        """
        check_is_fitted(self)
        syn_class = np.searchsorted(self.classes_, self.distilled_y_)
        batches = self._synthetic_batches(syn_class, torch.device("cpu"))
        all_rows = np.arange(syn_class.shape[0])
        return [
            (all_rows[batches[t % len(batches)]] if isinstance(batches[0], slice)
             else batches[t % len(batches)].numpy(), float(lr))
            for t, lr in enumerate(self.learned_lr_)
        ]

    # ------------------------------------------------------------------ set-up

    def _prepare(self, X, y):
        """Check everything and build the fit's state; sets no attribute of ``self``."""
        resume = None
        if self.warm_start and self.checkpoint is not None and os.path.exists(self.checkpoint):
            resume = _checkpoint.read(self.checkpoint)
        warm = resume is None and self.warm_start and hasattr(self, "_state")
        # A memory-mapped X stays on disk: minibatches are gathered from it row by row.
        lazy = isinstance(X, np.memmap)
        X, y = validate_data(
            self, X, y, reset=not warm, dtype=[np.float64, np.float32], y_numeric=False
        )
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        n_classes = classes.shape[0]
        if n_classes < 2:
            raise ValueError(
                f"y has 1 class ({classes.tolist()[0]!r}); distillation needs at least 2."
            )
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError(
                "warm_start=True needs the same classes as the previous fit: "
                f"got {classes.tolist()}, previously {self.classes_.tolist()}."
            )
        if resume is not None:
            _checkpoint.check_fits(resume, self, X.shape[1], classes)
        if self.n_distilled < n_classes:
            raise ValueError(
                f"n_distilled={self.n_distilled} is smaller than the number of classes "
                f"({n_classes}); at least one synthetic sample per class is needed."
            )
        if self.backprop_window is not None and self.backprop_window > self._n_steps():
            raise ValueError(
                f"backprop_window={self.backprop_window} is longer than the unroll "
                f"(n_steps={self._n_steps()}); it must be at most n_steps."
            )
        if self.inner_optimizer == "adam" and self.inner_momentum:
            raise ValueError(
                f"inner_momentum={self.inner_momentum} applies to inner_optimizer='sgd' "
                "only; Adam's steps carry their own momentum (β1 = 0.9). Set "
                "inner_momentum=0 with inner_optimizer='adam'."
            )
        if self.compile and self._window_length() < self._n_steps():
            raise ValueError(
                "compile=True cannot be combined with backprop_window below n_steps: the "
                "unroll's length changes at every iteration, and each would compile anew."
            )
        if (self.compile and self.shuffle_batches and self.distilled_batch_size is not None
                and self.distilled_batch_size < self.n_distilled):
            raise ValueError(
                "compile=True cannot be combined with shuffle_batches=True: the compiled "
                "meta-loss holds one fixed set of synthetic batches."
            )
        if self.shuffle_batches and (self.distilled_batch_size is None
                                     or self.distilled_batch_size >= self.n_distilled):
            warnings.warn(
                "shuffle_batches=True has no effect: with distilled_batch_size="
                f"{self.distilled_batch_size} every step uses the whole synthetic set "
                f"(n_distilled={self.n_distilled}); set distilled_batch_size below n_distilled "
                "to cut it into batches.",
                UserWarning,
            )
        if self.compile and self._segment() is not None:
            raise ValueError(
                f"compile=True needs every unrolled step in memory, but memory={self.memory!r} "
                f"with n_steps={self._n_steps()} checkpoints; set memory='full'."
            )
        n_features = X.shape[1]
        input_shape = check_input_shape(self.input_shape, self.module, n_features)
        self._check_formation(input_shape, n_classes)
        strategy = self._check_augment(input_shape)
        relabel = self._check_relabel(classes)
        net = make_module(self.module, default_module_params(self.module, self.module_params),
                          n_features, n_classes, input_shape)
        device = resolve_device(self.device)
        world, rank = _distributed.world()
        if world > 1:
            n_draw = self._n_draws_per_iteration(self.model_init)
            if n_draw < world:
                raise ValueError(
                    f"{n_draw} θ0 draw(s) per iteration cannot be split over {world} "
                    f"processes: use n_inits >= {world}"
                    + (" with model_init='random' or a list" if n_draw == 1 else "") + "."
                )
        rng = self._rng if warm else check_random_state(self.random_state)
        if world > 1 and not warm and not isinstance(self.random_state, Integral):
            # every rank must follow the same random stream: rank 0 chooses it
            seed = _distributed.broadcast_int(rng.randint(_MAX_SEED), device)
            rng = np.random.RandomState(seed)

        syn_class = self._synthetic_classes(n_classes)
        init_x = None
        if not warm:
            init_x = self._check_init(X, y_enc, syn_class, n_features, rng, classes)
        model_init = self._check_model_init(net, rng)
        if resume is not None:
            model_init = resume["model_init"]

        # Validation split (of row indices), then the rows on the device or on disk.
        rows = np.arange(X.shape[0])
        train_rows, val_rows = rows, None
        if self.validation_fraction > 0:
            counts = np.bincount(y_enc, minlength=n_classes)
            stratify = y_enc if counts.min() >= 2 else None
            n_val = max(min(int(round(self.validation_fraction * X.shape[0])),
                            _MAX_VALIDATION_SAMPLES), 1)
            if stratify is not None:
                n_val = max(n_val, n_classes)
            if X.shape[0] - n_val < 1:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no training "
                    f"sample out of {X.shape[0]}."
                )
            train_rows, val_rows = train_test_split(
                rows, test_size=n_val, stratify=stratify, random_state=rng.randint(_MAX_SEED),
            )
        target_map = np.arange(n_classes)
        for src, dst in relabel.items():
            target_map[src] = dst
        val_data = None
        if self.validation_scoring is not None:
            if val_rows is None:
                raise ValueError(
                    f"validation_scoring={self.validation_scoring!r} scores the held-out "
                    "split, but validation_fraction=0 holds none out; give "
                    "validation_fraction > 0."
                )
            check = getattr(self.validation_scoring, "check", None)
            if callable(check):
                check()  # a TrainingScorer's classifier, before any work starts
            # the held-out rows as arrays, labelled as the outer objective wants them
            val_data = (np.asarray(X[val_rows]), classes[target_map[y_enc[val_rows]]])
        targets = torch.as_tensor(target_map[y_enc], device=device)
        # the synthetic samples are learned in units of the data's spread, fixed at the start
        if resume is not None:
            mean, std = resume["mean_std"]
        elif warm:
            mean, std = self._mean_std
        else:
            mean, std = _moments(X)
        # Soft targets: learned, or fixed ones given by label_init. A warm start keeps the
        # kind of labels of the fit it continues (label_init is ignored there, as init is).
        label_init = None
        if warm:
            previous = np.asarray(self.distilled_y_proba_)
            soft = self.learn_labels or previous.shape != (syn_class.shape[0], n_classes) or (
                not np.array_equal(previous, np.eye(n_classes)[syn_class]))
        else:
            soft = self.learn_labels or self.label_init is not None
            if resume is None and self.label_init is not None:
                label_init = self._check_label_init(X, y_enc, classes, init_x, train_rows,
                                                    input_shape, mean, std)
        setup = {
            "X_dtype": X.dtype,
            "classes": classes,
            "n_classes": n_classes,
            "n_features": n_features,
            "input_shape": input_shape,
            "augment": strategy,
            "net": net,
            "device": device,
            "rng": rng,
            "syn_class": syn_class,
            "init_x": init_x,
            "label_init": label_init,
            "soft_labels": soft,
            "model_init": model_init,
            "warm": warm,
            "resume": resume,
            "train": _Rows(X, targets, train_rows, device, lazy),
            "val": None if val_rows is None else _Rows(X, targets, val_rows, device, lazy),
            "val_data": val_data,
            "mean": mean,
            "std": std,
            "world": world,
            "rank": rank,
        }
        return setup

    def _check_relabel(self, classes):
        if not self.relabel:
            return {}
        index = {c: i for i, c in enumerate(classes.tolist())}
        out = {}
        for src, dst in self.relabel.items():
            for name, c in (("source", src), ("target", dst)):
                if c not in index:
                    raise ValueError(
                        f"relabel {name} class {c!r} is not among the classes of y: "
                        f"{classes.tolist()}."
                    )
            out[index[src]] = index[dst]
        return out

    def _synthetic_classes(self, n_classes):
        """Class index of each synthetic sample, sorted by class (the ``f²`` images of one
        stored image are consecutive)."""
        tiles = self.multi_formation ** 2
        n_stored = self.n_distilled // tiles
        per_class = np.full(n_classes, n_stored // n_classes)
        per_class[: n_stored % n_classes] += 1
        return np.repeat(np.arange(n_classes), per_class * tiles)

    def _check_formation(self, input_shape, n_classes):
        f = self.multi_formation
        if f == 1:
            return
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(
                f"multi_formation={f} cuts images into tiles, but input_shape is "
                f"{input_shape}; give input_shape=(channels, height, width)."
            )
        if input_shape[1] % f or input_shape[2] % f:
            raise ValueError(
                f"multi_formation={f} must divide the image height and width; input_shape "
                f"is {tuple(input_shape)}."
            )
        if self.n_distilled % (f * f) or self.n_distilled // (f * f) < n_classes:
            raise ValueError(
                f"n_distilled={self.n_distilled} with multi_formation={f} must be a multiple "
                f"of {f * f} (the images of one stored image) with at least one stored image "
                f"per class: at least {f * f * n_classes} for {n_classes} classes."
            )

    def _check_init(self, X, y_enc, syn_class, n_features, rng, classes):
        """Initial synthetic samples in the space of X (float64 array)."""
        init = self.init
        if isinstance(init, str) and init == "noise":
            return rng.normal(X.mean(), X.std() or 1.0, size=(syn_class.shape[0], n_features))
        if isinstance(init, str) and init == "real":
            out = np.empty((syn_class.shape[0], n_features))
            for c in np.unique(syn_class):
                slots = np.flatnonzero(syn_class == c)
                pool = np.flatnonzero(y_enc == c)
                if pool.shape[0] < slots.shape[0]:
                    warnings.warn(
                        f"class {classes.tolist()[c]!r} has {pool.shape[0]} samples, fewer "
                        f"than its {slots.shape[0]} synthetic samples; init='real' repeats "
                        "some of them with small noise.",
                        UserWarning,
                    )
                pick = rng.choice(pool, slots.shape[0], replace=pool.shape[0] < slots.shape[0])
                out[slots] = X[pick]
                if pool.shape[0] < slots.shape[0]:
                    out[slots] += rng.normal(0, 0.01 * (X.std() or 1.0), out[slots].shape)
            return out
        arr = np.asarray(init, dtype=np.float64)
        if arr.shape != (syn_class.shape[0], n_features):
            raise ValueError(
                f"init array has shape {arr.shape}; expected (n_distilled, n_features) = "
                f"{(syn_class.shape[0], n_features)}."
            )
        if not np.isfinite(arr).all():
            raise ValueError("init array contains NaN or infinity.")
        return arr

    def _check_label_init(self, X, y_enc, classes, init_x, train_rows, input_shape, mean, std):
        """Initial soft labels from ``label_init`` (float64, rows summing to one), at
        ``label_temperature``."""
        spec = self.label_init
        n_classes = classes.shape[0]
        expected = (init_x.shape[0], n_classes)
        if hasattr(spec, "predict_proba"):
            teacher = spec
            try:
                check_is_fitted(teacher)
            except NotFittedError:
                teacher = clone(teacher).fit(X[train_rows], classes[y_enc[train_rows]])
            except TypeError:
                pass  # not an estimator (no fit method): a plain labelling function object
            known = getattr(teacher, "classes_", None)
            if known is not None and np.asarray(known).tolist() != classes.tolist():
                raise ValueError(
                    f"label_init's classes_ {np.asarray(known).tolist()} are not the classes "
                    f"of y {classes.tolist()}; its predict_proba columns must be those classes."
                )
            # the initial synthetic samples as the networks will see them (decoded)
            x0 = torch.as_tensor(init_x, dtype=torch.float32)
            z = _formation.encode((x0 - mean) / std, input_shape, self.multi_formation)
            seen = decode_stored(mean + std * z, input_shape, self.multi_formation, X.dtype)
            proba = np.asarray(teacher.predict_proba(seen), dtype=np.float64)
            what = "label_init's predict_proba returned"
        else:
            try:
                proba = np.asarray(spec, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"label_init is not an array of probabilities: {exc}"
                ) from None
            what = "label_init has"
        if proba.shape != expected:
            raise ValueError(
                f"{what} shape {proba.shape}; expected (n_distilled, n_classes) = {expected}."
            )
        if not np.isfinite(proba).all() or proba.min() < 0:
            raise ValueError(
                f"{what} negative, NaN or infinite values; expected probabilities."
            )
        sums = proba.sum(axis=1)
        if np.abs(sums - 1).max() > 1e-3:
            row = int(np.argmax(np.abs(sums - 1)))
            raise ValueError(
                f"{what} rows that do not sum to 1 (row {row} sums to {sums[row]:.4g}); "
                "expected a probability distribution over the classes per synthetic sample."
            )
        proba = proba ** (1.0 / self.label_temperature)
        return proba / proba.sum(axis=1, keepdims=True)

    def _check_augment(self, input_shape):
        """The augmentation strategy (tuple of names) or None; clear errors before work."""
        if self.augment is None:
            return None
        strategy = check_strategy(self.augment)
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(
                f"augment={self.augment!r} transforms images, but input_shape is "
                f"{input_shape}; give input_shape=(channels, height, width)."
            )
        if self.compile:
            raise ValueError(
                f"augment={self.augment!r} draws new transformations at every iteration, "
                "which compile=True would recompile every time; use one or the other."
            )
        return strategy

    def _check_model_init(self, net, rng):
        """p(θ0) as ``("random", None)`` or ``("list", [state dicts])``."""
        spec = self.model_init
        if isinstance(spec, str) and spec == "random":
            return ("random", None)
        if isinstance(spec, str) and spec == "fixed":
            if self.warm_start and getattr(self, "model_init_", None) is not None:
                return ("list", [self.model_init_])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(rng.randint(_MAX_SEED))
                template = reset_parameters(copy.deepcopy(net))
            return ("list", [param_dict(template)])
        items = spec if isinstance(spec, list) else [spec]
        if not items:
            raise ValueError(
                "model_init is an empty list; give at least one module or state dict."
            )
        states = []
        for i, item in enumerate(items):
            if isinstance(item, nn.Module):
                item = item.state_dict()
            if not isinstance(item, dict):
                raise ValueError(
                    f"model_init[{i}] is a {type(item).__name__}; expected an nn.Module or a "
                    "state dict."
                )
            probe = copy.deepcopy(net)
            try:
                probe.load_state_dict(item, strict=True)
            except RuntimeError as exc:
                raise ValueError(
                    f"model_init{'' if len(items) == 1 else f'[{i}]'} does not fit the module: "
                    f"{exc}"
                ) from None
            states.append(param_dict(probe))
        return ("list", states)

    # ------------------------------------------------------------------ the outer loop

    def _run(self, s, resources):
        # resources: an ExitStack that fit() closes however the run ends
        device = s["device"]
        net = s["net"]
        forward = self._make_forward(net, s["input_shape"])
        n_classes = s["n_classes"]
        syn_class = torch.as_tensor(s["syn_class"], device=device)
        mean, std = s["mean"], s["std"]

        resume = s["resume"]
        state = self._initial_state(s, syn_class)
        trainable, optimizer, scheduler = self._meta_optimizer(state, s)
        batches = self._synthetic_batches(s["syn_class"], device)
        step_batches = [batches]  # this iteration's; redrawn with shuffle_batches
        shuffle = self.shuffle_batches and not isinstance(batches[0], slice)
        rng = s["rng"]
        p_init = s["model_init"]
        n_draw = self.n_inits if p_init[0] == "random" or len(p_init[1]) > 1 else 1
        world, rank = s["world"], s["rank"]
        vectorize = self._vectorize(forward, net, n_draw // world)
        strategy = s["augment"]
        # one synthetic batch per step: the hand-written MLP path takes one set for all steps
        meta_vectorize = True if strategy is not None and vectorize == "batched" else vectorize
        aug_seed = [0]  # redrawn at every iteration
        # a single θ0 (fixed or one pretrained) is validated once, not four times
        n_val_draws = _N_VALIDATION_INITS if n_draw > 1 else 1
        # this process's share of the θ0 draws; its loss and gradient are weighted by it
        my_draws = np.array_split(np.arange(n_draw), world)[rank]
        share = len(my_draws) / n_draw

        # Fixed θ0 draws for validation, so that scores at different iterations compare.
        val_seed = rng.randint(_MAX_SEED)
        if resume is not None:
            val_seed = resume["val_seed"]
            rng.set_state(_checkpoint.rng_state_from(resume["rng"]))
        val = s["val"]

        def images(z):
            return mean + std * _formation.decode(z, s["input_shape"], self.multi_formation)

        def targets(st):
            if s["soft_labels"]:
                return torch.softmax(st["label_logits"], dim=1)
            return torch.nn.functional.one_hot(syn_class, n_classes).to(st["z"].dtype)

        def synthetic(_leaves):
            # the leaves are the tensors of ``state`` themselves
            x = images(state["z"])
            if strategy is not None:
                x = augment_steps(x, step_batches[0], self._n_steps(), s["input_shape"],
                                  strategy, aug_seed[0])
            return x, targets(state), state["log_lr"].exp()

        def step_flops():
            with torch.no_grad():
                x = images(state["z"])[batches[0]]
            return _threads.forward_flops(forward, dict(net.named_parameters()), x)

        # looped draws in parallel CPU threads where that pays (small inner steps)
        n_threads = _threads.n_draw_threads(max(len(my_draws), n_val_draws), device, vectorize,
                                            step_flops, net)
        pool = resources.enter_context(
            _threads.DrawThreads(net, s["input_shape"], n_threads, self.inner_momentum,
                                 self.inner_optimizer)
        ) if n_threads else None
        train_pool = pool if len(my_draws) > 1 else None
        val_pool = pool if n_val_draws > 1 else None

        if resume is None and not s["warm"]:
            lr0 = self._inner_lr_init()
            if lr0 == "auto":
                with torch.no_grad():
                    lr0 = self._auto_inner_lr(forward, net, p_init, n_draw, s, rng, device,
                                              images(state["z"]), targets(state),
                                              batches, vectorize, pool)
                    state["log_lr"].fill_(math.log(lr0))
            self.inner_lr_init_ = float(lr0)
        elif resume is not None:
            self.inner_lr_init_ = float(resume.get("inner_lr_init", math.nan))

        segment = self._segment()
        n_window = self._window_length()
        compiled = (_unroll.CompiledMetaGradient(forward, synthetic, batches, vectorize)
                    if self.compile else None)

        model_init_spec = (p_init[0], [
            {k: v.cpu() for k, v in d.items()} for d in p_init[1]
        ] if p_init[1] is not None else None)

        def validate(st, n_iter):
            if self.validation_scoring is not None:
                # the scorer sees the state under test as the fitted attributes, enough of
                # them for score() and evaluate() to run the learned recipe
                self._publish_state(st, syn_class, s)
                self.module_, self.input_shape_ = net, s["input_shape"]
                self.device_, self._model_init_spec = device, model_init_spec
                # one rank scores (the state is the same on all); the others take its word
                value = (float(self.validation_scoring(self, *s["val_data"])) if rank == 0
                         else math.nan)
                score = torch.tensor(value, dtype=torch.float64, device=device)
                if world > 1:
                    torch.distributed.broadcast(score, src=0)
                if torch.isnan(score):
                    warnings.warn(f"validation_scoring returned nan at iteration {n_iter}; "
                                  "a nan score never counts as the best.", RuntimeWarning)
                return score.item()
            with torch.no_grad():
                params0 = sample_params(p_init, net, n_val_draws,
                                        np.random.RandomState(val_seed), device)
                syn = images(st["z"]), targets(st), st["log_lr"].exp(), batches
                # the unroll in draw threads; the predictions of many samples gain nothing
                final = (val_pool.unroll_stacked(params0, *syn) if val_pool is not None
                         else _unroll.unroll_stacked(forward, params0, *syn, vectorize))
                correct = sum(
                    (_unroll.predict_stacked(forward, final, x) == t).sum()
                    for x, t in val.chunks()
                )
                score = correct.double() / (len(val) * n_val_draws)
                if world > 1:  # the ranks agree bit for bit; rank 0's word is final
                    torch.distributed.broadcast(score, src=0)
                return score.item()

        def snapshot(st):
            return {k: v.detach().clone() for k, v in st.items()}

        if resume is not None:
            n_iter0 = resume["n_iter"]
            loss_curve, val_scores, val_iters = (
                list(resume[k]) for k in ("loss_curve", "val_scores", "val_iters"))
            best = {k: v.to(device) for k, v in resume["best"].items()}
            best_iter, best_score = resume["best_iter"], resume["best_score"]
            n_target = max(self._max_iter(), n_iter0)
            # interrupted during validation, the run never reached the iteration's callback
            callback_pending = bool(resume.get("validation_pending"))
            if callback_pending and val is not None:
                # interrupted while validating its last iteration: validate it now, as the
                # uninterrupted run did, early-stopping check included
                score = validate(state, n_iter0)
                val_scores.append(score)
                val_iters.append(n_iter0)
                if _improves(score, best_score):
                    best, best_iter, best_score = snapshot(state), n_iter0, score
                if (self.n_iter_no_change is not None
                        and n_iter0 - best_iter >= self.n_iter_no_change):
                    n_target = n_iter0
        else:
            n_iter0 = self.n_iter_ if s["warm"] else 0
            callback_pending = False
            loss_curve = list(self.loss_curve_) if s["warm"] else []
            val_scores = list(self.validation_scores_) if s["warm"] else []
            val_iters = list(self.validation_iters_) if s["warm"] else []
            best = snapshot(state)
            best_iter, best_score = n_iter0, None
            if val is not None:
                best_score = validate(state, n_iter0)
                val_scores.append(best_score)
                val_iters.append(n_iter0)
            n_target = n_iter0 + self._max_iter()
        last_good = snapshot(state)

        def save_checkpoint(n_iter, rng_state, books=None):
            """``books``: the validation bookkeeping to write when the last iteration's
            validation is still pending (it is then run again on resuming)."""
            if rank != 0:
                return
            best_, best_iter_, best_score_, val_scores_, val_iters_ = books or (
                best, best_iter, best_score, val_scores, val_iters)
            _checkpoint.write(self.checkpoint, {
                "fingerprint": _checkpoint.fingerprint(self, s["n_features"], s["classes"]),
                "n_iter": n_iter,
                "state": _checkpoint.to_cpu(state),
                "optimizer": _checkpoint.to_cpu(optimizer.state_dict()),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "rng": _checkpoint.rng_state_to(rng_state),
                "val_seed": int(val_seed),
                "inner_lr_init": self.inner_lr_init_,
                "best": _checkpoint.to_cpu(best_),
                "best_iter": int(best_iter_),
                "best_score": best_score_,
                "validation_pending": books is not None,
                "loss_curve": list(loss_curve),
                "val_scores": list(val_scores_),
                "val_iters": list(val_iters_),
                "mean_std": (float(mean), float(std)),
                "model_init": (p_init[0],
                               None if p_init[1] is None else _checkpoint.to_cpu(p_init[1])),
            })
        stop_reason = None
        n_train = len(s["train"])
        batch = min(self.batch_size, n_train)

        self._publish_progress(n_iter0, loss_curve, val_scores, val_iters)
        progress = _progress(n_target - n_iter0, self.verbose and rank == 0)
        it = n_done = n_iter0
        # What a checkpoint written at an interruption needs: the last iteration whose
        # bookkeeping finished, the random stream as it was then, and whether the optimiser
        # has since begun to move the state (then the state belongs to no iteration); while
        # that iteration is validated, the bookkeeping as it was before (``pending``).
        complete, rng_done, stepping, pending = n_iter0, rng.get_state(), False, None
        interrupted = False

        def end_of_iteration(it):
            """What follows an iteration's validation: the callback, the checkpoint."""
            if self.callback is not None:
                self._publish_progress(it, loss_curve, val_scores, val_iters)
                self._publish_state(state, syn_class, s)
                self._n_iter_planned = n_target  # the last iteration this fit plans
                self.callback(self, it)
            if self.checkpoint is not None and it % self.checkpoint_interval == 0:
                save_checkpoint(it, rng_done)

        try:
            if callback_pending:  # the resumed iteration, validated above
                end_of_iteration(n_iter0)
            for it in range(n_iter0 + 1, n_target + 1):
                x_real, y_real = s["train"].take(rng.choice(n_train, batch, replace=False))
                params0 = sample_params(p_init, net, n_draw, rng, device, subset=my_draws)
                if strategy is not None:
                    aug_seed[0] = rng.randint(_MAX_SEED)
                window = None
                if n_window < self._n_steps():  # drawn only then: other fits keep their seeds
                    stop = int(rng.randint(n_window, self._n_steps() + 1))
                    window = (stop - n_window, stop)
                if shuffle:
                    step_batches[0] = self._synthetic_batches(s["syn_class"], device, rng)
                with torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=self.precision == "bfloat16"):
                    if compiled is not None:
                        loss, grads = compiled(params0, trainable, x_real, y_real)
                    elif train_pool is not None:
                        loss, grads = train_pool.meta_value_and_grad(
                            params0, synthetic, trainable, step_batches[0], x_real, y_real,
                            segment, window)
                    else:
                        loss, grads = _unroll.meta_value_and_grad(
                            forward, params0, synthetic, trainable, step_batches[0], x_real,
                            y_real, meta_vectorize, segment, window,
                        )
                if world > 1:
                    loss, grads = _distributed.all_reduce_mean(loss, grads, share)
                for t, g in zip(trainable, grads):
                    t.grad = g
                finite = torch.isfinite(loss) & torch.stack(
                    [torch.isfinite(t.grad).all() for t in trainable]
                ).all()
                loss_value, finite = torch.stack([loss.detach(), finite.float()]).tolist()
                if not finite:
                    stop_reason = (
                        f"the meta-loss or its gradient became non-finite at iteration {it}; "
                        "lower learning_rate or inner_lr_init"
                    )
                    break
                last_good = snapshot(state)
                stepping = True
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                n_done = it
                if self.learn_lr and not torch.isfinite(state["log_lr"].exp()).all():
                    stop_reason = (
                        f"the learned step sizes overflowed at iteration {it}; lower "
                        "learning_rate or inner_lr_init"
                    )
                    break
                loss_curve.append(loss_value)
                if val is not None and (it % self.validation_interval == 0
                                          or it == n_target):
                    # the iteration is finished but for its validation, which draws nothing
                    # from rng: an interrupt during it checkpoints this iteration as pending
                    pending = (best, best_iter, best_score, list(val_scores), list(val_iters))
                    complete, rng_done, stepping = it, rng.get_state(), False
                    score = validate(state, it)
                    val_scores.append(score)
                    val_iters.append(it)
                    if _improves(score, best_score):
                        best, best_iter, best_score = snapshot(state), it, score
                    pending = None
                complete, rng_done, stepping = it, rng.get_state(), False
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(
                        loss=f"{loss_value:.4f}",
                        val=f"{val_scores[-1]:.3f}" if val_scores else "-",
                    )
                end_of_iteration(it)
                if (self.n_iter_no_change is not None and val is not None
                        and it - best_iter >= self.n_iter_no_change):
                    break
        except KeyboardInterrupt:
            stop_reason = f"the fit was interrupted at iteration {it} of {n_target}"
            interrupted = True
        finally:
            if progress is not None:
                progress.close()

        if pending is not None:  # stopped while validating: keep the books as they were
            best, best_iter, best_score, val_scores, val_iters = pending
        if val is None:
            # Without validation the last finite state is kept.
            best, best_iter = (last_good, it - 1) if stop_reason else (snapshot(state), n_done)
        checkpoint_note = ""
        if self.checkpoint is not None and stop_reason is None:
            save_checkpoint(n_done, rng.get_state())
        elif self.checkpoint is not None and interrupted:
            # Interrupted between iterations or inside one's meta-gradient, the state is that
            # of the last finished iteration: checkpoint it, so that a resumed run loses
            # nothing. Inside the optimiser's step it is torn: the periodic checkpoint stays.
            if complete == n_done and not stepping:
                save_checkpoint(complete, rng_done, pending)
                checkpoint_note = f"; the checkpoint holds iteration {complete}" + (
                    " (its validation runs again on resuming)" if pending else "")
            else:
                checkpoint_note = ("; it stopped while the state was being updated, so no "
                                   "checkpoint was written at the stop (the file keeps any "
                                   "earlier one)")
        if stop_reason:
            what = "accuracy" if self.validation_scoring is None else "score"
            kept = (f"the best validation state (iteration {best_iter}, {what} "
                    f"{best_score:.4f})" if val is not None
                    else f"the last finite state (iteration {best_iter})")
            warnings.warn(f"{stop_reason}; keeping {kept}{checkpoint_note}.",
                          ConvergenceWarning)

        self._publish_progress(n_done, loss_curve, val_scores, val_iters)
        self._publish_state(best, syn_class, s)
        self.best_validation_score_ = best_score
        self.best_iter_ = best_iter
        self._state = {k: v.detach().cpu() for k, v in best.items()}
        self._optimizer_state = _checkpoint.to_cpu(optimizer.state_dict())
        self._rng = rng
        self._mean_std = (mean, std)
        self._model_init_spec = model_init_spec
        self.model_init_ = (
            copy.deepcopy(self._model_init_spec[1][0])
            if p_init[0] == "list" and len(p_init[1]) == 1 else None
        )
        self.module_ = net.cpu()
        self.input_shape_ = s["input_shape"]
        self.device_ = device
        return self

    def _initial_state(self, s, syn_class):
        """The learned tensors at the start of the run, on the fit's device: a checkpoint's,
        the previous fit's (warm start) or new ones."""
        device, mean, std, n_classes = s["device"], s["mean"], s["std"], s["n_classes"]
        resume = s["resume"]
        if resume is not None:
            state = {k: v.clone().to(device) for k, v in resume["state"].items()}
        elif s["warm"]:
            state = {k: v.detach().clone().to(device) for k, v in self._state.items()}
        else:
            x0 = torch.as_tensor(s["init_x"], dtype=torch.float32)
            z = _formation.encode((x0 - mean) / std, s["input_shape"], self.multi_formation)
            if s["label_init"] is not None:
                label_init = torch.as_tensor(s["label_init"], dtype=torch.float32)
                label_init = label_init.clamp_min(1e-12).log()  # softmax(log p) = p
            else:
                onehot = torch.nn.functional.one_hot(syn_class.cpu(), n_classes).float()
                # Soft labels start at probability 0.9 on the assigned class.
                label_init = onehot * math.log(9.0 * max(n_classes - 1, 1))
            state = {
                "z": z.to(device),
                # "auto" is replaced below, once the networks and batches are set up
                "log_lr": torch.full((self._n_steps(),), math.log(
                    0.2 if self._inner_lr_init() == "auto" else self._inner_lr_init()
                )).to(device),
                "label_logits": label_init.to(device),
            }
        if state["z"].shape[0] * self.multi_formation ** 2 != syn_class.shape[0]:
            raise ValueError(
                "warm_start=True cannot change n_distilled or multi_formation "
                f"({state['label_logits'].shape[0]} synthetic samples before, "
                f"{syn_class.shape[0]} now)."
            )
        if state["log_lr"].shape[0] != self._n_steps():
            raise ValueError(
                f"warm_start=True cannot change n_steps ({state['log_lr'].shape[0]} -> "
                f"{self._n_steps()})."
            )
        return state

    def _meta_optimizer(self, state, s):
        """The tensors the meta-gradient is taken for, in its order, with their Adam optimiser
        and learning-rate schedule (restored from a checkpoint or a warm start)."""
        resume = s["resume"]
        trainable = [state["z"]]
        groups = [{"params": [state["z"]]}]
        if self.learn_lr:
            trainable.append(state["log_lr"])
            groups.append({"params": [state["log_lr"]], "lr": self.step_size_learning_rate})
        if self.learn_labels:
            trainable.append(state["label_logits"])
            groups.append({"params": [state["label_logits"]]})
        for t in trainable:
            t.requires_grad_(True)
        optimizer = torch.optim.Adam(groups, lr=self.learning_rate)
        scheduler = None
        if self.learning_rate_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self._max_iter())
        # Adam's moments carry over a warm start; the schedule starts again unless resuming.
        previous = resume["optimizer"] if resume is not None else (
            self._optimizer_state if s["warm"] else None)
        if previous is not None:
            initial = [group["lr"] for group in optimizer.param_groups]
            try:
                optimizer.load_state_dict(previous)
            except ValueError:
                pass  # different set of learned tensors: start the moments afresh
            if resume is None:
                for group, lr in zip(optimizer.param_groups, initial):
                    group["lr"] = group["initial_lr"] = lr
        if resume is not None and scheduler is not None and resume["scheduler"] is not None:
            scheduler.load_state_dict(resume["scheduler"])
        return trainable, optimizer, scheduler

    def _publish_progress(self, n_iter, loss_curve, val_scores, val_iters):
        self.n_iter_ = n_iter
        self.loss_curve_ = list(loss_curve)
        self.validation_scores_ = list(val_scores)
        self.validation_iters_ = list(val_iters)

    def _publish_state(self, st, syn_class, s):
        mean, std = s["mean"], s["std"]
        stored = (mean + std * st["z"].detach()).cpu()
        self.classes_ = s["classes"]
        self.stored_X_ = stored.double().numpy().astype(s["X_dtype"], copy=False)
        self.distilled_X_ = decode_stored(stored, s["input_shape"], self.multi_formation,
                                          s["X_dtype"])
        self.distilled_y_ = s["classes"][syn_class.cpu().numpy()]
        if s["soft_labels"]:
            proba = torch.softmax(st["label_logits"].detach(), 1)
        else:
            proba = torch.nn.functional.one_hot(syn_class, s["n_classes"])
        self.distilled_y_proba_ = proba.cpu().double().numpy()
        self.learned_lr_ = st["log_lr"].detach().exp().cpu().double().numpy()

    # ------------------------------------------------------------------ helpers

    def _synthetic_batches(self, syn_class, device, rng=None):
        """Index tensors of the class-balanced batches cycled over the inner steps.

        The rows of each class are dealt out in order, or in a random order drawn from
        ``rng`` (``shuffle_batches``).
        """
        if self.distilled_batch_size is None or self.distilled_batch_size >= syn_class.shape[0]:
            return [slice(None)]
        # Interleave classes (rank within class, then class) so each chunk mixes all classes.
        rank = np.zeros_like(syn_class)
        for c in np.unique(syn_class):
            members = np.flatnonzero(syn_class == c)
            rank[members] = (np.arange(members.shape[0]) if rng is None
                             else rng.permutation(members.shape[0]))
        order = np.lexsort((syn_class, rank))
        return [
            torch.as_tensor(order[i: i + self.distilled_batch_size], device=device)
            for i in range(0, order.shape[0], self.distilled_batch_size)
        ]

    def _n_steps(self):
        """``n_steps`` with None resolved by module (:func:`_fit_length`)."""
        return self.n_steps if self.n_steps is not None else _fit_length(self.module)[0]

    def _max_iter(self):
        """``max_iter`` with None resolved by module (:func:`_fit_length`)."""
        return self.max_iter if self.max_iter is not None else _fit_length(self.module)[1]

    @property
    def n_steps_(self):
        check_is_fitted(self, "learned_lr_")
        return int(self.learned_lr_.shape[0])

    def _inner_lr_init(self):
        """``inner_lr_init`` with None resolved: 0.2 for the built-in MLP with SGD steps,
        else "auto"."""
        if self.inner_lr_init is not None:
            return self.inner_lr_init
        mlp = isinstance(self.module, str) and self.module == "mlp"
        return _MLP_INNER_LR if mlp and self.inner_optimizer == "sgd" else "auto"

    def _auto_inner_lr(self, forward, net, p_init, n_draw, s, rng, device, x_syn, y_syn,
                       batches, vectorize, pool=None):
        """The constant step size whose unroll on the initial set best fits a real batch,
        among those below the first rise of that loss (or the smallest nearly as good).

        The loss against the step size first falls, then rises where the steps overshoot;
        further up it can fall again, to a second minimum where the unrolled training is
        chaotic. Started there, fits stalled: on Fashion-MNIST with a ConvNet, ten images per
        class started at 0.32 (the lowest loss of the grid) never beat their initial
        validation score, and 40 images of ``multi_formation=2`` at 0.32 ended at 55 %
        validation accuracy where 0.032 (the first minimum) reached 75 % in 60 iterations.
        So the scan stops at the first rise."""
        sub = np.random.RandomState(rng.randint(_MAX_SEED))
        n_train = len(s["train"])
        x_real, y_real = s["train"].take(sub.choice(n_train, min(self.batch_size, n_train),
                                                    replace=False))
        # every draw on every process, so that all ranks pick the same step size
        params0 = sample_params(p_init, net, n_draw, sub, device)
        # Unrolls as long as the stretch that the meta-gradient sees (backprop_window): at
        # ten images per class on Fashion-MNIST, 80 steps picked 0.018 where 40 picked 0.032,
        # and a window of 40 in 80 steps started at 0.032 scored 0.6-1.1 points more on the
        # protocol and 1.4-1.7 by the recipe (seeds 0 and 1).
        n_scan = self._window_length()
        scanned = []  # (step size, loss) up to the first minimum
        candidates = _AUTO_INNER_LRS[self.inner_optimizer]
        for lr in candidates:
            lrs = torch.full((n_scan,), lr, device=device)
            if pool is not None and n_draw > 1:
                final = pool.unroll_stacked(params0, x_syn, y_syn, lrs, batches)
            else:
                final = _unroll.unroll_stacked(forward, params0, x_syn, y_syn, lrs, batches,
                                               vectorize)
            loss = _unroll.final_loss(forward, final, x_real, y_real, vectorize).item()
            if math.isfinite(loss) and (not scanned or loss < scanned[-1][1]):
                scanned.append((lr, loss))
            elif scanned:
                break  # past the first minimum
        if not scanned:
            raise ValueError(
                f"inner_lr_init='auto' found no step size from {candidates[0]:g} to "
                f"{candidates[-1]:g} with a finite loss; check the data scale or pass "
                "inner_lr_init explicitly."
            )
        # In a flat valley, the smallest step size that is nearly as good as the minimum.
        best_loss, first_loss = scanned[-1][1], scanned[0][1]
        limit = best_loss + _AUTO_TOLERANCE * (first_loss - best_loss)
        return next(lr for lr, loss in scanned if loss <= limit)

    def _n_draws_per_iteration(self, model_init):
        single = model_init == "fixed" if isinstance(model_init, str) else (
            not isinstance(model_init, list) or len(model_init) == 1)
        return 1 if single else self.n_inits

    def _window_length(self):
        """Steps the meta-gradient flows back through: ``backprop_window`` or ``n_steps``."""
        n_steps = self._n_steps()
        return n_steps if self.backprop_window is None else min(self.backprop_window, n_steps)

    def _segment(self):
        """Nested segment sizes of checkpointing (:func:`_unroll.checkpoint_schedule`), or
        None to keep every step."""
        n_steps = self._window_length()
        if self.memory == "full" or (self.memory == "auto" and n_steps <= _FULL_MEMORY_STEPS):
            return None
        return _unroll.checkpoint_schedule(n_steps)

    def _make_forward(self, net, input_shape):
        """The pure forward of the unrolled steps (with the recipe's inner optimiser)."""
        return _unroll.make_forward(net, input_shape, momentum=self.inner_momentum,
                                    optimizer=self.inner_optimizer)

    def _vectorize(self, forward, net, n_draws=None):
        device_type = torch.device(resolve_device(self.device)).type
        return _unroll.choose_vectorize(forward, net, n_draws, device_type)

    def _final_params(self, n, rng):
        """θ_T of ``n`` fresh θ0 draws trained by the learned recipe (on the fit device)."""
        device = self._device_for_eval()
        net = self.module_
        forward = self._make_forward(net, self.input_shape_)
        kind, states = self._model_init_spec
        if kind == "list" and len(states) == 1:
            n = 1
        params0 = sample_params(self._model_init_spec, net, n, rng, device)
        x_syn = torch.as_tensor(self.distilled_X_, dtype=torch.float32, device=device)
        y_syn = torch.as_tensor(self.distilled_y_proba_, dtype=torch.float32, device=device)
        lrs = torch.as_tensor(self.learned_lr_, dtype=torch.float32, device=device)
        syn_class = np.searchsorted(self.classes_, self.distilled_y_)
        batches = self._synthetic_batches(syn_class, device)
        return _unroll.unroll_stacked(forward, params0, x_syn, y_syn, lrs, batches,
                                      self._vectorize(forward, net))

    def _device_for_eval(self):
        dev = self.device_
        if dev.type == "cuda" and not torch.cuda.is_available():
            return torch.device("cpu")
        return dev

    @_unroll.ieee_float32()
    def _correct(self, X, y, n_inits, random_state):
        """Boolean matrix (n_draws, n_samples): is each sample right for each θ0 draw."""
        rng = check_random_state(random_state)
        with torch.no_grad():
            final = self._final_params(n_inits, rng)
            x = torch.as_tensor(np.array(X, dtype=np.float32), device=self._device_for_eval())
            pred = _unroll.predict_stacked(
                _unroll.make_forward(self.module_, self.input_shape_), final, x
            ).cpu().numpy()
        known = np.isin(y, self.classes_)
        y_idx = np.where(known,
                         np.searchsorted(self.classes_, np.where(known, y, self.classes_[0])),
                         -1)
        return pred == y_idx[None, :]


def decode_stored(stored, input_shape, factor, dtype):
    """``distilled_X_`` of ``stored_X_`` (float32 arithmetic, so that a saved file decodes to
    the very same array)."""
    stored = torch.as_tensor(stored, dtype=torch.float32)
    x = _formation.decode(stored, input_shape, factor)
    return x.double().numpy().astype(dtype, copy=False)


class _Rows:
    """Rows of the real data: on the device, or gathered lazily from an array on disk."""

    def __init__(self, X, targets, rows, device, lazy):
        self.rows = rows
        self.targets = targets[torch.as_tensor(rows, device=targets.device)]
        self.device = device
        self.lazy = lazy
        self.X = X if lazy else torch.as_tensor(np.array(X[rows], dtype=np.float32),
                                                 device=device)

    def __len__(self):
        return self.rows.shape[0]

    def take(self, idx):
        """Samples and targets at positions ``idx`` (of this split)."""
        t_idx = torch.as_tensor(idx, device=self.device)
        if self.lazy:
            x = torch.as_tensor(np.asarray(self.X[self.rows[idx]], dtype=np.float32),
                                device=self.device)
        else:
            x = self.X[t_idx]
        return x, self.targets[t_idx]

    def chunks(self, size=4096):
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))


def _moments(X, chunk=65536):
    """Mean and standard deviation of all values of X, in float64, in chunks of rows."""
    n, total, total_sq = X.size, 0.0, 0.0
    for start in range(0, X.shape[0], chunk):
        block = np.asarray(X[start:start + chunk], dtype=np.float64)
        total += block.sum()
        total_sq += np.square(block).sum()
    mean = total / n
    std = math.sqrt(max(total_sq / n - mean**2, 0.0))
    return mean, std or 1.0


def _fit_length(module):
    """Default ``(n_steps, max_iter)`` of ``module`` (a name or an ``nn.Module``)."""
    return _FIT_LENGTH.get(module, _FIT_LENGTH_OTHER) if isinstance(module, str) else (
        _FIT_LENGTH_OTHER)


def _progress(total, verbose):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="distilling", unit="it")

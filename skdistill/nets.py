"""Built-in networks and resolution of the ``module`` parameter.

Every built-in module takes flat or image-shaped input: images arrive flattened as rows of
``X`` and are restored with ``input_shape`` before the first convolution. None of them has
BatchNorm or other running statistics, so a forward pass is a pure function of the
parameters, which is what the unrolled inner loop needs.
"""

import copy
import inspect
import math
from numbers import Integral

import numpy as np
import torch
from torch import nn

__all__ = [
    "MLP", "LeNet", "ConvNet", "build_module", "infer_input_shape", "reset_parameters",
    "param_dict", "sample_params", "check_input_shape", "make_module", "default_module_params",
]

MAX_SEED = 2**31 - 1


class MLP(nn.Module):
    """Fully connected network with ReLU activations.

    Parameters
    ----------
    n_features : int
        Size of one flattened input sample.
    n_classes : int
        Number of output logits.
    hidden_layer_sizes : tuple of int, default=(256,)
        Width of each hidden layer; ``()`` gives multinomial logistic regression.
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(256,)):
        super().__init__()
        sizes = [n_features, *hidden_layer_sizes]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(1))


class LeNet(nn.Module):
    """LeNet-5 style network: two 5x5 convolutions with max-pooling, then three dense layers.

    The convolutions are padded so that any image of at least 4x4 pixels fits (8x8 digits
    as well as 28x28 MNIST).

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one sample.
    n_classes : int
        Number of output logits.
    """

    def __init__(self, input_shape, n_classes):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        n_flat = 16 * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Linear(n_flat, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class ConvNet(nn.Module):
    """The ConvNet of the dataset-condensation literature (Gidaris & Komodakis 2018; Zhao 2021).

    ``depth`` blocks of [3x3 convolution, instance normalisation, ReLU, 2x2 average pooling],
    then one linear layer. Instance normalisation is ``GroupNorm`` with one group per channel,
    so the network has no running statistics.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one sample.
    n_classes : int
        Number of output logits.
    width : int, default=128
        Channels of every convolution.
    depth : int, default=3
        Number of blocks; each halves the image size, so ``2 ** depth`` must not exceed it.
    first_padding : int, default=1
        Zero padding of the first convolution (the others pad by 1, keeping the size). The
        literature's code pads one-channel images by 3, so that 28x28 MNIST and
        Fashion-MNIST images pass through the blocks as 32x32 ones: 32, 16, 8, 4 pixels
        at depth 3, where padding 1 gives 28, 14, 7, 3 and the last pooling drops the
        seventh row and column.
    """

    def __init__(self, input_shape, n_classes, width=128, depth=3, first_padding=1):
        super().__init__()
        c, h, w = input_shape
        if isinstance(first_padding, bool) or not isinstance(first_padding, Integral) \
                or first_padding < 0:
            raise ValueError(
                f"ConvNet's first_padding must be a non-negative int; got {first_padding!r}."
            )
        h, w = h + 2 * (first_padding - 1), w + 2 * (first_padding - 1)
        if min(h, w) < 2**depth:
            raise ValueError(
                f"ConvNet of depth={depth} halves the image {depth} times, but input_shape "
                f"{tuple(input_shape)} is only {min(h, w)} pixels wide after the first "
                f"convolution (first_padding={first_padding}); lower module_params['depth'] "
                "or use a larger image."
            )
        blocks = []
        for i in range(depth):
            blocks += [
                nn.Conv2d(c if i == 0 else width, width, 3,
                          padding=first_padding if i == 0 else 1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(),
                nn.AvgPool2d(2),
            ]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width * (h >> depth) * (w >> depth), n_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


_BUILTIN = {"mlp": MLP, "lenet": LeNet, "convnet": ConvNet}
_IMAGE_MODULES = {"lenet", "convnet"}
# What module_params=None means for a distiller or selector. The ConvNet of width 32 and
# depth 2 distilled Fashion-MNIST (one image per class, the distiller's defaults) in 9-11
# minutes on one CPU thread and its images scored 75.7-76.3 % on the literature's width-128
# depth-3 ConvNet (three seeds); distilling with that ConvNet itself takes about two hours
# there (77.1 % in 91 s on an H200, at 10 steps).
_DISTILLING_PARAMS = {"convnet": {"width": 32, "depth": 2}}


def default_module_params(module, module_params):
    """``module_params`` of a distiller or selector, with the default for built-in names.

    None means the module's own defaults, except for ``"convnet"``: width 32, depth 2
    (the ConvNet class's own defaults, 128 and 3, are the literature's evaluation network).
    """
    if module_params is not None:
        return module_params
    if isinstance(module, str):
        return dict(_DISTILLING_PARAMS.get(module, {}))
    return None


def infer_input_shape(n_features):
    """``(1, s, s)`` when ``n_features`` is a perfect square ``s * s``, else None."""
    side = math.isqrt(n_features)
    return (1, side, side) if side * side == n_features else None


def build_module(module, module_params, n_features, n_classes, input_shape):
    """Instantiate the network described by the ``module`` parameter.

    Parameters
    ----------
    module : {"mlp", "lenet", "convnet"}, nn.Module subclass or nn.Module instance
        A built-in name is built for ``n_features`` (MLP) or ``input_shape`` (conv nets) and
        ``n_classes``; a subclass is called with ``module_params`` only; an instance is deep
        copied (and ``module_params`` must be empty).
    module_params : dict or None
        Extra constructor arguments.
    n_features, n_classes : int
    input_shape : tuple of int or None
        Shape of one sample, already checked against ``n_features``.

    Returns
    -------
    net : nn.Module
        A new module in training mode, on the CPU.
    """
    params = dict(module_params or {})
    if isinstance(module, str):
        cls = _BUILTIN[module]
        if module in _IMAGE_MODULES:
            if input_shape is None or len(input_shape) != 3:
                raise ValueError(
                    f"module={module!r} needs input_shape=(channels, height, width); got "
                    f"input_shape={input_shape!r} for {n_features} features."
                )
            net = cls(tuple(input_shape), n_classes, **params)
        else:
            net = cls(n_features, n_classes, **params)
    elif inspect.isclass(module) and issubclass(module, nn.Module):
        net = module(**params)
    elif isinstance(module, nn.Module):
        if params:
            raise ValueError(
                "module_params cannot be applied to an nn.Module instance; pass the class "
                "instead, or leave module_params=None."
            )
        net = copy.deepcopy(module)
    else:  # pragma: no cover - excluded by parameter validation
        raise TypeError(f"module={module!r} is not a name, an nn.Module subclass or instance.")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ValueError(
            "module contains BatchNorm, whose running statistics make a forward pass depend on "
            "hidden state; use GroupNorm/InstanceNorm with affine=True, or LayerNorm, instead."
        )
    return net.train()


def reset_parameters(net):
    """Draw fresh weights from each layer's own initialiser (``reset_parameters``)."""
    for m in net.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return net


def param_dict(net):
    """Detached copies of the parameters of ``net``, by name."""
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def sample_params(p_init, net, n, rng, device, subset=None):
    """``n`` draws of θ0 ~ p(θ0), stacked along a new axis 0, on ``device``.

    Each draw has its own random stream (seeded from one number taken from ``rng`` and the
    draw's index), so the draws do not depend on how many are materialised at once: a
    process that builds draws 0-1 and another that builds 2-3 get exactly the draws that a
    single process building 0-3 gets. ``rng`` advances by the same amount either way.

    Parameters
    ----------
    p_init : ("random", None) or ("list", list of parameter dicts)
        ``"random"``: fresh weights from each layer's own initialiser, seeded without
        touching the global torch RNG; ``"list"``: draws (uniformly, with replacement) among
        the given parameter dicts.
    net : nn.Module
        Architecture template (its own weights are not used).
    n : int
        Number of draws in this iteration, over all processes.
    rng : numpy.random.RandomState
    device : torch.device
    subset : sequence of int, default=None
        Indices of the draws to build (all when None).

    Returns
    -------
    params : dict of str to Tensor of shape (len(subset), *param.shape)
    """
    kind, states = p_init
    base = rng.randint(MAX_SEED)
    choice = rng.randint(len(states), size=n) if kind == "list" and len(states) > 1 else None
    subset = range(n) if subset is None else subset
    draws = []
    if kind == "random":
        with torch.random.fork_rng(devices=[]):
            template = copy.deepcopy(net)
            for i in subset:
                torch.manual_seed(int(np.random.SeedSequence([base, i]).generate_state(1)[0]))
                draws.append(param_dict(reset_parameters(template)))
    elif choice is None:
        draws = [states[0]] * len(subset)
    else:
        draws = [states[choice[i]] for i in subset]
    return {k: torch.stack([d[k] for d in draws]).to(device) for k in draws[0]}


def check_input_shape(input_shape, module, n_features):
    """The shape that restores one sample for ``module``, checked against ``n_features``.

    None stays None for the MLP and user modules; for a convolutional built-in, ``(1, s, s)``
    is inferred when ``n_features == s * s``.
    """
    if input_shape is None:
        if isinstance(module, str) and module in _IMAGE_MODULES:
            shape = infer_input_shape(n_features)
            if shape is None:
                raise ValueError(
                    f"module={module!r} needs input_shape=(channels, height, width); "
                    f"{n_features} features is not a square image, so it cannot be inferred."
                )
            return shape
        return None
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, Integral) and s > 0 for s in shape):
        raise ValueError(f"input_shape={input_shape!r} must be a tuple of positive integers.")
    if math.prod(shape) != n_features:
        raise ValueError(
            f"input_shape={shape} holds {math.prod(shape)} values but X has {n_features} "
            "features per sample."
        )
    return tuple(int(s) for s in shape)


def make_module(module, module_params, n_features, n_classes, input_shape):
    """:func:`build_module`, with every way it can fail turned into a ValueError that names
    the parameter, and a probe forward pass that checks the output has ``n_classes`` logits.
    """
    if not isinstance(module, (str, nn.Module)) and not (
        inspect.isclass(module) and issubclass(module, nn.Module)
    ):
        raise ValueError(
            f"module={_describe(module)} must be 'mlp', 'lenet', 'convnet', an nn.Module "
            "subclass or an nn.Module instance."
        )
    try:
        net = build_module(module, module_params, n_features, n_classes, input_shape)
    except TypeError as exc:
        raise ValueError(
            f"module_params={module_params!r} do not fit module={_describe(module)}: {exc}"
        ) from None
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError(f"module={_describe(module)} has no trainable parameters.")
    probe = torch.zeros(2, n_features)
    if input_shape is not None:
        probe = probe.reshape(2, *input_shape)
    try:
        with torch.no_grad():
            out = net(probe)
    except Exception as exc:
        raise ValueError(
            f"module={_describe(module)} fails on a batch of samples of shape "
            f"{tuple(probe.shape[1:])} (input_shape={input_shape!r}): {exc}"
        ) from None
    if out.ndim != 2 or out.shape[1] != n_classes:
        raise ValueError(
            f"module={_describe(module)} outputs shape {tuple(out.shape)} for 2 samples, but "
            f"y has {n_classes} classes: it must output (n_samples, {n_classes}) logits."
        )
    return net


def _describe(module):
    """A short name of the ``module`` parameter for messages (a repr can span many lines)."""
    if isinstance(module, str):
        return repr(module)
    if inspect.isclass(module):
        return module.__name__
    if isinstance(module, nn.Module):
        return f"<{type(module).__name__} instance>"
    return repr(module)

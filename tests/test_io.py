"""Save and load of the compressed representation: one file, the same numbers after load."""

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from skdistill import DatasetDistiller
from skdistill._io import FORMAT_VERSION, read_manifest, save_distiller


class TinyNet(nn.Module):
    """A user module, importable by name: saved as an import path and its parameters."""

    def __init__(self, n_features=6, n_classes=3, hidden=5):
        super().__init__()
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_classes)
        # A parameter of no torch layer: θ0 draws keep it, so the file must hold it.
        self.scale = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x))) * self.scale


def fast(**kwargs):
    params = dict(n_distilled=6, max_iter=3, n_steps=2, n_inits=2, random_state=0,
                  device="cpu")
    params.update(kwargs)
    return DatasetDistiller(**params)


def assert_same_fit(a, b, X, y):
    """Everything a user can see of the two estimators is equal."""
    for name in ("distilled_X_", "distilled_y_", "distilled_y_proba_", "learned_lr_",
                 "classes_"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)
    for name in ("n_features_in_", "n_iter_", "loss_curve_", "validation_scores_",
                 "validation_iters_", "best_validation_score_", "best_iter_", "input_shape_",
                 "n_steps_", "inner_lr_init_"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.score(X, y) == b.score(X, y)
    np.testing.assert_array_equal(a.evaluate(X, y, n_inits=3, random_state=1),
                                  b.evaluate(X, y, n_inits=3, random_state=1))
    left = a.train_model(random_state=2).state_dict()
    right = b.train_model(random_state=2).state_dict()
    assert left.keys() == right.keys()
    for k in left:
        torch.testing.assert_close(left[k], right[k], rtol=0, atol=0)


def edit_manifest(path, edit):
    """Rewrite the manifest of a saved file in place: ``edit(manifest)`` changes the dict."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


@pytest.fixture
def fitted(tiny_data):
    X, y = tiny_data
    return fast().fit(X, y), X, y


# ---------------------------------------------------------------------- round trips


def test_round_trip_restores_score_evaluate_and_train_model(fitted, tmp_path):
    d, X, y = fitted
    d.save(tmp_path / "tiny.skd")
    restored = DatasetDistiller.load(tmp_path / "tiny.skd")
    assert_same_fit(d, restored, X, y)
    assert restored.get_params() == d.get_params()


def test_file_is_a_zip_with_a_json_manifest(fitted, tmp_path):
    d, _, _ = fitted
    save_distiller(d, tmp_path / "tiny.skd", metadata={"dataset": "tiny"})
    with zipfile.ZipFile(tmp_path / "tiny.skd") as zf:
        assert zf.namelist() == ["manifest.json", "arrays.pt"]
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["architecture"]["kind"] == "builtin"
    assert manifest["metadata"] == {"dataset": "tiny"}
    assert read_manifest(tmp_path / "tiny.skd")["written_by"]["torch"] == torch.__version__
    # No temporary file is left beside it.
    assert os.listdir(tmp_path) == ["tiny.skd"]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    module=st.sampled_from(["mlp", "lenet", "convnet"]),
    side=st.sampled_from([4, 8]),
    labels=st.sampled_from(["int", "negative int", "str", "object str", "float"]),
    n_classes=st.integers(2, 4),
    ipc=st.integers(1, 2),
    learn_labels=st.booleans(),
    model_init=st.sampled_from(["random", "fixed"]),
    batched=st.booleans(),
    float32=st.booleans(),
)
def test_round_trip_over_shapes_labels_and_modules(tmp_path, module, side, labels, n_classes,
                                                   ipc, learn_labels, model_init, batched,
                                                   float32):
    rng = np.random.RandomState(side * 10 + n_classes)
    y_int = np.repeat(np.arange(n_classes), 8)
    X = rng.normal(size=(y_int.shape[0], side * side)) + y_int[:, None]
    X = X.astype(np.float32 if float32 else np.float64)
    y = {"int": y_int, "negative int": y_int * 1000 - 7, "str": np.array(["cat", "dog", "emu",
         "fox"])[y_int], "object str": np.array([f"c{i}" for i in y_int], dtype=object),
         "float": y_int.astype(float) * 2}[labels]
    params = {"convnet": {"width": 3, "depth": 1}, "mlp": {"hidden_layer_sizes": (7,)},
              "lenet": None}[module]
    d = fast(module=module, module_params=params, n_distilled=ipc * n_classes,
             learn_labels=learn_labels, model_init=model_init,
             distilled_batch_size=n_classes if batched else None, max_iter=2).fit(X, y)
    path = tmp_path / f"{module}-{labels}.skd"
    d.save(path)
    restored = DatasetDistiller.load(path)
    assert_same_fit(d, restored, X, y)
    assert restored.get_params() == d.get_params()
    assert restored.distilled_X_.dtype == X.dtype


def test_user_module_class_is_saved_by_import_path(tiny_data, tmp_path):
    X, y = tiny_data
    d = fast(module=TinyNet, module_params={"hidden": 4}).fit(X, y)
    d.save(tmp_path / "user.skd")
    assert read_manifest(tmp_path / "user.skd")["architecture"]["import_path"].endswith(
        ":TinyNet")
    restored = DatasetDistiller.load(tmp_path / "user.skd")
    assert restored.module is TinyNet
    assert_same_fit(d, restored, X, y)


def test_user_module_instance_is_pickled_and_restored(tiny_data, tmp_path):
    X, y = tiny_data
    d = fast(module=TinyNet(hidden=3)).fit(X, y)
    d.save(tmp_path / "instance.skd")
    with zipfile.ZipFile(tmp_path / "instance.skd") as zf:
        assert "module.pt" in zf.namelist()
    restored = DatasetDistiller.load(tmp_path / "instance.skd")
    assert isinstance(restored.module, TinyNet)
    assert_same_fit(d, restored, X, y)


def test_a_module_that_cannot_be_pickled_is_refused_and_leaves_no_file(tiny_data, tmp_path):
    X, y = tiny_data

    class Local(TinyNet):  # defined in a function: neither importable nor picklable
        pass

    d = fast(module=Local()).fit(X, y)
    with pytest.raises(ValueError, match="cannot be saved.*top level"):
        d.save(tmp_path / "local.skd")
    assert os.listdir(tmp_path) == []


def test_pretrained_distribution_round_trip(tiny_data, tmp_path):
    X, y = tiny_data
    torch.manual_seed(0)
    pretrained = [TinyNet().state_dict() for _ in range(3)]
    d = fast(module=TinyNet, model_init=pretrained).fit(X, y)
    d.save(tmp_path / "pre.skd")
    restored = DatasetDistiller.load(tmp_path / "pre.skd")
    assert_same_fit(d, restored, X, y)
    assert len(restored.model_init) == 3 and restored.model_init_ is None
    for seed in range(4):
        a = d.sample_model_init(random_state=seed).state_dict()
        b = restored.sample_model_init(random_state=seed).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_relabel_and_string_classes_round_trip(tiny_data, tmp_path):
    X, y = tiny_data
    names = np.array(["ant", "bee", "cow"])[y]
    d = fast(relabel={"ant": "cow"}, learn_labels=True).fit(X, names)
    d.save(tmp_path / "relabel.skd")
    restored = DatasetDistiller.load(tmp_path / "relabel.skd")
    assert restored.relabel == {"ant": "cow"}
    assert_same_fit(d, restored, X, names)


def test_callback_is_not_saved(tiny_data, tmp_path):
    X, y = tiny_data
    d = fast(callback=lambda est, it: None).fit(X, y)
    d.save(tmp_path / "cb.skd")
    assert read_manifest(tmp_path / "cb.skd")["dropped_params"] == ["callback"]
    assert DatasetDistiller.load(tmp_path / "cb.skd").callback is None


def test_warm_start_continues_after_load(fitted, tmp_path):
    d, X, y = fitted
    d.save(tmp_path / "tiny.skd")
    restored = DatasetDistiller.load(tmp_path / "tiny.skd")
    restored.set_params(warm_start=True, max_iter=2).fit(X, y)
    assert restored.n_iter_ == d.n_iter_ + 2
    assert len(restored.loss_curve_) == len(d.loss_curve_) + 2


def test_auto_starting_step_size_is_kept_and_older_files_load_it_as_unknown(tiny_data,
                                                                             tmp_path):
    X, y = tiny_data
    d = fast(inner_lr_init="auto").fit(X, y)
    assert 0 < d.inner_lr_init_ < 1
    path = tmp_path / "tiny.skd"
    d.save(path)
    assert read_manifest(path)["fitted"]["inner_lr_init"] == d.inner_lr_init_
    assert DatasetDistiller.load(path).inner_lr_init_ == d.inner_lr_init_
    # a file written before the field existed: loads, with the start unknown
    edit_manifest(path, lambda m: m["fitted"].pop("inner_lr_init"))
    old = DatasetDistiller.load(path)
    assert np.isnan(old.inner_lr_init_)
    np.testing.assert_array_equal(old.learned_lr_, d.learned_lr_)
    # and saving it again writes null, not the NaN that JSON cannot hold
    old.save(tmp_path / "again.skd")
    assert read_manifest(tmp_path / "again.skd")["fitted"]["inner_lr_init"] is None


def test_load_leaves_the_global_torch_rng_alone(fitted, tmp_path):
    d, _, _ = fitted
    d.save(tmp_path / "tiny.skd")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DatasetDistiller.load(tmp_path / "tiny.skd")
    torch.testing.assert_close(torch.rand(3), expected)


def test_saving_an_unfitted_distiller_fails():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DatasetDistiller().save("never.skd")


# ---------------------------------------------------------------------- damaged files


@pytest.fixture
def saved(fitted, tmp_path):
    d, _, _ = fitted
    path = tmp_path / "tiny.skd"
    d.save(path)
    return path


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file_raises_a_clear_error(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=rf"{saved.name} is truncated or corrupt"):
        DatasetDistiller.load(saved)


def test_corrupt_bytes_inside_a_member_raise_a_clear_error(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("arrays.pt")
    # The member's data follow its 30-byte local header, name and extra field.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in (start + 10, start + info.compress_size // 2):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        saved.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=rf"{saved.name} is corrupt"):
            DatasetDistiller.load(saved)


def test_other_format_version_raises_a_clear_error(saved):
    edit_manifest(saved, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=rf"{saved.name} has format version "
                                         rf"{FORMAT_VERSION + 1}.*upgrade skdistill"):
        DatasetDistiller.load(saved)


def test_files_that_are_not_skdistill_files_are_named_as_such(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not a skdistill file: it is not a zip"):
        DatasetDistiller.load(text)
    checkpoint = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, checkpoint)  # a zip archive too, without our manifest
    with pytest.raises(ValueError, match="weights.pt is not a skdistill file: a zip archive "
                                         "without manifest.json"):
        DatasetDistiller.load(checkpoint)
    with pytest.raises(FileNotFoundError, match="missing.skd"):
        DatasetDistiller.load(tmp_path / "missing.skd")


def test_default_convnet_round_trips_and_older_files_keep_their_meaning(digits_split,
                                                                        tmp_path):
    X, _, y, _ = digits_split
    d = fast(module="convnet", n_distilled=10, max_iter=2).fit(X, y)  # module_params=None
    path = tmp_path / "convnet.skd"
    d.save(path)
    restored = DatasetDistiller.load(path)
    assert_same_fit(d, restored, X, y)
    assert restored.module_.features[0].out_channels == 32
    # a file saved before "convnet" meant 32x2 has no module_params in its architecture:
    # None then meant the class's own 128x3, and loading it still builds that
    d128 = fast(module="convnet", module_params={}, n_distilled=10, max_iter=1).fit(X, y)
    old = tmp_path / "old.skd"
    d128.save(old)
    edit_manifest(old, lambda m: m["params"].update(module_params=None))
    assert DatasetDistiller.load(old).module_.features[0].out_channels == 128

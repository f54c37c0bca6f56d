"""DSA-style augmentation: differentiable transformations and augmented standard training."""

import numpy as np
import pytest
import torch

from skdistill import ClassMeans, DistilledClassifier
from skdistill.augment import AUGMENTATIONS, AugmentedModule, augment_images


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_transformation_changes_images_and_passes_gradients(name):
    x = _images().requires_grad_()
    out = augment_images(x, torch.Generator().manual_seed(1), strategy=(name,))
    assert out.shape == x.shape and out.dtype == x.dtype
    # flips pick images at random: with 6 images and this seed at least one is flipped
    assert (out - x).abs().max() > 1e-3
    (grad,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x)
    assert grad.abs().sum() > 0


def test_augmentation_is_a_function_of_the_generator_state():
    x = _images()
    a = augment_images(x, torch.Generator().manual_seed(5))
    b = augment_images(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    g = torch.Generator().manual_seed(5)
    draws = {augment_images(x, g).sum().item() for _ in range(8)}
    assert len(draws) > 1  # successive calls transform differently


def test_augmentation_gradient_matches_finite_differences():
    x = _images(n=2).requires_grad_()
    for name in ("scale", "rotate", "crop", "color", "cutout"):
        def f(t, name=name):
            return augment_images(t, torch.Generator().manual_seed(3), (name,))
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="channels, height, width"):
        augment_images(torch.zeros(3, 64), torch.Generator())


def test_augmented_module_transforms_only_in_training_mode():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).double()
    wrapped = AugmentedModule(net, seed=0)
    x = _images()
    wrapped.eval()
    torch.testing.assert_close(wrapped(x), net(x))
    wrapped.train()
    assert (wrapped(x) - net(x)).abs().max() > 1e-6


def test_augmented_module_copies_restart_from_the_seed():
    import copy
    import pickle

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).double()
    wrapped = AugmentedModule(net, seed=4)
    x = _images()
    first = wrapped(x)
    for copied in (copy.deepcopy(wrapped), pickle.loads(pickle.dumps(wrapped))):
        torch.testing.assert_close(copied(x), first)


# ---------------------------------------------------------------- DistilledClassifier


def _clf(**params):
    defaults = dict(distiller=ClassMeans(n_distilled=10), training="standard",
                    module="convnet", module_params={"width": 8, "depth": 1},
                    input_shape=(1, 8, 8), max_epochs=30, lr=0.05, random_state=0)
    return DistilledClassifier(**{**defaults, **params})


def test_augmented_standard_training_is_reproducible_and_differs(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    a = _clf(augment="dsa").fit(X_train, y_train)
    b = _clf(augment="dsa").fit(X_train, y_train)
    plain = _clf().fit(X_train, y_train)
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    assert not np.allclose(a.predict_proba(X_test), plain.predict_proba(X_test))
    # predictions are not augmented: twice the same
    np.testing.assert_array_equal(a.predict_proba(X_test), a.predict_proba(X_test))
    assert a.score(X_test, y_test) > 0.5


@pytest.mark.parametrize("params, match", [
    ({"augment": "dsa", "training": "learned", "distiller": None, "module": None},
     "training='standard' only"),
    ({"augment": "mirror"}, "augment must be"),
    ({"augment": ["crop", "blur"]}, "blur"),
    ({"augment": "dsa", "module": "mlp", "input_shape": None}, "flat rows"),
])
def test_bad_augment_is_a_clear_error(digits_split, params, match, monkeypatch):
    X_train, _, y_train, _ = digits_split
    clf = _clf(**params)
    fitted = []  # before any work: no distiller is fitted
    monkeypatch.setattr(ClassMeans, "fit_resample",
                        lambda self, X, y: fitted.append(1) or (X[:10], y[:10]))
    with pytest.raises(ValueError, match=match):
        clf.fit(X_train, y_train)
    assert not hasattr(clf, "net_") and not fitted


# ---------------------------------------------------------------- DatasetDistiller


def _distiller(**params):
    from skdistill import DatasetDistiller

    defaults = dict(n_distilled=10, module="convnet", module_params={"width": 4, "depth": 1},
                    input_shape=(1, 8, 8), max_iter=6, n_steps=4, validation_interval=3,
                    inner_lr_init=0.1, random_state=0)
    return DatasetDistiller(**{**defaults, **params})


def test_augmented_distillation_is_reproducible_and_checkpointing_recomputes_it(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    a = _distiller(augment="dsa", memory="full").fit(X_train, y_train)
    b = _distiller(augment="dsa", memory="full").fit(X_train, y_train)
    plain = _distiller(memory="full").fit(X_train, y_train)
    np.testing.assert_array_equal(a.distilled_X_, b.distilled_X_)
    assert np.abs(a.distilled_X_ - plain.distilled_X_).max() > 1e-4
    # the same per-step transformations when the steps are recomputed
    ckpt = _distiller(augment="dsa", memory="checkpoint").fit(X_train, y_train)
    np.testing.assert_allclose(ckpt.distilled_X_, a.distilled_X_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ckpt.loss_curve_, a.loss_curve_, rtol=1e-5)


def test_augmented_mlp_distillation_takes_the_generic_path(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    est = _distiller(module="mlp", module_params=None, augment=["crop", "rotate"],
                     max_iter=50, n_steps=10, inner_lr_init=None).fit(X_train, y_train)
    assert est.score(X_test, y_test) > 0.7  # 0.79 measured


@pytest.mark.parametrize("params, match", [
    ({"augment": "dsa", "module": "mlp", "module_params": None, "input_shape": None},
     "input_shape"),
    ({"augment": "dsa", "compile": True}, "compile"),
    ({"augment": "zoom"}, "augment must be"),
])
def test_bad_augment_of_the_distiller_is_a_clear_error(digits_split, params, match):
    X_train, _, y_train, _ = digits_split
    est = _distiller(**params)
    with pytest.raises(ValueError, match=match):
        est.fit(X_train, y_train)
    assert not hasattr(est, "distilled_X_")


def test_unroll_takes_one_batch_per_step():
    from skdistill import _unroll
    from skdistill.nets import MLP, param_dict

    net = MLP(6, 3, hidden_layer_sizes=(5,)).double()
    forward = _unroll.make_forward(net, analytic=False)
    params = param_dict(net)
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    lrs = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    steps = [x[batches[t % 2]] for t in range(3)]
    want = _unroll.unroll(forward, params, x, y, lrs, batches)
    got = _unroll.unroll(forward, params, steps, y, lrs, batches)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    dense = _unroll.make_forward(net)
    with pytest.raises(ValueError, match="one synthetic set"):
        _unroll.meta_value_and_grad(
            dense, {k: v[None] for k, v in params.items()},
            lambda leaves: (steps, y, leaves[0].exp()), [lrs.log().requires_grad_()],
            batches, x, torch.tensor([0, 1, 2, 0]), vectorize="batched")

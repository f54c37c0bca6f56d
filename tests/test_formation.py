"""Multi-formation: stored images decoded into f² training images each."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skdistill import DatasetDistiller
from skdistill._formation import decode, encode


def test_decode_cuts_tiles_in_row_major_order_and_upsamples_them():
    # one stored 1×4×4 image whose 2×2 tiles are the constants 1, 2 (top) and 3, 4 (bottom)
    stored = torch.tensor([[1., 1., 2., 2.],
                           [1., 1., 2., 2.],
                           [3., 3., 4., 4.],
                           [3., 3., 4., 4.]]).reshape(1, 16)
    out = decode(stored, (1, 4, 4), 2)
    assert out.shape == (4, 16)
    # a constant tile upsamples to a constant image
    np.testing.assert_allclose(out.numpy(), np.repeat([[1.], [2.], [3.], [4.]], 16, axis=1))


def test_decode_upsamples_bilinearly():
    tile = torch.tensor([[0., 1.], [2., 3.]])
    stored = torch.zeros(1, 2, 4, 4)
    stored[0, 1, :2, 2:] = tile  # second channel, top right tile
    out = decode(stored.reshape(1, -1), (2, 4, 4), 2).reshape(4, 2, 4, 4)
    expected = torch.nn.functional.interpolate(tile[None, None], size=(4, 4), mode="bilinear",
                                               align_corners=False)[0, 0]
    torch.testing.assert_close(out[1, 1], expected)
    assert out[1, 0].abs().max() == 0 and out[[0, 2, 3]].abs().max() == 0


def test_factor_one_is_the_identity():
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    assert decode(z, (3, 2, 2), 1) is z and encode(z, (3, 2, 2), 1) is z


@settings(max_examples=25, deadline=None)
@given(factor=st.sampled_from([2, 3]), n=st.integers(1, 3), channels=st.integers(1, 2),
       scale=st.floats(0.1, 5), shift=st.floats(-3, 3), seed=st.integers(0, 2 ** 16))
def test_decode_is_linear_and_commutes_with_the_pixel_scaling(factor, n, channels, scale,
                                                              shift, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (channels, 2 * factor, 3 * factor)
    d = channels * shape[1] * shape[2]
    a, b = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(decode(a + 2 * b, shape, factor),
                               decode(a, shape, factor) + 2 * decode(b, shape, factor))
    # the distiller learns z in units of the data's spread: x = shift + scale * z
    torch.testing.assert_close(decode(shift + scale * a, shape, factor),
                               shift + scale * decode(a, shape, factor))


def test_encode_puts_each_image_averaged_down_into_its_tile():
    images = torch.arange(4 * 16, dtype=torch.float64).reshape(4, 16)
    stored = encode(images, (1, 4, 4), 2).reshape(4, 4)
    pooled = torch.nn.functional.avg_pool2d(images.reshape(4, 1, 4, 4), 2)[:, 0]
    torch.testing.assert_close(stored[:2, :2], pooled[0])
    torch.testing.assert_close(stored[:2, 2:], pooled[1])
    torch.testing.assert_close(stored[2:, :2], pooled[2])
    torch.testing.assert_close(stored[2:, 2:], pooled[3])


def test_decode_gradient_matches_finite_differences():
    z = torch.randn(2, 2 * 4 * 4, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda t: decode(t, (2, 4, 4), 2), (z,))


# ---------------------------------------------------------------- DatasetDistiller


def _distiller(**params):
    defaults = dict(n_distilled=40, multi_formation=2, module="convnet",
                    module_params={"width": 4, "depth": 1}, input_shape=(1, 8, 8), max_iter=6,
                    n_steps=4, validation_interval=3, inner_lr_init=0.1, random_state=0)
    return DatasetDistiller(**{**defaults, **params})


@pytest.fixture(scope="module")
def fitted(digits_split):
    X_train, _, y_train, _ = digits_split
    return _distiller().fit(X_train, y_train)


def test_fit_learns_stored_images_that_decode_to_the_training_set(fitted, digits_split):
    X_train, X_test, y_train, y_test = digits_split
    est = fitted
    assert est.stored_X_.shape == (10, 64) and est.distilled_X_.shape == (40, 64)
    # each stored image is one class's, and its four tiles are four of that class's images
    np.testing.assert_array_equal(est.distilled_y_, np.repeat(np.arange(10), 4))
    decoded = decode(torch.as_tensor(est.stored_X_, dtype=torch.float32), (1, 8, 8), 2)
    np.testing.assert_allclose(est.distilled_X_, decoded.double().numpy(), rtol=1e-6,
                               atol=1e-6)
    X_small, y_small = _distiller().fit_resample(X_train, y_train)
    np.testing.assert_array_equal(X_small, est.distilled_X_)  # reproducible


def test_stored_images_are_the_training_set_without_multi_formation(digits_split):
    X_train, _, y_train, _ = digits_split
    est = _distiller(n_distilled=10, multi_formation=1, max_iter=2).fit(X_train, y_train)
    np.testing.assert_array_equal(est.stored_X_, est.distilled_X_)


@pytest.mark.parametrize("params, match", [
    ({"module": "mlp", "module_params": None, "input_shape": None}, "input_shape"),
    ({"multi_formation": 3}, "must divide the image height and width"),
    ({"n_distilled": 42}, "multiple of 4"),
    ({"n_distilled": 36}, "at least one stored image per class: at least 40"),
    ({"multi_formation": 0}, "multi_formation"),
])
def test_bad_multi_formation_is_a_clear_error_before_any_work(digits_split, params, match):
    X_train, _, y_train, _ = digits_split
    est = _distiller(**params)
    with pytest.raises(ValueError, match=match):
        est.fit(X_train, y_train)
    assert not hasattr(est, "distilled_X_")


def test_warm_start_cannot_change_multi_formation(digits_split):
    X_train, _, y_train, _ = digits_split
    est = _distiller(n_distilled=40, multi_formation=1, max_iter=2, warm_start=True)
    est.fit(X_train, y_train)
    before = est.distilled_X_.copy()
    est.set_params(multi_formation=2)
    with pytest.raises(ValueError, match="cannot change n_distilled or multi_formation"):
        est.fit(X_train, y_train)
    np.testing.assert_array_equal(est.distilled_X_, before)  # the fitted state is kept


def test_save_writes_the_stored_images_and_load_decodes_them(fitted, digits_split, tmp_path):
    import zipfile

    _, X_test, _, y_test = digits_split
    path = tmp_path / "f2.skd"
    fitted.save(path)
    with zipfile.ZipFile(path) as zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
    back = DatasetDistiller.load(path)
    np.testing.assert_array_equal(back.stored_X_, fitted.stored_X_)
    np.testing.assert_array_equal(back.distilled_X_, fitted.distilled_X_)
    np.testing.assert_array_equal(back.evaluate(X_test, y_test, random_state=0),
                                  fitted.evaluate(X_test, y_test, random_state=0))
    # the file holds 10 images, not the 40 they decode to
    other = tmp_path / "f1.skd"
    plain = _distiller(n_distilled=40, multi_formation=1, max_iter=2).fit(*digits_split[::2])
    plain.save(other)
    with zipfile.ZipFile(other) as zf:
        plain_sizes = {info.filename: info.file_size for info in zf.infolist()}
    assert sum(sizes.values()) < sum(plain_sizes.values()) - 30 * 64 * 4 * 0.9
    # a warm start after load continues from the stored images
    back.set_params(warm_start=True, max_iter=1)
    back.fit(*digits_split[::2])
    assert back.stored_X_.shape == (10, 64)


def test_interrupted_fit_resumes_from_its_checkpoint_and_no_other(digits_split, tmp_path):
    from sklearn.exceptions import ConvergenceWarning

    X_train, _, y_train, _ = digits_split
    whole = _distiller(checkpoint=tmp_path / "a.ckpt", checkpoint_interval=2).fit(X_train,
                                                                                   y_train)

    def stop_at_3(distiller, n_iter):
        if n_iter == 3:
            raise KeyboardInterrupt

    path = tmp_path / "b.ckpt"
    with pytest.warns(ConvergenceWarning, match="interrupted at iteration 3"):
        _distiller(checkpoint=path, checkpoint_interval=2, callback=stop_at_3).fit(X_train,
                                                                                    y_train)
    with pytest.raises(ValueError, match="multi_formation: checkpoint 2, now 1"):
        _distiller(n_distilled=40, multi_formation=1, checkpoint=path,
                   warm_start=True).fit(X_train, y_train)
    resumed = _distiller(checkpoint=path, checkpoint_interval=2, warm_start=True).fit(
        X_train, y_train)
    np.testing.assert_array_equal(resumed.stored_X_, whole.stored_X_)
    np.testing.assert_array_equal(resumed.distilled_X_, whole.distilled_X_)


def test_distilled_classifier_trains_on_the_decoded_images(fitted, digits_split):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from skdistill import DistilledClassifier

    X_train, X_test, y_train, y_test = digits_split
    # the learned recipe replays the 40 decoded images, step by step as the distiller did
    clf = DistilledClassifier(distiller=_distiller(), random_state=0).fit(X_train, y_train)
    np.testing.assert_array_equal(clf.distiller_.distilled_X_, fitted.distilled_X_)
    recipe = fitted.evaluate(X_test, y_test, n_inits=1, random_state=0)[0]
    assert clf.score(X_test, y_test) == pytest.approx(recipe, abs=0.02)
    # ordinary training of another network on them, inside a pipeline
    pipe = make_pipeline(FunctionTransformer(), DistilledClassifier(
        distiller=_distiller(), training="standard", module="convnet",
        module_params={"width": 4, "depth": 1}, input_shape=(1, 8, 8), max_epochs=5,
        random_state=0))
    pipe.fit(X_train, y_train)
    assert pipe[-1].net_.history[-1]["batches"][0]["train_batch_size"] == 40
    assert pipe.score(X_test, y_test) > 0.25  # chance is 0.1; 0.45 measured

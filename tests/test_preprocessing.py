"""ZCAWhitening: the whitening it promises, its inverse, dtypes, bad input and the sklearn
API."""

import numpy as np
import pytest
from imblearn.pipeline import make_pipeline
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdistill import DatasetDistiller, ZCAWhitening, load_digits_images


@pytest.fixture
def correlated():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(6, 6)) * np.array([3.0, 2, 1, 0.5, 0.2, 0.05])[:, None]
    return rng.normal(size=(400, 6)) @ mixing + rng.normal(size=6)


def test_output_covariance_is_the_identity_when_barely_regularised(correlated):
    Z = ZCAWhitening(regularization=1e-12).fit_transform(correlated)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(6), atol=1e-6)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-10)


def test_it_is_pca_whitening_rotated_back_into_the_input_basis(correlated):
    pca = PCA(whiten=True).fit(correlated)
    expected = pca.transform(correlated) @ pca.components_
    Z = ZCAWhitening(regularization=1e-12).fit_transform(correlated)
    np.testing.assert_allclose(Z, expected, atol=1e-5)
    # the symmetric choice of whitening matrix: each output stays tied to its input feature
    zca = ZCAWhitening().fit(correlated)
    np.testing.assert_allclose(zca.whitening_, zca.whitening_.T, atol=1e-12)


def test_regularisation_leaves_each_direction_variance_lambda_over_lambda_plus_eps(correlated):
    zca = ZCAWhitening(regularization=0.1).fit(correlated)
    lam = zca.eigenvalues_
    assert zca.epsilon_ == pytest.approx(0.1 * lam.mean())
    _, vectors = np.linalg.eigh(np.cov(correlated, rowvar=False))
    along = zca.transform(correlated) @ vectors[:, ::-1]
    np.testing.assert_allclose(along.var(axis=0, ddof=1), lam / (lam + zca.epsilon_),
                               rtol=1e-6)
    # the weakest direction is damped to well below unit variance, not amplified
    assert (lam / (lam + zca.epsilon_))[-1] < 0.5


def test_covariance_summed_in_blocks_equals_numpy_s(correlated, monkeypatch):
    from skdistill import preprocessing

    monkeypatch.setattr(preprocessing, "_CHUNK", 7)  # 400 rows: 58 blocks, the last short
    zca = ZCAWhitening().fit(correlated.astype(np.float32))
    lam = np.linalg.eigvalsh(np.cov(correlated.astype(np.float32), rowvar=False))[::-1]
    np.testing.assert_allclose(zca.eigenvalues_, lam, rtol=1e-5)


def test_inverse_transform_recovers_the_input(correlated):
    zca = ZCAWhitening(regularization=0.1).fit(correlated)
    np.testing.assert_allclose(zca.inverse_transform(zca.transform(correlated)), correlated,
                               atol=1e-9)


def test_float32_images_stay_float32_and_constant_pixels_stay_finite():
    data = load_digits_images()
    X = data.X_train.astype(np.float32)
    assert np.any(X.std(axis=0) == 0)  # digits have constant border pixels
    Z = ZCAWhitening().fit(X).transform(data.X_test.astype(np.float32))
    assert Z.dtype == np.float32 and np.all(np.isfinite(Z))


@pytest.mark.parametrize("value", [0, -0.1, "big", None])
def test_bad_regularization_is_refused_by_name(value, correlated):
    with pytest.raises(InvalidParameterError, match="regularization"):
        ZCAWhitening(regularization=value).fit(correlated)


def test_bad_data_is_refused_and_leaves_no_fitted_state(correlated):
    zca = ZCAWhitening()
    with pytest.raises(ValueError, match="at least 2 samples"):
        zca.fit(correlated[:1])
    with pytest.raises(ValueError, match="zero variance"):
        zca.fit(np.ones((10, 4)))
    assert not hasattr(zca, "n_features_in_") and not hasattr(zca, "mean_")
    zca.fit(correlated)
    with pytest.raises(ValueError, match="features"):
        zca.transform(correlated[:, :5])


def test_distils_in_the_whitened_space_inside_an_imblearn_pipeline():
    data = load_digits_images()
    pipe = make_pipeline(
        ZCAWhitening(),
        DatasetDistiller(n_distilled=10, max_iter=200, n_inits=1, n_steps=5, random_state=0,
                         module_params={"hidden_layer_sizes": (16,)}, device="cpu"),
    )
    X_res, y_res = pipe.fit_resample(data.X_train, data.y_train)
    assert X_res.shape == (10, 64) and sorted(y_res) == list(range(10))
    zca, distiller = pipe[0], pipe[-1]
    # the distilled set lives in the whitened space; inverse_transform shows it as pixels
    assert distiller.score(zca.transform(data.X_test), data.y_test) > 0.6  # 0.73 measured
    assert zca.inverse_transform(X_res).shape == (10, 64)


@parametrize_with_checks([ZCAWhitening()])
def test_sklearn_compatible_transformer(estimator, check):
    check(estimator)

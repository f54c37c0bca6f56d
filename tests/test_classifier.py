"""DistilledClassifier: a skorch network trained on the distilled set, by recipe or by
epochs."""

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdistill import ClassMeans, DatasetDistiller, DistilledClassifier, RandomSelector


def quick_distiller(**params):
    """A distiller that fits digits in well under a second (about 60% test accuracy)."""
    defaults = dict(n_distilled=10, max_iter=10, n_steps=5, inner_lr_init=0.3,
                    learning_rate=0.05, random_state=0)
    return DatasetDistiller(**{**defaults, **params})


# ---------------------------------------------------------------- the learned recipe


@pytest.mark.parametrize("distiller_params", [
    {},
    {"learn_labels": True},
    {"distilled_batch_size": 4},
    {"inner_momentum": 0.9, "learn_labels": True, "distilled_batch_size": 4},
    {"inner_optimizer": "adam", "inner_lr_init": 0.01, "learn_labels": True,
     "distilled_batch_size": 4},
], ids=["hard-labels", "soft-labels", "batches-of-4", "momentum", "adam"])
def test_learned_training_scores_as_the_distiller_for_the_same_theta0(digits_split,
                                                                      distiller_params):
    X_train, X_test, y_train, y_test = digits_split
    clf = DistilledClassifier(quick_distiller(**distiller_params), random_state=3)
    clf.fit(X_train, y_train)

    expected = clf.distiller_.evaluate(X_test, y_test, n_inits=1, random_state=3)[0]
    assert expected > 0.4
    assert clf.score(X_test, y_test) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("momentum, optimizer", [(0.0, "sgd"), (0.9, "sgd"), (0.0, "adam")])
def test_learned_training_gives_the_weights_of_train_model(digits_split, momentum, optimizer):
    X_train, _, y_train, _ = digits_split
    lr = {"inner_lr_init": 0.01} if optimizer == "adam" else {}  # Adam's scale
    clf = DistilledClassifier(quick_distiller(inner_momentum=momentum,
                                              inner_optimizer=optimizer, **lr), random_state=7)
    clf.fit(X_train, y_train)
    if optimizer == "adam":  # the recipe's Adam steps are torch's Adam's
        assert isinstance(clf.net_.optimizer_, torch.optim.Adam)
    else:  # the recipe's momentum is the SGD optimiser's (0 is plain SGD)
        assert clf.net_.optimizer_.param_groups[0]["momentum"] == momentum

    decoded = clf.distiller_.train_model(random_state=7).state_dict()
    for name, weight in clf.net_.module_.state_dict().items():
        torch.testing.assert_close(weight, decoded[name], rtol=0, atol=1e-6)


def test_learned_training_takes_one_sgd_step_per_learned_step_size(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(distilled_batch_size=4), random_state=0)
    clf.fit(X_train, y_train)

    steps = clf.distiller_.training_steps()
    batches = clf.net_.history[-1, "batches"]
    assert [b["train_batch_size"] for b in batches] == [4, 4, 2, 4, 4]
    assert [len(rows) for rows, _ in steps] == [4, 4, 2, 4, 4]
    assert isinstance(clf.net_.optimizer_, torch.optim.SGD)
    group = clf.net_.optimizer_.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0, 0)
    assert group["lr"] == pytest.approx(clf.distiller_.learned_lr_[-1], rel=1e-6)


def test_learned_training_restores_images_for_a_conv_net(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    clf = DistilledClassifier(quick_distiller(max_iter=2, n_steps=2), random_state=0)
    clf.set_params(distiller__module="lenet").fit(X_train, y_train)

    assert clf.input_shape_ == (1, 8, 8)
    expected = clf.distiller_.evaluate(X_test, y_test, n_inits=1, random_state=0)[0]
    assert clf.score(X_test, y_test) == pytest.approx(expected, abs=1e-12)


def test_learned_training_needs_a_learned_recipe(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(RandomSelector(n_distilled=10), training="learned")

    with pytest.raises(ValueError, match="RandomSelector has none; use training='standard'"):
        clf.fit(X_train, y_train)


# ---------------------------------------------------------------- standard training


def test_standard_training_runs_max_epochs_of_adam_from_fresh_weights(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    clf = DistilledClassifier(quick_distiller(), training="standard", max_epochs=50,
                              random_state=0).fit(X_train, y_train)

    assert len(clf.net_.history) == 50
    assert isinstance(clf.net_.optimizer_, torch.optim.Adam)
    theta0 = clf.distiller_.sample_model_init(0).state_dict()["layers.0.weight"]
    assert not torch.equal(clf.net_.module_.state_dict()["layers.0.weight"], theta0)
    assert clf.score(X_test, y_test) > 0.5


def test_standard_training_with_an_optimizer_class_and_minibatches(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(n_distilled=20), training="standard",
                              optimizer=torch.optim.SGD, optimizer_params={"momentum": 0.9},
                              lr=0.1, batch_size=8, max_epochs=3, random_state=0)
    clf.fit(X_train, y_train)

    assert clf.net_.optimizer_.param_groups[0]["momentum"] == 0.9
    assert [b["train_batch_size"] for b in clf.net_.history[-1, "batches"]] == [8, 8, 4]


@pytest.mark.parametrize("schedule, lrs", [
    (None, [0.1] * 6),
    ("step", [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]),
    ("cosine", [0.1 * (1 + np.cos(np.pi * e / 6)) / 2 for e in range(6)]),
])
def test_standard_training_follows_the_lr_schedule(digits_split, schedule, lrs):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(RandomSelector(n_distilled=20, random_state=0),
                              training="standard", optimizer="sgd", lr=0.1, batch_size=8,
                              max_epochs=6, lr_schedule=schedule, random_state=0)
    clf.fit(X_train, y_train)
    if schedule is None:  # no scheduler: the optimiser ends where it started
        assert "lr_schedule" not in dict(clf.net_.callbacks_)
        used = [clf.net_.optimizer_.param_groups[0]["lr"]] * 6
    else:  # the step size of each epoch, recorded by the scheduler as the epoch began
        used = clf.net_.history[:, "event_lr"]
    np.testing.assert_allclose(used, lrs, rtol=1e-12, atol=1e-15)


def test_step_schedule_of_one_epoch_keeps_the_rate(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(RandomSelector(n_distilled=20, random_state=0),
                              training="standard", optimizer="sgd", lr=0.1, max_epochs=1,
                              lr_schedule="step", random_state=0).fit(X_train, y_train)
    assert clf.net_.history[:, "event_lr"] == [0.1]


def test_lr_schedule_is_refused_for_the_learned_recipe(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), lr_schedule="step")
    with pytest.raises(ValueError, match="lr_schedule='step' applies to training='standard'"):
        clf.fit(X_train, y_train)
    assert not hasattr(clf, "distiller_")
    with pytest.raises(ValueError, match="'lr_schedule' parameter"):
        DistilledClassifier(training="standard", lr_schedule="linear").fit(X_train, y_train)


def test_standard_training_is_reproducible_with_random_state(digits_split):
    X_train, X_test, y_train, _ = digits_split

    def make():
        return DistilledClassifier(quick_distiller(n_distilled=20), training="standard",
                                   batch_size=5, max_epochs=5, random_state=1)

    first = make().fit(X_train, y_train).predict_proba(X_test)
    second = make().fit(X_train, y_train).predict_proba(X_test)
    np.testing.assert_array_equal(first, second)


def test_coreset_selector_trains_its_own_module_by_standard_training(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    selector = RandomSelector(n_distilled=30, module_params={"hidden_layer_sizes": (32,)})
    clf = DistilledClassifier(selector, training="standard", max_epochs=100, random_state=0)
    clf.fit(X_train, y_train)

    assert clf.net_.module_.layers[0].weight.shape == (32, 64)
    assert clf.score(X_test, y_test) > 0.7


def test_sampler_without_a_module_uses_the_module_parameter(digits_split):
    from imblearn.under_sampling import RandomUnderSampler

    X_train, X_test, y_train, y_test = digits_split
    clf = DistilledClassifier(RandomUnderSampler(random_state=0), training="standard",
                              module_params={"hidden_layer_sizes": (16,)}, lr=0.05,
                              max_epochs=20, random_state=0).fit(X_train, y_train)

    assert clf.net_.module_.layers[0].weight.shape == (16, 64)
    assert clf.score(X_test, y_test) > 0.8


def test_standard_training_of_another_network_than_the_distillers(digits_split):
    # cross-architecture evaluation: images distilled with an MLP, trained into a LeNet
    X_train, X_test, y_train, y_test = digits_split
    distiller = quick_distiller(max_iter=30).fit(X_train, y_train)
    clf = DistilledClassifier(distiller, training="standard", module="lenet", max_epochs=50,
                              lr=0.01, random_state=0).fit(X_train, y_train)

    assert type(clf.net_.module_).__name__ == "LeNet" and clf.input_shape_ == (1, 8, 8)
    assert type(clf.distiller_.module_).__name__ == "MLP"
    # 10 images, 50 epochs: 0.53 here (0.40-0.57 over seeds 0-3); chance is 0.1
    assert clf.score(X_test, y_test) > 0.3


def test_learned_training_refuses_another_network(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), module="lenet")
    with pytest.raises(ValueError, match="module='lenet' applies to training='standard' only"):
        clf.fit(X_train, y_train)
    assert not hasattr(clf, "distiller_")


# ---------------------------------------------------------------- predictions and parameters


def test_predict_returns_string_labels_of_classes(digits_split):
    X_train, X_test, y_train, _ = digits_split
    names = np.array(["zero", "one", "two", "three", "four",
                      "five", "six", "seven", "eight", "nine"])
    clf = DistilledClassifier(quick_distiller(), random_state=0)
    clf.fit(X_train, names[y_train])

    assert clf.classes_.tolist() == sorted(names.tolist())
    assert set(clf.predict(X_test)) <= set(names)


def test_predict_proba_rows_sum_to_one_and_agree_with_predict(digits_split):
    X_train, X_test, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), random_state=0).fit(X_train, y_train)

    proba = clf.predict_proba(X_test)
    assert proba.shape == (X_test.shape[0], 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X_test))


def test_a_samples_probabilities_do_not_depend_on_its_batch(digits_split):
    # Some CPUs' float32 matrix products take other kernels for a handful of rows, which
    # differ in the last bits (measured: MKL on a Xeon with AMX); prediction pads small batches.
    X_train, X_test, y_train, _ = digits_split
    clf = DistilledClassifier(ClassMeans(n_distilled=10), training="standard", max_epochs=20,
                              random_state=0).fit(X_train, y_train)
    full = clf.predict_proba(X_test[:300])
    for rows in (slice(0, 1), slice(5, 8), slice(10, 25), slice(100, 300)):
        np.testing.assert_array_equal(clf.predict_proba(X_test[rows]), full[rows])


def test_nested_distiller_parameters_are_settable(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = DistilledClassifier(quick_distiller(), random_state=0)
    clf.set_params(distiller__n_distilled=20, distiller__n_steps=3)

    assert clf.get_params()["distiller__n_distilled"] == 20
    clf.fit(X_train, y_train)
    assert clf.distiller_.distilled_X_.shape == (20, 64)
    assert len(clf.net_.history[-1, "batches"]) == 3


def test_random_state_seeds_an_unseeded_distiller_only():
    X, y = np.random.RandomState(0).normal(size=(60, 4)), np.repeat([0, 1, 2], 20)
    unseeded = DistilledClassifier(DatasetDistiller(n_distilled=3, max_iter=1),
                                   random_state=5).fit(X, y)
    seeded = DistilledClassifier(DatasetDistiller(n_distilled=3, max_iter=1, random_state=2),
                                 random_state=5).fit(X, y)

    assert unseeded.distiller_.random_state == 5
    assert unseeded.distiller.random_state is None
    assert seeded.distiller_.random_state == 2


def test_single_class_is_rejected():
    with pytest.raises(ValueError, match="y has 1 class"):
        DistilledClassifier().fit(np.ones((4, 2)), [1, 1, 1, 1])


# ---------------------------------------------------------------- scikit-learn's own checks


def _check_instances():
    small = dict(n_distilled=6, max_iter=5, n_steps=3, inner_lr_init=0.5,
                 validation_fraction=0.0, module_params={"hidden_layer_sizes": (16,)})
    yield DistilledClassifier(DatasetDistiller(**small), random_state=0)
    # class means: a deterministic selection, so the checks' accuracy thresholds hold
    yield DistilledClassifier(ClassMeans(n_distilled=6), training="standard",
                              max_epochs=30, lr=0.05, random_state=0)


# Every check passes: nothing is expected to fail.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(list(_check_instances()),
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)

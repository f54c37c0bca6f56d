"""The command line: distil to a file, evaluate it, plot it, show it; clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from skdistill import DatasetDistiller
from skdistill.__main__ import main
from skdistill.nets import MLP

pytest.importorskip("matplotlib")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits.skd"
    assert main(["distill", "digits", "--max-iter", "5", "-v", "0", "-o", str(path)]) == 0
    return path


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "skdistill", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("demo", "distill", "evaluate", "plot", "info"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "distill", "evaluate", "plot", "info"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: skdistill " + command in capsys.readouterr().out


def test_distill_writes_a_file_that_loads(digits_file, capsys):
    d = DatasetDistiller.load(digits_file)
    assert d.distilled_X_.shape == (10, 64) and d.n_iter_ == 5
    code, out, _ = run(capsys, "info", digits_file)
    assert code == 0
    assert "architecture: mlp" in out and "dataset=digits" in out and "10 samples" in out
    assert "recipe: 10 steps" in out and "started at step size 0.2\n" in out  # the MLP's


def test_distill_takes_the_module_s_default_length(capsys, tmp_path):
    """Without --n-steps / --max-iter, the distiller's defaults for the module apply (20
    steps for convnet) and `info` reports the steps used."""
    path = tmp_path / "conv.skd"
    code, out, _ = run(capsys, "distill", "digits", "--module", "convnet", "--module-params",
                       '{"width": 2, "depth": 1}', "--max-iter", 1, "-v", 0, "-o", path)
    assert code == 0 and "with module convnet, 20 steps" in out
    assert DatasetDistiller.load(path).learned_lr_.shape == (20,)
    code, out, _ = run(capsys, "info", path)
    lr0 = DatasetDistiller.load(path).inner_lr_init_  # what "auto" picked for the ConvNet
    assert code == 0 and f"recipe: 20 steps, batches of the whole set, started at step size " \
                         f"{lr0:.3g}\n" in out


def test_distill_with_multi_formation(capsys, tmp_path):
    path = tmp_path / "f2.skd"
    code, out, _ = run(capsys, "distill", "digits", "--module", "convnet", "--module-params",
                       '{"width": 4, "depth": 1}', "--multi-formation", 2, "--max-iter", 2,
                       "--n-steps", 3, "-v", 0, "-o", path)
    assert code == 0
    assert "distilling to 40 samples (10 stored images of 2x2 tiles)" in out
    d = DatasetDistiller.load(path)
    assert d.distilled_X_.shape == (40, 64) and d.stored_X_.shape == (10, 64)
    code, out, _ = run(capsys, "info", path)
    assert "40 samples decoded from 10 stored images (2x2 tiles each)" in out


def test_evaluate_uses_the_recorded_dataset(digits_file, capsys, tmp_path):
    code, out, _ = run(capsys, "evaluate", digits_file, "--n-inits", 2, "--standard-epochs",
                       5, "--json", tmp_path / "acc.json")
    assert code == 0
    assert "test split of digits: 540 samples" in out
    assert "learned recipe (10 steps, 2 θ0 draws)" in out
    assert "standard training (Adam, 5 epochs, 2 runs)" in out
    result = json.loads((tmp_path / "acc.json").read_text())
    assert len(result["learned_recipe"]) == 2 and len(result["standard_training"]) == 2
    expected = DatasetDistiller.load(digits_file).evaluate(
        *_digits_test(), n_inits=2, random_state=0)
    np.testing.assert_allclose(result["learned_recipe"], expected)


def _digits_test():
    from skdistill import load_digits_images

    data = load_digits_images()
    return data.X_test, data.y_test


def test_plot_writes_the_images_and_the_curves(digits_file, capsys, tmp_path):
    import matplotlib.image as mpimg

    code, out, _ = run(capsys, "plot", digits_file, "-o", tmp_path / "d.png", "--dpi", 40)
    assert code == 0
    for name in ("d.png", "d_curve.png"):
        image = mpimg.imread(tmp_path / name)
        assert image.shape[0] > 50 and image[..., :3].std() > 0.05


def test_distill_an_npz_file_with_string_labels_and_relabel(capsys, tmp_path):
    rng = np.random.RandomState(0)
    y = np.repeat(["ant", "bee", "cow"], 40)
    X = rng.normal(size=(120, 16)) + 3 * (y == "bee")[:, None] - 3 * (y == "cow")[:, None]
    np.savez(tmp_path / "toy.npz", X=X, y=y)
    code, out, err = run(capsys, "distill", tmp_path / "toy.npz", "--max-iter", 20,
                         "--relabel", "ant:cow", "-v", 0, "-o", tmp_path / "toy.skd")
    assert code == 0, err
    assert "96 training samples of shape (16,), 3 classes" in out
    code, out, err = run(capsys, "evaluate", tmp_path / "toy.skd", "--n-inits", 2)
    assert code == 0, err
    assert "relabel ant → cow" in out and "of the test samples of ant" in out


def test_pretrained_state_dicts_become_the_init_distribution(capsys, tmp_path):
    files = []
    for seed in range(2):
        torch.manual_seed(seed)
        files.append(tmp_path / f"pre{seed}.pt")
        torch.save(MLP(64, 10, hidden_layer_sizes=(16,)).state_dict(), files[-1])
    code, _, err = run(capsys, "distill", "digits", "--module-params",
                       '{"hidden_layer_sizes": [16]}', "--model-init", *files,
                       "--max-iter", 3, "-v", 0, "-o", tmp_path / "adapted.skd")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "adapted.skd")
    assert "p(θ0): 2 stored θ0 state(s)" in out


@pytest.mark.parametrize("argv, message", [
    (["distill", "imagenet"], "unknown dataset 'imagenet': give one of digits"),
    (["distill", "missing.npz"], "no such file: missing.npz"),
    (["distill", "digits", "--relabel", "3-8"], "write SOURCE:TARGET"),
    (["distill", "digits", "--relabel", "3:11"], "'11' is not a class of the dataset"),
    (["distill", "digits", "--model-init", "nowhere.pt"], "neither 'random', 'fixed' nor a "
                                                          "file"),
    (["distill", "digits", "--module-params", "{width: 3}"], "Expecting property name"),
    (["distill", "digits", "--params", "{precision: 1}"], "--params is not valid JSON"),
    (["distill", "digits", "--params", "[1]"], "--params must be a JSON object"),
    (["distill", "digits", "--params", '{"n_step": 5}'], "'n_step' is not a DatasetDistiller "
                                                          "parameter; the parameters are"),
    (["distill", "digits", "--params", '{"n_steps": 5}'], "'n_steps' has an option of its "
                                                           "own: use --n-steps"),
    (["distill", "digits", "--params", '{"warm_start": true}'], "use --checkpoint"),
    (["distill", "digits", "--params", '{"callback": "print"}'], "JSON cannot give"),
    (["distill", "digits", "--label-init", "nowhere.npy"], "--label-init: no such file"),
    (["evaluate", "missing.skd"], "no such file: missing.skd"),
    (["plot", "missing.skd"], "no such file: missing.skd"),
])
def test_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"skdistill {argv[0]}: error: ") and message in err
    assert "Traceback" not in err


def test_a_file_that_is_not_a_distillation_is_refused(capsys, tmp_path):
    (tmp_path / "notes.skd").write_text("not a zip")
    code, _, err = run(capsys, "info", tmp_path / "notes.skd")
    assert code == 2 and "notes.skd is not a skdistill file" in err


def test_an_npz_without_the_expected_arrays_is_refused(capsys, tmp_path):
    np.savez(tmp_path / "odd.npz", A=np.zeros(3))
    code, _, err = run(capsys, "distill", tmp_path / "odd.npz")
    assert code == 2 and "odd.npz holds ['A']; expected arrays X_train and y_train" in err


def test_bad_option_values_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["distill", "digits", "--ipc", "0"])
    assert exc.value.code == 2
    assert "--ipc: 0 is not a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["distill", "digits", "--learning-rate", "-1"])
    assert exc.value.code == 2
    assert "--learning-rate: -1 is not a positive finite number" in capsys.readouterr().err


def test_params_reach_the_distiller(capsys, tmp_path):
    """--params sets any other DatasetDistiller parameter: with learn_lr=false and
    inner_lr_init=0.05 the saved recipe is that constant step size."""
    path = tmp_path / "p.skd"
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--learning-rate", 0.01,
                       "--params", '{"learn_lr": false, "inner_lr_init": 0.05, '
                                   '"learning_rate_schedule": "constant"}')
    assert code == 0, err
    d = DatasetDistiller.load(path)
    params = d.get_params()
    assert params["learn_lr"] is False and params["learning_rate_schedule"] == "constant"
    assert params["learning_rate"] == 0.01
    np.testing.assert_allclose(d.learned_lr_, 0.05, rtol=1e-6)


def test_backprop_window_option_reaches_the_distiller(capsys, tmp_path):
    """--backprop-window sets the window; longer than the unroll, the distiller's own error
    names both; through --params it is refused for the option of its own."""
    path = tmp_path / "w.skd"
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--n-steps", 6, "--backprop-window", 3)
    assert code == 0, err
    d = DatasetDistiller.load(path)
    assert d.get_params()["backprop_window"] == 3 and d.n_steps_ == 6
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--n-steps", 6, "--backprop-window", 7)
    assert code == 2 and "backprop_window=7 is longer than the unroll (n_steps=6)" in err
    code, _, err = run(capsys, "distill", "digits", "-o", path,
                       "--params", '{"backprop_window": 3}')
    assert code == 2 and ("'backprop_window' has an option of its own: use --backprop-window"
                          in err)


def test_label_init_file_sets_fixed_soft_labels(capsys, tmp_path):
    """Without --learn-labels the labels of --label-init stay as given, after the
    temperature; a wrong shape is refused with the distiller's message."""
    proba = np.full((10, 10), 0.5 / 9)
    proba[np.arange(10), np.arange(10)] = 0.5
    np.save(tmp_path / "labels.npy", proba)
    path = tmp_path / "l.skd"
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--label-init", tmp_path / "labels.npy", "--label-temperature", 2)
    assert code == 0, err
    expected = np.sqrt(proba) / np.sqrt(proba).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(DatasetDistiller.load(path).distilled_y_proba_, expected,
                               atol=1e-6)
    np.save(tmp_path / "short.npy", proba[:5])
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--label-init", tmp_path / "short.npy")
    assert code == 2 and "label_init" in err and "(5, 10)" in err


def test_checkpoint_resumes_an_interrupted_run_to_the_uninterrupted_result(
        capsys, tmp_path, monkeypatch):
    """A run interrupted (Ctrl-C) at iteration 4, after its checkpoint at 3, then run again
    with the same command resumes from the checkpoint and gives the set of a run that was
    never interrupted."""
    common = ["distill", "digits", "-v", 0, "--max-iter", 6, "--module-params",
              '{"hidden_layer_sizes": [16]}', "--params", '{"checkpoint_interval": 3}']
    ck = tmp_path / "fit.ckpt"
    fit = DatasetDistiller.fit

    def interrupted_fit(self, X, y):
        def stop(distiller, n_iter):
            if n_iter == 4:
                raise KeyboardInterrupt
        self.callback = stop
        return fit(self, X, y)

    with monkeypatch.context() as m:
        m.setattr(DatasetDistiller, "fit", interrupted_fit)
        with pytest.warns(UserWarning, match="interrupted at iteration 4"):
            code, _, err = run(capsys, *common, "--checkpoint", ck, "-o", tmp_path / "a.skd")
    assert code == 0, err
    assert DatasetDistiller.load(tmp_path / "a.skd").n_iter_ == 4 and ck.is_file()
    code, _, err = run(capsys, *common, "--checkpoint", ck, "-o", tmp_path / "a.skd")
    assert code == 0, err
    assert run(capsys, *common, "-o", tmp_path / "b.skd")[0] == 0
    resumed, straight = (DatasetDistiller.load(tmp_path / n) for n in ("a.skd", "b.skd"))
    assert resumed.n_iter_ == straight.n_iter_ == 6
    np.testing.assert_array_equal(resumed.distilled_X_, straight.distilled_X_)
    np.testing.assert_array_equal(resumed.learned_lr_, straight.learned_lr_)
    assert resumed.loss_curve_ == straight.loss_curve_


def test_inner_optimizer_momentum_and_shuffle_batches_options_reach_the_distiller(capsys,
                                                                                   tmp_path):
    """--inner-momentum, --inner-optimizer and --shuffle-batches set the distiller's
    parameters (saved in the file); a momentum outside [0, 1) gets the distiller's error
    naming it, before the header line; through --params all three are refused for their
    options."""
    path = tmp_path / "m.skd"
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--n-steps", 4, "--ipc", 2, "--distilled-batch-size", 10,
                       "--shuffle-batches", "--inner-momentum", 0.5)
    assert code == 0, err
    params = DatasetDistiller.load(path).get_params()
    assert params["inner_momentum"] == 0.5 and params["shuffle_batches"] is True
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path)
    assert code == 0, err
    params = DatasetDistiller.load(path).get_params()
    assert params["inner_momentum"] == 0.0 and params["shuffle_batches"] is False
    code, out, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                         "--inner-momentum", 1)
    assert code == 2 and "inner_momentum" in err and "1.0" in err, err
    assert "distilling" not in out, out  # refused before the header
    code, _, err = run(capsys, "distill", "digits", "--max-iter", 2, "-v", 0, "-o", path,
                       "--n-steps", 4, "--inner-optimizer", "adam")
    assert code == 0, err
    loaded = DatasetDistiller.load(path)
    assert loaded.get_params()["inner_optimizer"] == "adam"
    assert 1e-4 <= loaded.inner_lr_init_ <= 0.1  # "auto" on Adam's scale
    with pytest.raises(SystemExit) as exc:  # refused by the parser
        main(["distill", "digits", "-o", str(path), "--inner-optimizer", "lbfgs"])
    assert exc.value.code == 2
    assert "--inner-optimizer: invalid choice: 'lbfgs'" in capsys.readouterr().err
    for name, option in [("inner_momentum", "--inner-momentum"),
                         ("inner_optimizer", "--inner-optimizer"),
                         ("shuffle_batches", "--shuffle-batches")]:
        code, _, err = run(capsys, "distill", "digits", "-o", path,
                           "--params", json.dumps({name: 0.5}))
        assert code == 2 and f"'{name}' has an option of its own: use {option}" in err, err

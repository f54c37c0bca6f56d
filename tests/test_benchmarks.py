"""The quick benchmark runs end to end and writes its three outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script, out_dir):
    """``benchmarks/<script>.py --quick``, its outputs under ``out_dir``."""
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick", "--no-progress",
         "--out-dir", str(out_dir)],
        check=True, cwd=ROOT, timeout=600,
    )


def quick_fit_results(script, workload, out_dir):
    """Run a timed-fit script's ``--quick`` mode; its one workload's JSON results, after
    checking the table and the plot that come with them."""
    run_quick(script, out_dir)
    assert "speed-up" in (out_dir / f"{script}_quick.md").read_text()
    assert (out_dir / f"{script}_quick.png").stat().st_size > 1000
    run = json.loads((out_dir / f"{script}_quick.json").read_text())["results"][workload]
    assert all(len(v) == 1 and v[0] > 0 for v in run["seconds_per_iteration"].values())
    return run


def refusal(script, *args, env=None):
    """stderr of ``benchmarks/<script>.py --quick ARGS``, which must fail."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick", "--no-progress",
         *args],
        cwd=ROOT, timeout=300, env=env, capture_output=True, text=True,
    )
    assert done.returncode != 0
    return done.stderr


@pytest.mark.slow
def test_quick_accuracy_benchmark_writes_table_json_and_plot(tmp_path):
    run_quick("accuracy", tmp_path)
    table = (tmp_path / "accuracy_quick.md").read_text()
    assert "distilled" in table and "k-center" in table
    result = json.loads((tmp_path / "accuracy_quick.json").read_text())
    assert result["meta"]["versions"]["torch"]
    records = {r["method"]: r for r in result["results"]["digits"]["records"]}
    assert set(records) == {"distilled", "random", "means", "kmeans", "herding", "kcenter"}
    for r in records.values():
        assert len(r["learned_recipe"]) >= 5 and len(r["standard_training"]) >= 5
        assert all(0.0 <= a <= 1.0 for a in r["learned_recipe"] + r["standard_training"])
    assert (tmp_path / "accuracy_quick.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_scaling_benchmark_writes_table_json_and_plot(tmp_path):
    run_quick("scaling", tmp_path)
    result = json.loads((tmp_path / "scaling_quick.json").read_text())
    rates = result["iterations_per_second"]
    assert set(rates) == {"1", "2"} and all(r > 0 for r in rates.values())
    # two ranks with half the draws each fit the same set as one process with all of them
    # (float32 sums in another order: 1e-6 after 20 iterations here, 2e-4 after 100)
    diff = result["max_abs_diff_vs_first"]
    assert diff["1"] == 0.0 and diff["2"] < 1e-4
    assert "speed-up" in (tmp_path / "scaling_quick.md").read_text()
    assert (tmp_path / "scaling_quick.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_allocator_benchmark_times_both_settings_on_the_same_set(tmp_path):
    run = quick_fit_results("allocator", "digits_mlp", tmp_path)
    assert set(run["seconds_per_iteration"]) == {"default", "kept"}
    # the allocator changes where memory comes from, never the arithmetic
    assert run["max_abs_diff_distilled_X"] == 0.0


@pytest.mark.slow
def test_quick_threads_benchmark_times_a_fit_with_and_without_draw_threads(tmp_path):
    run = quick_fit_results("threads", "digits_lenet", tmp_path)
    assert run["draw_threads"] == {"serial": 0, "threads": 2, "one thread": 0}
    # the same fit up to float rounding, not another one
    assert run["max_abs_diff_distilled_X"] < 1e-3


def test_threads_benchmark_refuses_one_torch_thread():
    assert "--threads must be at least 2" in refusal("threads", "--threads", "1")


@pytest.mark.parametrize("script", ["threads", "allocator", "window"])
def test_timed_fit_scripts_refuse_a_single_iteration(script):
    assert "--max-iter: must be at least 2" in refusal(script, "--max-iter", "1")


def test_allocator_benchmark_refuses_an_environment_that_tunes_malloc():
    assert "MALLOC_" in refusal("allocator", env={**os.environ, "MALLOC_TOP_PAD_": "0"})


def _protocol2_on_digits():
    """benchmarks/_common.py, and three digits per class as a set with all digits as the
    training split and the last 797 as the test split: ``standard_training``'s first six
    arguments."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _common
    finally:
        sys.path.pop(0)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(10)])
    return _common, (X[rows], y[rows], X, y, X[1000:], y[1000:])


def test_standard_training_of_the_benchmarks_uses_soft_labels_when_given():
    common, split = _protocol2_on_digits()
    standard_training = common.standard_training
    y_syn = split[1]
    classes = np.arange(10)
    kw = dict(seeds=[0], max_epochs=30, lr=0.01, module="mlp", module_params=None,
              input_shape=None, device="cpu")
    hard = standard_training(*split, **kw)
    onehot = standard_training(*split, y_proba=np.eye(10)[y_syn], classes=classes, **kw)
    # soft labels that name the next class: the network learns them, not y_syn
    shifted = standard_training(*split, y_proba=np.eye(10)[(y_syn + 1) % 10],
                                classes=classes, **kw)
    assert onehot[0] == pytest.approx(hard[0], abs=1e-12)
    assert hard[0] > 0.7 and shifted[0] < 0.1


def test_standard_training_of_the_benchmarks_takes_minibatches():
    common, split = _protocol2_on_digits()
    standard_classifier, standard_training = (common.standard_classifier,
                                              common.standard_training)
    kw = dict(seeds=[0, 1], max_epochs=5, lr=0.05, optimizer="sgd", module="mlp",
              module_params=None, input_shape=None, device="cpu")
    assert standard_classifier(**{k: v for k, v in kw.items() if k != "seeds"},
                               batch_size=4).batch_size == 4
    full = standard_training(*split, **kw)
    # 8 plain SGD steps per epoch instead of 1: 40 steps learn what 5 do not
    mini = standard_training(*split, batch_size=4, **kw)
    assert mini.min() > full.max() + 0.2, (full, mini)  # measured 0.52-0.56 against 0.15-0.22


def test_accuracy_benchmark_reports_protocol_2_with_augmentation(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--datasets", "digits",
         "--ipc", "2", "--methods", "means", "--module", "convnet", "--module-params",
         '{"width": 8, "depth": 1}', "--epochs", "40", "--n-inits", "2", "--eval-augment",
         "--no-progress", "--out-dir", str(tmp_path), "--name", "acc_dsa"],
        check=True, cwd=ROOT, timeout=600,
    )
    assert "2 with DSA augmentation" in (tmp_path / "acc_dsa.md").read_text()
    (record,) = json.loads(
        (tmp_path / "acc_dsa.json").read_text())["results"]["digits"]["records"]
    plain, dsa = record["standard_training"], record["standard_training_dsa"]
    assert len(dsa) == 2 and all(0.3 < a <= 1.0 for a in plain + dsa)
    assert dsa != plain  # trained on transformed copies: not the same networks


def test_accuracy_benchmark_evaluates_a_saved_set_again_with_an_lr_schedule(tmp_path):
    common = [sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--datasets", "digits",
              "--ipc", "1", "--methods", "distilled", "--max-iter", "5", "--epochs", "20",
              "--n-inits", "2", "--no-progress", "--out-dir", str(tmp_path)]
    subprocess.run([*common, "--name", "fit", "--save-dir", str(tmp_path / "sets")],
                   check=True, cwd=ROOT, timeout=600)
    assert (tmp_path / "sets" / "fit_digits_ipc1.pt").is_file()
    subprocess.run([*common, "--name", "again", "--from-saved", str(tmp_path / "sets" / "fit"),
                    "--lr-schedule", "step"], check=True, cwd=ROOT, timeout=600)

    def record(name):
        (r,) = json.loads(
            (tmp_path / f"{name}.json").read_text())["results"]["digits"]["records"]
        return r

    fitted, loaded = record("fit"), record("again")
    assert loaded["learned_recipe"] == fitted["learned_recipe"]  # the same set and recipe
    assert loaded["learned_lr"] == fitted["learned_lr"]
    # the same networks trained with lr / 10 for the last 10 epochs: other accuracies
    assert loaded["standard_training"] != fitted["standard_training"]
    assert loaded["fit_seconds"] is None
    table = (tmp_path / "again.md").read_text()
    assert "x 0.1 after half the epochs" in table and "| loaded |" in table
    subprocess.run([*common, "--name", "minibatch", "--from-saved",
                    str(tmp_path / "sets" / "fit"), "--eval-batch-size", "4"],
                   check=True, cwd=ROOT, timeout=600)
    # ten images in minibatches of 4: three steps per epoch, other networks
    assert record("minibatch")["standard_training"] != fitted["standard_training"]
    assert "minibatches of 4 (shuffled every epoch), Adam" in (
        tmp_path / "minibatch.md").read_text()
    assert "full-batch Adam" in table


def test_accuracy_benchmark_refuses_a_missing_saved_set_before_any_work(bench_script, tmp_path,
                                                                        capsys):
    acc = bench_script("accuracy")
    stem = str(tmp_path / "nothing")
    with pytest.raises(SystemExit):
        acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "distilled",
                        "--from-saved", stem])
    assert f"no such file(s): {stem}_digits_ipc1.pt" in capsys.readouterr().err
    # the selectors alone need no saved set
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "random",
                           "--from-saved", stem])
    assert args.from_saved == stem


def test_accuracy_benchmark_starts_a_fit_from_a_saved_set(bench_script, tmp_path, capsys):
    from sklearn.datasets import load_digits

    from skdistill import DatasetDistiller

    X, y = load_digits(return_X_y=True)
    saved = DatasetDistiller(n_distilled=20, learn_labels=True, max_iter=3, n_steps=3,
                             random_state=0).fit(X, y)
    saved.save(tmp_path / "fit_digits_ipc2.pt")
    acc = bench_script("accuracy")
    base = ["--datasets", "digits", "--methods", "distilled", "--learn-labels",
            "--init-from", str(tmp_path / "fit")]
    args = acc.parse_args(base + ["--ipc", "2",
                                  "--module-params", '{"hidden_layer_sizes": [16]}'])
    est = acc.build("distilled", 2, None, args, "cpu", "digits")
    # the saved images and soft labels, for a distiller of another network
    np.testing.assert_array_equal(est.init, saved.distilled_X_)
    np.testing.assert_array_equal(est.label_init, saved.distilled_y_proba_)
    assert est.module_params == {"hidden_layer_sizes": [16]}
    started = est.set_params(max_iter=1, n_steps=3).fit(X, y)
    # one Adam step of 0.03 (in units of the pixels' std, about 6) away from the saved set
    moved = np.abs(started.distilled_X_ - saved.distilled_X_).max()
    assert moved < 0.5, moved
    fresh = acc.build("distilled", 2, None, acc.parse_args(["--datasets", "digits", "--ipc",
                      "2", "--methods", "distilled", "--seed", "1"]), "cpu", "digits")
    assert np.abs(fresh.set_params(max_iter=1, n_steps=3).fit(X, y).distilled_X_
                  - saved.distilled_X_).max() > 5  # from other random real images instead
    # without --learn-labels the labels are the distiller's own (hard)
    args = acc.parse_args([a for a in base if a != "--learn-labels"] + ["--ipc", "2"])
    assert acc.build("distilled", 2, None, args, "cpu", "digits").label_init is None
    # another number of images per class: refused with both counts
    (tmp_path / "fit_digits_ipc1.pt").write_bytes(
        (tmp_path / "fit_digits_ipc2.pt").read_bytes())
    args = acc.parse_args(base + ["--ipc", "1"])
    with pytest.raises(ValueError, match="the saved set has 20 images, this run distils 10"):
        acc.build("distilled", 1, None, args, "cpu", "digits")
    for extra, message in [
        (["--ipc", "3"], f"--init-from {tmp_path / 'fit'}: no such file(s)"),
        (["--ipc", "2", "--from-saved", str(tmp_path / "fit")], "give one of them"),
        (["--ipc", "2", "--distill-init", "kmeans"], "--init-from and --distill-init kmeans"),
        (["--ipc", "2", "--multi-formation", "2"], "cannot be combined with --multi-formation"),
    ]:
        with pytest.raises(SystemExit):
            acc.parse_args(base + extra)
        assert message in capsys.readouterr().err


def test_accuracy_benchmark_takes_the_distiller_s_default_length(bench_script):
    acc = bench_script("accuracy")
    base = ["--datasets", "digits", "--ipc", "1"]
    args = acc.parse_args(base + ["--module", "convnet"])
    assert (args.n_steps, args.max_iter) == (20, 250)
    args = acc.parse_args(base)  # the MLP
    assert (args.n_steps, args.max_iter) == (10, 500)
    args = acc.parse_args(base + ["--module", "convnet", "--quick", "--n-steps", "5"])
    assert (args.n_steps, args.max_iter) == (5, 200)


def test_accuracy_benchmark_passes_window_and_synthetic_batch_to_the_distiller(bench_script,
                                                                             capsys):
    acc = bench_script("accuracy")
    base = ["--datasets", "digits", "--ipc", "2", "--module", "convnet", "--module-params",
            '{"width": 2, "depth": 1}', "--max-iter", "2", "--n-steps", "6"]
    args = acc.parse_args(base + ["--backprop-window", "3", "--distilled-batch-size", "10"])
    est = acc.build("distilled", 2, acc.load("digits", None), args, torch.device("cpu"))
    assert (est.backprop_window, est.distilled_batch_size) == (3, 10)
    plain = acc.parse_args(base)
    assert acc.build("distilled", 2, acc.load("digits", None), plain,
                     torch.device("cpu")).backprop_window is None
    # the spelling of the recorded commands still fits the same distiller
    recorded = acc.parse_args(base + ["--distill-params", '{"backprop_window": 3}'])
    assert acc.build("distilled", 2, acc.load("digits", None), recorded,
                     torch.device("cpu")).backprop_window == 3
    with pytest.raises(SystemExit):
        acc.parse_args(base + ["--backprop-window", "4", "--distill-params",
                               '{"backprop_window": 3}'])
    assert "--backprop-window and --distill-params both give backprop_window" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        acc.parse_args(base + ["--backprop-window", "0"])


def test_accuracy_benchmark_starts_the_distiller_from_a_selector_s_images(bench_script):
    from skdistill.coreset import Herding

    acc = bench_script("accuracy")
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--module", "convnet",
                           "--module-params", '{"width": 2, "depth": 1}',
                           "--multi-formation", "2", "--distill-init", "herding",
                           "--max-iter", "1", "--n-steps", "2"])
    data = acc.load("digits", None)
    est = acc.build("distilled", 1, data, args, torch.device("cpu"))
    picked, classes = Herding(n_distilled=40, random_state=0).fit_resample(data.X_train,
                                                                          data.y_train)
    order = np.argsort(classes, kind="stable")
    np.testing.assert_array_equal(est.init, picked[order])
    assert np.all(np.diff(classes[order]) >= 0) and np.bincount(classes).tolist() == [4] * 10
    est.fit(data.X_train, data.y_train)  # accepted: 40 rows, by class, for 10 stored images
    assert est.stored_X_.shape == (10, 64)
    with pytest.raises(SystemExit):
        acc.parse_args(["--distill-init", "median"])


def test_accuracy_benchmark_records_an_interrupted_fit_in_its_table(bench_script):
    from sklearn.exceptions import ConvergenceWarning

    acc = bench_script("accuracy")
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "distilled",
                           "--max-iter", "50", "--epochs", "5", "--n-inits", "2",
                           "--no-progress", "--distill-params", '{"validation_interval": 2}'])

    class InterruptingBar:
        """Progress bar that raises Ctrl-C at the distiller's 7th iteration, as SIGINT would."""
        calls = 0

        def update(self, n):
            self.calls += 1
            if self.calls == 7:
                raise KeyboardInterrupt

    data = acc.load("digits", None)
    device = torch.device("cpu")
    with pytest.warns(ConvergenceWarning, match="interrupted at iteration 7"):
        record = acc.run_one("distilled", 1, data, args, device, InterruptingBar(), "digits")
    assert record["n_iter"] == 7 and record["best_iter"] in (0, 2, 4, 6)
    (message,) = record["fit_warnings"]
    assert f"iteration {record['best_iter']}" in message
    results = {"digits": {"info": {"n_train": len(data.y_train), "n_test": len(data.y_test),
                                   "image_shape": data.image_shape}, "records": [record]}}
    table = acc.report(results, args, bench_script("_common").stamp(device))
    assert ("Warning of the fit of distilled (DatasetDistiller), ipc 1: the fit was interrupted"
            in table)
    lr = record["learned_lr"]
    assert (f"Fit of distilled (DatasetDistiller), ipc 1: 7 iterations, kept iteration "
            f"{record['best_iter']} (validation accuracy "
            f"{record['best_validation_score']:.4g}); "
            f"step sizes started at {record['inner_lr_init']:.3g}; learned step sizes "
            f"{min(lr):.3g}-{max(lr):.3g}.") in table


def test_accuracy_benchmark_interrupts_a_fit_at_its_deadline(bench_script, monkeypatch):
    from types import SimpleNamespace

    from sklearn.exceptions import ConvergenceWarning

    acc = bench_script("accuracy")
    with pytest.raises(SystemExit):  # a deadline must be a positive number of seconds
        acc.parse_args(["--fit-deadline", "0"])
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "distilled",
                           "--max-iter", "50", "--epochs", "5", "--n-inits", "2",
                           "--fit-deadline", "4.5", "--no-progress",
                           "--distill-params", '{"validation_interval": 2}'])
    # a clock that advances one second per reading: the 5th iteration ends past 4.5 s
    ticks = iter(range(1000))
    monkeypatch.setattr(acc, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))

    class Bar:
        def update(self, n):
            pass

    data = acc.load("digits", None)
    device = torch.device("cpu")
    with pytest.warns(ConvergenceWarning, match="interrupted at iteration 5"):
        record = acc.run_one("distilled", 1, data, args, device, Bar(), "digits")
    assert record["n_iter"] == 5 and record["best_iter"] in (0, 2, 4)
    assert len(record["learned_recipe"]) == 2 and len(record["standard_training"]) == 2


def test_accuracy_benchmark_deadline_spares_a_fit_that_just_finished(bench_script,
                                                                      monkeypatch):
    # the deadline passes during the last planned iteration: the fit is complete, so the
    # callback lets it end as such instead of calling it interrupted
    import warnings
    from types import SimpleNamespace

    acc = bench_script("accuracy")
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "distilled",
                           "--max-iter", "5", "--epochs", "5", "--n-inits", "2",
                           "--fit-deadline", "4.5", "--no-progress",
                           "--distill-params", '{"validation_interval": 2}'])
    ticks = iter(range(1000))  # one second per reading: past 4.5 s at the 5th iteration
    monkeypatch.setattr(acc, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))

    class Bar:
        def update(self, n):
            pass

    data = acc.load("digits", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = acc.run_one("distilled", 1, data, args, torch.device("cpu"), Bar(), "digits")
    assert not [w for w in caught if "interrupted" in str(w.message)]
    assert record["n_iter"] == 5 and record["best_iter"] in (0, 2, 4, 5)
    assert not any("interrupted" in w for w in record.get("fit_warnings", []))


def test_accuracy_benchmark_can_keep_the_state_that_protocol_2_prefers(bench_script):
    acc = bench_script("accuracy")
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--methods", "distilled",
                           "--max-iter", "4", "--epochs", "7", "--n-inits", "2",
                           "--optimizer", "sgd", "--optimizer-params", '{"momentum": 0.9}',
                           "--validate-protocol2", "3", "--seed", "5", "--no-progress",
                           "--distill-params", '{"validation_interval": 2}'])
    with pytest.raises(SystemExit):  # no runs is refused by the parser
        acc.parse_args(["--validate-protocol2", "0"])
    data = acc.load("digits", None)
    device = torch.device("cpu")
    est = acc.build("distilled", 1, data, args, device)
    scorer = est.validation_scoring
    assert (scorer.n_runs, scorer.random_state) == (3, 5)
    # the scorer trains exactly protocol 2's network
    clf = scorer.classifier
    assert (clf.training, clf.max_epochs, clf.optimizer, clf.optimizer_params) == (
        "standard", 7, "sgd", {"momentum": 0.9})

    class Bar:
        def update(self, n):
            pass

    record = acc.run_one("distilled", 1, data, args, device, Bar(), "digits")
    # validation at 0, 2, 4: the kept score is a mean over 3 runs on the held-out split
    assert record["best_iter"] in (0, 2, 4)
    assert 0.0 < record["best_validation_score"] <= 1.0
    args.name = "p2sel"
    results = {"digits": {"info": {"n_train": len(data.y_train), "n_test": len(data.y_test),
                                   "image_shape": data.image_shape}, "records": [record]}}
    assert "the kept state chosen by protocol 2 (3 run(s))" in acc.report(
        results, args, bench_script("_common").stamp(device))


def test_trajectory_scores_every_validation_point_by_both_protocols(bench_script, tmp_path):
    traj = bench_script("trajectory")
    with pytest.raises(SystemExit, match="one --datasets and one --ipc"):
        traj.parse_args(["--datasets", "digits", "--ipc", "1", "10"])
    with pytest.raises(SystemExit, match="got --datasets digits fashion_mnist"):
        traj.parse_args([])  # accuracy.py's defaults: two datasets, three sizes
    common = ["--quick", "--max-iter", "6", "--epochs", "4", "--no-progress",
              "--distill-params", '{"validation_interval": 3}', "--out-dir", str(tmp_path)]
    for extra, name in (([], "by_recipe"), (["--validate-protocol2", "2"], "by_p2")):
        traj.main(common + extra + ["--name", name])
        result = json.loads((tmp_path / f"{name}.json").read_text())["result"]
        assert result["iterations"] == [0, 3, 6]
        recipe, standard = result["learned_recipe"], result["standard_training"]
        assert all(0 < a <= 1 for a in recipe + standard)
        kept = result["iterations"].index(result["best_iter"])
        chosen = standard if extra else recipe
        assert chosen[kept] == max(chosen)
        assert result["protocol2_runs"] == (2 if extra else 1)
        table = (tmp_path / f"{name}.md").read_text()
        assert "| kept |" in table or "| kept" in table
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_accuracy_benchmark_whitens_both_splits_with_a_whitening_fitted_on_train(bench_script):
    from skdistill.preprocessing import ZCAWhitening

    acc = bench_script("accuracy")
    with pytest.raises(SystemExit):  # a regularisation must be positive
        acc.parse_args(["--zca", "0"])
    args = acc.parse_args(["--datasets", "digits", "--ipc", "1", "--zca", "0.1"])
    data = acc.load("digits", None)
    white = acc.whiten(data, args.zca)
    zca = ZCAWhitening(regularization=0.1).fit(data.X_train)
    np.testing.assert_allclose(white.X_test, zca.transform(data.X_test), rtol=1e-6)
    np.testing.assert_allclose(white.X_train.mean(axis=0), 0, atol=1e-5)
    assert white.y_train is data.y_train and white.image_shape == data.image_shape
    # the loaded data are left as they were
    np.testing.assert_array_equal(data.X_test, acc.load("digits", None).X_test)
    results = {"digits": {"info": {"n_train": 1, "n_test": 1, "image_shape": (1, 8, 8)},
                          "records": []}}
    table = acc.report(results, args, bench_script("_common").stamp(torch.device("cpu")))
    assert "ZCAWhitening(regularization=0.1)" in table


def test_quick_window_benchmark_times_a_fit_with_and_without_truncation(tmp_path):
    run = quick_fit_results("window", "digits_lenet", tmp_path)
    assert list(run["seconds_per_iteration"]) == ["full 10", "window 10 of 20", "full 20"]
    assert run["window_over_full_short"] > 0 and run["full_long_over_window"] > 0

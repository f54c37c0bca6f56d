"""θ0 draws in parallel CPU threads (skdistill._threads): the same numbers as the serial
loop."""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skdistill import DatasetDistiller, _threads, _unroll
from skdistill.nets import ConvNet, param_dict, reset_parameters

SHAPE = (1, 8, 8)


def _problem(n_draws=3, dtype=torch.float64, n_steps=3, seed=0):
    torch.manual_seed(seed)
    net = ConvNet(SHAPE, 3, width=4, depth=2).to(dtype)
    draws = [param_dict(reset_parameters(net)) for _ in range(n_draws)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    x_syn = torch.randn(6, 64, dtype=dtype, requires_grad=True)
    label_logits = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    log_lr = torch.full((n_steps,), -2.0, dtype=dtype, requires_grad=True)
    leaves = [x_syn, label_logits, log_lr]
    x_real = torch.randn(16, 64, dtype=dtype)
    y_real = torch.randint(0, 3, (16,))
    return net, params0, leaves, x_real, y_real


def _synthetic(leaves):
    x, logits, log_lr = leaves
    return x, torch.softmax(logits, 1), log_lr.exp()


@pytest.mark.parametrize("segment, momentum, optimizer",
                         [(None, 0.0, "sgd"), ((2,), 0.0, "sgd"), ((2,), 0.9, "sgd"),
                          ((2,), 0.0, "adam")])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_threaded_meta_gradient_equals_the_serial_loop(segment, momentum, optimizer,
                                                       n_threads):
    net, params0, leaves, x_real, y_real = _problem(n_draws=3)
    forward = _unroll.make_forward(net, SHAPE, momentum=momentum, optimizer=optimizer)
    batches = [slice(None)]
    ref_loss, ref_grads = _unroll.meta_value_and_grad(
        forward, params0, _synthetic, leaves, batches, x_real, y_real, False, segment)
    if momentum or optimizer == "adam":  # the pool's forwards step with them too
        plain = _unroll.meta_value_and_grad(_unroll.make_forward(net, SHAPE), params0,
                                            _synthetic, leaves, batches, x_real, y_real,
                                            False, segment)
        assert abs(plain[0] - ref_loss) > 1e-6
    with _threads.DrawThreads(net, SHAPE, n_threads, momentum, optimizer) as pool:
        loss, grads = pool.meta_value_and_grad(params0, _synthetic, leaves, batches, x_real,
                                               y_real, segment)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for g, r in zip(grads, ref_grads):
        assert r.abs().max() > 0
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


def test_threaded_unroll_equals_the_serial_one():
    net, params0, leaves, _, _ = _problem(n_draws=4)
    forward = _unroll.make_forward(net, SHAPE)
    with torch.no_grad(), _threads.DrawThreads(net, SHAPE, 3) as pool:
        x, y, lrs = _synthetic(leaves)  # x is a leaf that requires a gradient
        final = pool.unroll_stacked(params0, x, y, lrs, [slice(None)])
        ref = _unroll.unroll_stacked(forward, params0, x, y, lrs, [slice(None)], False)
    for k in ref:
        assert final[k].shape == ref[k].shape and final[k].shape[0] == 4
        torch.testing.assert_close(final[k], ref[k], rtol=0, atol=0)
        assert final[k].grad_fn is None  # the caller's no_grad held in the threads


def test_the_callers_autocast_holds_in_the_threads():
    net, params0, leaves, x_real, y_real = _problem(n_draws=2, dtype=torch.float32)
    forward = _unroll.make_forward(net, SHAPE)
    args = (_synthetic, leaves, [slice(None)], x_real, y_real)
    _, fp32 = _unroll.meta_value_and_grad(forward, params0, *args, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf16 = _unroll.meta_value_and_grad(forward, params0, *args, False)
        with _threads.DrawThreads(net, SHAPE, 2) as pool:
            _, threaded = pool.meta_value_and_grad(params0, *args)
    gap = (bf16[0] - fp32[0]).norm() / fp32[0].norm()
    assert gap > 1e-3  # bf16 rounding is visible...
    # ... and the threads computed in bf16 too: far closer to the serial bf16 result
    assert (threaded[0] - bf16[0]).norm() / bf16[0].norm() < gap / 100


def test_an_error_in_a_thread_reaches_the_caller_and_the_pool_still_closes():
    net, params0, *_ = _problem(n_draws=2)

    def fail(forward, share):
        raise ValueError("boom in a draw thread")

    pool = _threads.DrawThreads(net, SHAPE, 2)
    with pytest.raises(ValueError, match="boom in a draw thread"):
        pool.map_draws(fail, params0)
    pool.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("skdistill-draws")]


def _threads_in_a_new_thread():
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


def test_close_restores_torch_thread_count_for_the_caller_and_new_threads():
    net, params0, *_ = _problem(n_draws=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = _threads.DrawThreads(net, SHAPE, 2)
        assert pool.intra_op_threads == 1
        counts = pool.map_draws(lambda forward, share: torch.get_num_threads(), params0)
        assert [c for _, c in counts] == [1, 1]  # each thread ran one intra-op thread
        pool.close()
        assert torch.get_num_threads() == 2
        assert _threads_in_a_new_thread() == 2
    finally:
        torch.set_num_threads(before)


def test_n_draw_threads_only_for_small_looped_steps_on_cpu_with_threads_to_share(monkeypatch):
    before = torch.get_num_threads()
    limit = _threads.MAX_STEP_GFLOP * 1e9
    try:
        torch.set_num_threads(3)
        assert _threads.n_draw_threads(4, "cpu", False) == 3
        assert _threads.n_draw_threads(4, "cpu", False, lambda: limit) == 3
        assert _threads.n_draw_threads(4, "cpu", False, lambda: limit * 1.01) == 0
        assert _threads.n_draw_threads(2, torch.device("cpu"), False) == 2
        assert _threads.n_draw_threads(1, "cpu", False) == 0
        assert _threads.n_draw_threads(4, "cpu", True) == 0  # vmap
        assert _threads.n_draw_threads(4, "cpu", "batched") == 0  # the MLP path
        assert _threads.n_draw_threads(4, "cuda", False) == 0
        dropout = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Dropout(0.5))
        assert _threads.n_draw_threads(4, "cpu", False, net=dropout) == 0  # random masks
        assert _threads.n_draw_threads(4, "cpu", False, net=dropout.eval()) == 3
        monkeypatch.setattr(_threads, "ENABLED", False)
        assert _threads.n_draw_threads(4, "cpu", False) == 0
        monkeypatch.setattr(_threads, "ENABLED", True)
        # fits in worker threads (joblib's threading backend) already share the cores
        with ThreadPoolExecutor(1) as worker:
            assert worker.submit(_threads.n_draw_threads, 4, "cpu", False).result() == 0
        torch.set_num_threads(1)
        assert _threads.n_draw_threads(4, "cpu", False) == 0
    finally:
        torch.set_num_threads(before)


def test_forward_flops_counts_a_convolution_and_is_inf_where_counting_fails():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    params = dict(conv.named_parameters())
    forward = _unroll.make_forward(conv, (2, 5, 5))
    # 2 multiply-adds per weight and output pixel: 2 * (2 * 3 * 9) * 25 pixels * 4 samples
    assert _threads.forward_flops(forward, params, torch.randn(4, 50)) == 2 * 54 * 25 * 4

    def broken(params, x):
        raise RuntimeError("no such operator")

    assert _threads.forward_flops(broken, params, torch.randn(4, 50)) == float("inf")


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _convnet_distiller(**kw):
    return DatasetDistiller(n_distilled=10, module="convnet", input_shape=SHAPE,
                            module_params={"width": 4, "depth": 2}, n_inits=3, n_steps=4,
                            inner_lr_init=0.05, max_iter=6, validation_interval=3,
                            random_state=0, **kw)


def test_fit_runs_its_draws_in_threads_and_repeats_bit_for_bit(digits_split, two_torch_threads,
                                                               monkeypatch):
    X, _, y, _ = digits_split
    made = []

    class Spy(_threads.DrawThreads):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(_threads, "DrawThreads", Spy)
    first = _convnet_distiller().fit(X, y)
    second = _convnet_distiller().fit(X, y)
    assert [p.n_threads for p in made] == [2, 2]
    np.testing.assert_array_equal(first.distilled_X_, second.distilled_X_)
    np.testing.assert_array_equal(first.validation_scores_, second.validation_scores_)
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("skdistill-draws")]

    monkeypatch.setattr(_threads, "MAX_STEP_GFLOP", 1e-6)  # the inner step is ~1e-4 GFLOP
    serial = _convnet_distiller().fit(X, y)
    assert len(made) == 2  # no pool for a step above the limit
    # the same fit up to float rounding (the draws' gradients are summed in another order)
    np.testing.assert_allclose(first.distilled_X_, serial.distilled_X_, atol=1e-4)
    np.testing.assert_allclose(first.learned_lr_, serial.learned_lr_, rtol=1e-4)


def test_an_interrupted_threaded_fit_keeps_its_state_and_closes_the_pool(digits_split,
                                                                          two_torch_threads):
    X, _, y, _ = digits_split

    def interrupt(est, it):
        if it == 2:
            raise KeyboardInterrupt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = _convnet_distiller(callback=interrupt).fit(X, y)
    assert any(issubclass(w.category, ConvergenceWarning) and "interrupted" in str(w.message)
               for w in caught)
    assert est.n_iter_ == 2 and est.distilled_X_.shape == (10, 64)
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("skdistill-draws")]

"""``inner_horizon``: θ0 draws that carry on training across iterations."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skdistill import DatasetDistiller, _unroll

FAST = dict(max_iter=20, module_params={"hidden_layer_sizes": (16,)}, n_inits=4, n_steps=3,
            random_state=0, validation_interval=5)


class _Spy:
    """Wraps ``_unroll.meta_value_and_grad``: records each iteration's θ0 and synthetic set."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = _unroll.meta_value_and_grad

        def spy(forward, params0, make_synthetic, leaves, batches, *args, **kwargs):
            x, y, lrs = (t.detach().clone() for t in make_synthetic(leaves))
            self.calls.append({
                "params0": {k: v.detach().clone() for k, v in params0.items()},
                "syn": (x, y, lrs), "forward": forward, "batches": batches,
            })
            return real(forward, params0, make_synthetic, leaves, batches, *args, **kwargs)

        monkeypatch.setattr(_unroll, "meta_value_and_grad", spy)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_draws_carry_on_from_the_end_of_their_last_unroll(tiny_data, monkeypatch):
    spy = _Spy(monkeypatch)
    # restart probability n_steps / inner_horizon = 3 / 6 = 0.5 per draw and iteration
    DatasetDistiller(**FAST, inner_horizon=6).fit(*tiny_data)
    calls = spy.calls
    assert len(calls) == FAST["max_iter"]
    carried = restarted = 0
    for before, after in zip(calls, calls[1:]):
        end = _unroll.unroll_stacked(before["forward"], before["params0"], *before["syn"],
                                     before["batches"], "batched")
        for d in range(FAST["n_inits"]):
            start = {k: v[d] for k, v in after["params0"].items()}
            if _same(start, {k: v[d] for k, v in end.items()}):
                carried += 1
            else:
                restarted += 1
                # a restart is a fresh θ0, not any state of the previous iteration
                assert not _same(start, {k: v[d] for k, v in before["params0"].items()})
    n = (FAST["max_iter"] - 1) * FAST["n_inits"]
    assert carried + restarted == n
    # 76 draws of Bernoulli(0.5): both outcomes, each near half (fails with p < 1e-4)
    assert 0.25 * n < carried < 0.75 * n


def test_without_a_horizon_every_iteration_starts_from_fresh_draws(tiny_data, monkeypatch):
    spy = _Spy(monkeypatch)
    DatasetDistiller(**FAST).fit(*tiny_data)
    for before, after in zip(spy.calls, spy.calls[1:]):
        end = _unroll.unroll_stacked(before["forward"], before["params0"], *before["syn"],
                                     before["batches"], "batched")
        for d in range(FAST["n_inits"]):
            assert not _same({k: v[d] for k, v in after["params0"].items()},
                             {k: v[d] for k, v in end.items()})


def test_a_horizon_at_least_n_steps_long_changes_the_fit_and_reproduces(tiny_data):
    X, y = tiny_data
    plain = DatasetDistiller(**FAST).fit(X, y)
    a = DatasetDistiller(**FAST, inner_horizon=30).fit(X, y)
    b = DatasetDistiller(**FAST, inner_horizon=30).fit(X, y)
    np.testing.assert_array_equal(a.distilled_X_, b.distilled_X_)
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.distilled_X_, plain.distilled_X_)
    # the first iteration starts from the same fresh draws either way
    assert a.loss_curve_[0] == plain.loss_curve_[0]
    assert a.loss_curve_[1] != plain.loss_curve_[1]


def test_inner_horizon_equal_to_n_steps_restarts_every_draw(tiny_data, monkeypatch):
    # restart probability n_steps / inner_horizon = 1: fresh θ0 at every iteration
    spy = _Spy(monkeypatch)
    DatasetDistiller(**FAST, inner_horizon=FAST["n_steps"]).fit(*tiny_data)
    for before, after in zip(spy.calls, spy.calls[1:]):
        end = _unroll.unroll_stacked(before["forward"], before["params0"], *before["syn"],
                                     before["batches"], "batched")
        for d in range(FAST["n_inits"]):
            assert not _same({k: v[d] for k, v in after["params0"].items()},
                             {k: v[d] for k, v in end.items()})


@pytest.mark.parametrize("value, message", [
    (2, r"inner_horizon=2 is shorter than one unroll \(n_steps=3\)"),
])
def test_a_horizon_shorter_than_the_unroll_is_refused_before_any_work(tiny_data, value,
                                                                      message):
    d = DatasetDistiller(**FAST, inner_horizon=value,
                         callback=lambda est, it: pytest.fail("ran"))
    with pytest.raises(ValueError, match=message):
        d.fit(*tiny_data)
    assert not hasattr(d, "distilled_X_")


@pytest.mark.parametrize("value", [0, -5, 2.5, "long"])
def test_invalid_inner_horizon_names_the_parameter(tiny_data, value):
    d = DatasetDistiller(**FAST, inner_horizon=value)
    with pytest.raises(ValueError, match="'inner_horizon' parameter of DatasetDistiller"):
        d.fit(*tiny_data)
    assert not hasattr(d, "distilled_X_")


def test_resumed_run_with_carried_draws_equals_the_uninterrupted_run(tiny_data, tmp_path):
    X, y = tiny_data
    cfg = dict(FAST, max_iter=30, inner_horizon=9, checkpoint_interval=10)
    whole = DatasetDistiller(**cfg, checkpoint=tmp_path / "a.ckpt").fit(X, y)

    def interrupt(distiller, n_iter):
        if n_iter == 14:
            raise KeyboardInterrupt

    path = tmp_path / "b.ckpt"
    with pytest.warns(ConvergenceWarning, match="interrupted at iteration 14"):
        DatasetDistiller(**cfg, checkpoint=path, callback=interrupt).fit(X, y)
    resumed = DatasetDistiller(**cfg, checkpoint=path, warm_start=True).fit(X, y)
    np.testing.assert_array_equal(resumed.distilled_X_, whole.distilled_X_)
    assert resumed.loss_curve_ == whole.loss_curve_

    # a checkpoint of a fit without carried draws is another fit
    with pytest.raises(ValueError, match="inner_horizon: checkpoint 9, now None"):
        DatasetDistiller(**dict(cfg, inner_horizon=None), checkpoint=path,
                         warm_start=True).fit(X, y)


# (hand-written MLP forward and inner gradient?, how the draws run)
PATHS = [(False, True), (False, False), (True, True), (True, False), (True, "batched")]


@pytest.mark.parametrize("analytic, vectorize", PATHS)
@pytest.mark.parametrize("segment", [None, 2])
def test_return_final_gives_the_unrolled_parameters_and_the_same_gradient(analytic, vectorize,
                                                                          segment):
    from skdistill.nets import MLP, param_dict, reset_parameters

    torch.manual_seed(0)
    net = MLP(4, 3, hidden_layer_sizes=(5,)).double()
    draws = [param_dict(reset_parameters(net)) for _ in range(2)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    forward = _unroll.make_forward(net, analytic=analytic)
    x_syn = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    log_lr = torch.log(torch.tensor([0.3, 0.2, 0.1, 0.2], dtype=torch.float64)).requires_grad_()
    y_syn = torch.eye(3, dtype=torch.float64)
    x_real, y_real = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    batches = [slice(None)]

    def make(leaves):
        return leaves[0], y_syn, leaves[1].exp()

    args = (forward, params0, make, [x_syn, log_lr], batches, x_real, y_real, vectorize,
            segment)
    loss, grads = _unroll.meta_value_and_grad(*args)
    loss_f, grads_f, final = _unroll.meta_value_and_grad(*args, return_final=True)
    torch.testing.assert_close(loss_f, loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_f, grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    expected = _unroll.unroll_stacked(forward, params0, x_syn.detach(), y_syn,
                                      log_lr.detach().exp(), batches, vectorize)
    assert set(final) == set(expected)
    for k in final:
        assert not final[k].requires_grad
        torch.testing.assert_close(final[k], expected[k], rtol=1e-12, atol=1e-12)
        assert not torch.equal(final[k], params0[k])

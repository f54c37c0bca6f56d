"""The meta-gradient of the functional core, checked against finite differences in float64."""

import pytest
import torch

from skdistill import _unroll
from skdistill.nets import MLP, ConvNet, param_dict, reset_parameters


def _problem(n_draws=2, seed=0, analytic=False, hidden=(5,), momentum=0.0, optimizer="sgd"):
    torch.manual_seed(seed)
    net = MLP(4, 3, hidden_layer_sizes=hidden).double()
    draws = [param_dict(reset_parameters(net)) for _ in range(n_draws)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    forward = _unroll.make_forward(net, analytic=analytic, momentum=momentum,
                                   optimizer=optimizer)
    x_syn = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    label_logits = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    log_lr = torch.log(torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)).requires_grad_()
    x_real = torch.randn(8, 4, dtype=torch.float64)
    y_real = torch.randint(0, 3, (8,))
    return forward, params0, x_syn, label_logits, log_lr, x_real, y_real


# (hand-written MLP forward and inner gradient?, how the draws run)
PATHS = [(False, True), (False, False), (True, True), (True, False), (True, "batched")]


@pytest.mark.parametrize("analytic, vectorize", PATHS)
@pytest.mark.parametrize("batches", [[slice(None)], [torch.tensor([0, 2]), torch.tensor([1])]])
def test_meta_gradient_matches_finite_differences(analytic, vectorize, batches):
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(analytic=analytic)

    def loss(x, logits, log_lr):
        return _unroll.meta_loss(forward, params0, x, torch.softmax(logits, 1), log_lr.exp(),
                                 batches, x_real, y_real, vectorize=vectorize)

    assert torch.autograd.gradcheck(loss, (x_syn, label_logits, log_lr), eps=1e-6, atol=1e-6)


def test_vmap_and_loop_give_the_same_loss_and_gradient():
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(n_draws=3)
    results = []
    for vectorize in (True, False):
        loss = _unroll.meta_loss(forward, params0, x_syn, torch.softmax(label_logits, 1),
                                 log_lr.exp(), [slice(None)], x_real, y_real, vectorize)
        results.append((loss, *torch.autograd.grad(loss, (x_syn, log_lr))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_autograd_inner_step_equals_the_torch_func_one_with_and_without_a_graph():
    forward, params0, x_syn, label_logits, _, _, _ = _problem(n_draws=1)
    p0 = _unroll.index_draw(params0, 0)
    y = torch.softmax(label_logits, 1)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    func = _unroll.inner_step(forward, p0, x_syn, y, lr, autograd=False)
    auto = _unroll.inner_step(forward, p0, x_syn, y, lr, autograd=True)
    torch.testing.assert_close(auto, func)
    # the step stays differentiable in the samples and the step size, to second order
    for out in (func, auto):
        assert all(v.requires_grad for v in out.values())
    g_func = torch.autograd.grad(sum(v.square().sum() for v in func.values()), (x_syn, lr))
    g_auto = torch.autograd.grad(sum(v.square().sum() for v in auto.values()), (x_syn, lr))
    torch.testing.assert_close(g_auto, g_func)
    with torch.no_grad():  # no graph kept (the forward pass of checkpointing)
        plain = _unroll.inner_step(forward, p0, x_syn, y, lr, autograd=True)
    assert not any(v.requires_grad for v in plain.values())
    torch.testing.assert_close(plain, {k: v.detach() for k, v in func.items()})


def test_both_inner_steps_give_zeros_to_a_parameter_the_network_does_not_use():
    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.used(x)

    net = Unused().double()
    forward = _unroll.make_forward(net, analytic=False)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.softmax(torch.randn(5, 3, dtype=torch.float64), 1)
    lr = torch.tensor(0.1, dtype=torch.float64)
    for autograd in (False, True):
        new = _unroll.inner_step(forward, params, x, y, lr, autograd=autograd)
        torch.testing.assert_close(new["spare.weight"], params["spare.weight"])
        assert not torch.equal(new["used.weight"], params["used.weight"])


def test_unroll_is_plain_gradient_descent():
    """One unrolled step equals θ - η ∇θ ℓ computed with ordinary autograd."""
    forward, params0, x_syn, label_logits, _, _, _ = _problem(n_draws=1)
    p0 = _unroll.index_draw(params0, 0)
    targets = torch.softmax(label_logits, 1).detach()
    lr = torch.tensor([0.5], dtype=torch.float64)
    p1 = _unroll.unroll(forward, p0, x_syn.detach(), targets, lr, [slice(None)])

    leaves = {k: v.clone().requires_grad_() for k, v in p0.items()}
    loss = torch.nn.functional.cross_entropy(forward(leaves, x_syn.detach()), targets)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    for (k, v), g in zip(p0.items(), grads):
        torch.testing.assert_close(p1[k], v - 0.5 * g)


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("segment", [1, 2, 3, 5, (4, 2), (3, 2, 1),
                                     _unroll.checkpoint_schedule(7, 3)])
def test_checkpointed_gradient_equals_the_all_in_memory_one(vectorize, segment):
    forward, params0, x_syn, label_logits, _, x_real, y_real = _problem(n_draws=2)
    log_lr = torch.log(torch.linspace(0.05, 0.3, 7, dtype=torch.float64)).requires_grad_()
    batches = [torch.tensor([0, 2]), torch.tensor([1])]
    leaves = [x_syn, label_logits, log_lr]

    def make(leaves):
        x, logits, log_lr = leaves
        return x, torch.softmax(logits, 1), log_lr.exp()

    full = _unroll.meta_value_and_grad(forward, params0, make, leaves, batches, x_real, y_real,
                                       vectorize=vectorize, segment=None)
    ckpt = _unroll.meta_value_and_grad(forward, params0, make, leaves, batches, x_real, y_real,
                                       vectorize=vectorize, segment=segment)
    torch.testing.assert_close(ckpt[0], full[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(ckpt[1], full[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in full[1])


def _window_problem(analytic, n_steps=7, momentum=0.0, optimizer="sgd"):
    forward, params0, x_syn, label_logits, _, x_real, y_real = _problem(
        n_draws=2, analytic=analytic, momentum=momentum, optimizer=optimizer)
    log_lr = torch.log(torch.linspace(0.05, 0.3, n_steps, dtype=torch.float64))
    return forward, params0, [x_syn, label_logits, log_lr.requires_grad_()], x_real, y_real


def _make(leaves):
    x, logits, log_lr = leaves
    return x, torch.softmax(logits, 1), log_lr.exp()


def _check_window_gradient(forward, params0, theta, leaves, batches, x_real, y_real, window,
                           vectorize, segment):
    """``meta_value_and_grad`` over ``window`` against the all-in-memory gradient of the loss
    from ``theta`` (the state at the window's start), itself checked by finite differences;
    returns the gradients."""
    start, stop = window

    def loss(*leaves):
        return _unroll.meta_loss(forward, theta, *_make(leaves), batches, x_real, y_real,
                                 vectorize=True, start=start, stop=stop)

    assert torch.autograd.gradcheck(loss, tuple(leaves), eps=1e-6, atol=1e-6)
    want = torch.autograd.grad(loss(*leaves), leaves)
    got_loss, got = _unroll.meta_value_and_grad(forward, params0, _make, leaves, batches,
                                                x_real, y_real, vectorize=vectorize,
                                                segment=segment, window=window)
    torch.testing.assert_close(got_loss, loss(*leaves).detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    return got


@pytest.mark.parametrize("analytic, vectorize", PATHS)
@pytest.mark.parametrize("segment", [None, 2, (3, 2)])
@pytest.mark.parametrize("window", [(0, 7), (2, 7), (3, 5), (6, 7)])
def test_truncated_meta_gradient_holds_the_steps_before_the_window_fixed(analytic, vectorize,
                                                                          segment, window):
    """Truncated backpropagation: the gradient of the real-data loss after step ``stop``
    with θ at ``start`` a constant, checked against finite differences in float64."""
    forward, params0, leaves, x_real, y_real = _window_problem(analytic)
    batches = [torch.tensor([0, 2]), torch.tensor([1])]
    start, stop = window
    with torch.no_grad():  # θ at the window's start, from the leaves as they are
        theta = _unroll.unroll_stacked(forward, params0, *_make(leaves)[:2],
                                       _make(leaves)[2][:start], batches, vectorize=True)

    got = _check_window_gradient(forward, params0, theta, leaves, batches, x_real, y_real,
                                 window, vectorize, segment)
    outside = torch.ones(7, dtype=torch.bool)
    outside[start:stop] = False
    assert torch.all(got[2][outside] == 0)
    assert torch.all(got[2][~outside] != 0) and got[0].abs().sum() > 0


@pytest.mark.parametrize("window", [(3, 3), (-1, 4), (2, 8)])
def test_a_window_outside_the_unroll_is_rejected(window):
    forward, params0, leaves, x_real, y_real = _window_problem(analytic=False)
    with pytest.raises(ValueError, match="window must satisfy 0 <= start < stop <= n_steps=7"):
        _unroll.meta_value_and_grad(forward, params0, _make, leaves, [slice(None)], x_real,
                                    y_real, window=window)


def test_checkpoint_schedule():
    # two levels (⌈√T⌉-step segments) up to 64 steps, then three
    assert [_unroll.checkpoint_schedule(t) for t in (1, 10, 64)] == [(1,), (4,), (8,)]
    assert _unroll.checkpoint_schedule(65) == (25, 5)
    assert _unroll.checkpoint_schedule(200) == (36, 6)  # 6 + 6 + 6 stored sets, not 15 + 15
    assert _unroll.checkpoint_schedule(200, levels=2) == (15,)
    assert _unroll.checkpoint_schedule(1000, levels=4) == (216, 36, 6)
    with pytest.raises(ValueError, match="levels"):
        _unroll.checkpoint_schedule(10, levels=1)


@pytest.mark.parametrize("segment", [0, (2, 3)])
def test_bad_checkpoint_segments_are_rejected(segment):
    forward, params0, x_syn, label_logits, _, x_real, y_real = _problem(n_draws=2)
    log_lr = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="decreasing"):
        _unroll.meta_value_and_grad(
            forward, params0, lambda lv: (lv[0], torch.softmax(lv[1], 1), lv[2].exp()),
            [x_syn, label_logits, log_lr], [slice(None)], x_real, y_real, segment=segment)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("vectorize", [True, "batched"])
def test_bfloat16_autocast_meta_gradient_stays_close_to_float32(vectorize, momentum):
    """bf16 autocast: the meta-gradient points the same way (cosine > 0.98) as in float32,
    with plain and with heavy-ball inner steps."""
    torch.manual_seed(0)
    net = MLP(64, 10, hidden_layer_sizes=(128,))
    draws = [param_dict(reset_parameters(net)) for _ in range(2)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    forward = _unroll.make_forward(net, momentum=momentum)
    x_syn = torch.randn(10, 64, requires_grad=True)
    log_lr = torch.full((5,), -1.6, requires_grad=True)
    x_real, y_real = torch.randn(128, 64), torch.randint(0, 10, (128,))

    def make(leaves):
        return leaves[0], torch.eye(10), leaves[1].exp()

    grads = {}
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            _, grads[enabled] = _unroll.meta_value_and_grad(
                forward, params0, make, [x_syn, log_lr], [slice(None)], x_real, y_real,
                vectorize)
    for a, b in zip(grads[False], grads[True]):
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) > 0.98


@pytest.mark.parametrize("hidden", [(5,), (), (6, 4)])
@pytest.mark.parametrize("stacked", [True, False])
def test_hand_written_inner_gradient_equals_autograd(hidden, stacked):
    forward, params0, x_syn, label_logits, _, _, _ = _problem(n_draws=3, hidden=hidden)
    dense = _unroll.make_forward(MLP(4, 3, hidden_layer_sizes=hidden))
    assert isinstance(dense, _unroll.DenseReLUForward)
    # rows need not sum to 1
    x, y = x_syn.detach(), torch.softmax(label_logits, 1).detach() * 1.5
    if stacked:
        got = dense.grad(params0, x, y)
        want = torch.func.vmap(lambda p: _unroll._inner_grad(p, forward, x, y))(params0)
    else:
        p = _unroll.index_draw(params0, 1)
        got, want = dense.grad(p, x, y), _unroll._inner_grad(p, forward, x, y)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hidden", [(5,), (), (6, 4)])
@pytest.mark.parametrize("segment", [None, 2, 3, (3, 2)])
@pytest.mark.parametrize("batches", [[slice(None)], [torch.tensor([0, 2]), torch.tensor([1])]])
@pytest.mark.parametrize("soft_real", [False, True])
def test_hand_written_reverse_pass_equals_autograd(hidden, segment, batches, soft_real):
    """The "batched" meta-gradient (hand-written adjoint) equals autograd's in float64."""
    generic, params0, x_syn, label_logits, _, x_real, y_real = _problem(
        n_draws=3, hidden=hidden)
    dense = _unroll.make_forward(MLP(4, 3, hidden_layer_sizes=hidden))
    log_lr = torch.log(torch.linspace(0.05, 0.4, 7, dtype=torch.float64)).requires_grad_()
    if soft_real:
        y_real = torch.softmax(torch.randn(x_real.shape[0], 3, dtype=torch.float64), 1)
    leaves = [x_syn, label_logits, log_lr]

    def soft(leaves):  # every learned tensor, through a transform of each
        return 2 * leaves[0] + 1, torch.softmax(leaves[1], 1), leaves[2].exp()

    def hard(leaves):  # fixed one-hot labels: no gradient is asked for y
        return leaves[0], torch.eye(3, dtype=torch.float64)[[0, 1, 2]], leaves[2].exp()

    for make in (soft, hard):
        want = _unroll.meta_value_and_grad(generic, params0, make, leaves, batches, x_real,
                                           y_real, vectorize=True)
        got = _unroll.meta_value_and_grad(dense, params0, make, leaves, batches, x_real, y_real,
                                          vectorize="batched", segment=segment)
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert got[1][0].abs().sum() > 0 and got[1][2].abs().sum() > 0
    assert want[1][1].abs().sum() == 0  # hard labels: zero gradient for the label logits


def test_choose_vectorize():
    mlp = MLP(4, 3)
    assert _unroll.choose_vectorize(_unroll.make_forward(mlp), mlp, 1) == "batched"
    assert _unroll.choose_vectorize(_unroll.make_forward(mlp, analytic=False), mlp, 4) is True
    conv = ConvNet((1, 8, 8), 3, width=4, depth=1)
    forward = _unroll.make_forward(conv, (1, 8, 8))
    assert _unroll.choose_vectorize(forward, conv, 4) is False
    assert _unroll.choose_vectorize(forward, conv, 4, "cuda") is True
    assert _unroll.choose_vectorize(forward, conv, 1, "cuda") is False


def test_plain_relu_sequential_takes_the_hand_written_path():
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    dense = _unroll.make_forward(seq, (1, 2, 2))
    assert isinstance(dense, _unroll.DenseReLUForward)
    assert dense.layers == [("1.weight", "1.bias"), ("3.weight", "3.bias")]
    assert isinstance(_unroll.make_forward(seq[1:], None), _unroll.DenseReLUForward)
    # not a plain ReLU MLP, or a Linear that would act on the last axis of an image
    for other, shape in [(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), None),
                         (nn.Sequential(nn.Linear(4, 3, bias=False)), None),
                         (nn.Sequential(nn.Linear(4, 5), nn.ReLU()), None),
                         (nn.Sequential(nn.Linear(2, 3)), (1, 2, 2))]:
        assert not isinstance(_unroll.make_forward(other, shape), _unroll.DenseReLUForward)
    generic = _unroll.make_forward(seq, (1, 2, 2), analytic=False)
    draws = [param_dict(reset_parameters(seq)) for _ in range(2)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    log_lr = torch.full((4,), -1.5, dtype=torch.float64, requires_grad=True)
    x_real, y_real = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))

    def make(leaves):
        return leaves[0], torch.eye(3, dtype=torch.float64), leaves[1].exp()

    want = _unroll.meta_value_and_grad(generic, params0, make, [x, log_lr], [slice(None)],
                                       x_real, y_real, vectorize=False)
    got = _unroll.meta_value_and_grad(dense, params0, make, [x, log_lr], [slice(None)],
                                      x_real, y_real, vectorize="batched")
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_compiled_meta_gradient_equals_the_eager_one():
    # torch.compile of the whole meta-loss (batched MLP path, every step in memory); its
    # compilation takes tens of seconds on two cores, hence slow.
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(analytic=True)
    leaves = [x_syn, label_logits, log_lr]

    def synthetic(leaves):
        x, logits, log_lr = leaves
        return x, torch.softmax(logits, 1), log_lr.exp()

    batches = [slice(None)]
    compiled = _unroll.CompiledMetaGradient(forward, synthetic, batches, "batched")
    loss, grads = compiled(params0, leaves, x_real, y_real)
    assert compiled.error is None  # it did compile, no fallback
    ref_loss, ref_grads = _unroll.meta_value_and_grad(forward, params0, synthetic, leaves,
                                                      batches, x_real, y_real, "batched")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_compiled_meta_gradient_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(fn, **kw):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(analytic=True)
    leaves = [x_syn, label_logits, log_lr]

    def synthetic(leaves):
        return leaves[0], torch.softmax(leaves[1], 1), leaves[2].exp()

    compiled = _unroll.CompiledMetaGradient(forward, synthetic, [slice(None)], "batched")
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        loss, grads = compiled(params0, leaves, x_real, y_real)
    assert isinstance(compiled.error, RuntimeError)
    ref_loss, ref_grads = _unroll.meta_value_and_grad(forward, params0, synthetic, leaves,
                                                      [slice(None)], x_real, y_real, "batched")
    assert loss == ref_loss
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=0)


@pytest.mark.parametrize("shapes", [((10, 64), (4, 64, 32)), ((4, 32, 10), (10, 64)),
                                    ((4, 64, 10), (4, 10, 32)), ((10, 64), (64, 32))])
def test_mm_matches_matmul_bit_for_bit(shapes):
    # _mm bypasses matmul's dispatch for stacked draws; a fit follows its rounding, so the
    # shortcut must give matmul's exact bits, also for a shared matrix against a stack.
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(s, generator=g) for s in shapes)
    for a_, b_ in ((a, b), (a.mT.contiguous().mT, b), (a, b.mT.contiguous().mT)):
        assert torch.equal(_unroll._mm(a_, b_), torch.matmul(a_, b_))


# ---------------------------------------------------------------- inner momentum


def _optimizer_problem(momentum=0.0, optimizer="sgd"):
    """A float64 MLP, its forward for ``momentum``/``optimizer``, θ0, data, two batches."""
    torch.manual_seed(0)
    net = MLP(4, 3, hidden_layer_sizes=(5,)).double()
    forward = _unroll.make_forward(net, momentum=momentum, optimizer=optimizer)
    p0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.softmax(torch.randn(3, 3, dtype=torch.float64), 1)
    return net, forward, p0, x, y, [torch.tensor([0, 2]), torch.tensor([1])]


def _train_with(torch_optimizer, net, x, y, lrs, batches):
    """``net`` trained in place by ``torch_optimizer``, one batch and step size per step."""
    for t, lr in enumerate(lrs.tolist()):
        idx = batches[t % len(batches)]
        torch_optimizer.param_groups[0]["lr"] = lr
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        torch_optimizer.step()


def test_momentum_steps_are_those_of_torch_sgd_with_momentum():
    """Heavy-ball unrolled steps equal ``torch.optim.SGD(momentum=0.9)`` on the same net,
    one batch and one step size per step (v = g at the first step, then v = μ v + g)."""
    net, forward, p0, x, y, batches = _optimizer_problem(momentum=0.9)
    assert forward.momentum == 0.9
    lrs = torch.tensor([0.3, 0.2, 0.25, 0.1, 0.15], dtype=torch.float64)
    state = _unroll.unroll(forward, p0, x, y, lrs, batches)
    assert set(state) == set(p0) | {_unroll.VELOCITY + k for k in p0}

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _train_with(optimizer, net, x, y, lrs, batches)
    for k, v in net.named_parameters():
        torch.testing.assert_close(state[k], v.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state[_unroll.VELOCITY + k],
                                   optimizer.state[v]["momentum_buffer"], rtol=1e-12,
                                   atol=1e-12)
    # the evaluation entry point returns the parameters only
    stacked = {k: v[None] for k, v in p0.items()}
    final = _unroll.unroll_stacked(forward, stacked, x, y, lrs, batches)
    assert set(final) == set(p0)
    weights = _unroll.parameters_of(state)
    torch.testing.assert_close(final, {k: v[None] for k, v in weights.items()})


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_momentum_outside_zero_to_one_is_rejected(momentum):
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\)"):
        _unroll.make_forward(MLP(4, 3), momentum=momentum)


def test_momentum_keeps_the_batched_path_for_a_plain_mlp():
    net = MLP(4, 3)
    forward = _unroll.make_forward(net, momentum=0.5)
    assert isinstance(forward, _unroll.DenseReLUForward) and forward.momentum == 0.5
    assert _unroll.choose_vectorize(forward, net, 4) == "batched"
    generic = _unroll.make_forward(net, analytic=False, momentum=0.5)
    assert not isinstance(generic, _unroll.DenseReLUForward) and generic.momentum == 0.5


@pytest.mark.parametrize("analytic, vectorize", PATHS)
@pytest.mark.parametrize("batches", [[slice(None)], [torch.tensor([0, 2]), torch.tensor([1])]])
def test_momentum_meta_gradient_matches_finite_differences(analytic, vectorize, batches):
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(
        analytic=analytic, momentum=0.9)

    def loss(x, logits, log_lr):
        return _unroll.meta_loss(forward, params0, x, torch.softmax(logits, 1), log_lr.exp(),
                                 batches, x_real, y_real, vectorize=vectorize)

    assert torch.autograd.gradcheck(loss, (x_syn, label_logits, log_lr), eps=1e-6, atol=1e-6)
    # momentum changes the result: the same problem without it gives another loss
    plain = _problem(analytic=analytic)[0]
    without = _unroll.meta_loss(plain, params0, x_syn, torch.softmax(label_logits, 1),
                                log_lr.exp(), batches, x_real, y_real, vectorize=vectorize)
    assert abs(without.item() - loss(x_syn, label_logits, log_lr).item()) > 1e-4


@pytest.mark.parametrize("analytic, vectorize", [(False, True), (False, False),
                                                 (True, "batched")])
@pytest.mark.parametrize("segment", [None, 1, 2, (3, 2)])
@pytest.mark.parametrize("window", [(0, 7), (2, 7), (3, 5), (6, 7)])
def test_momentum_meta_gradient_across_memory_modes_and_windows(analytic, vectorize, segment,
                                                                window):
    """Checkpointing and truncated windows carry the velocities: the gradient equals the
    all-in-memory one of the loss from the full training state (weights *and* velocities)
    at the window's start, checked against finite differences in float64; on the generic
    path and on the hand-written batched one."""
    forward, params0, leaves, x_real, y_real = _window_problem(analytic, momentum=0.9)
    batches = [torch.tensor([0, 2]), torch.tensor([1])]
    start, stop = window
    with torch.no_grad():  # the training state at the window's start, velocities included
        theta = _unroll._map_draws(
            lambda p: _unroll.unroll(forward, p, *_make(leaves), batches, 0, start),
            params0, True)
    assert (_unroll.VELOCITY + "layers.0.weight" in theta) == (start > 0)

    got = _check_window_gradient(forward, params0, theta, leaves, batches, x_real, y_real,
                                 window, vectorize, segment)
    outside = torch.ones(7, dtype=torch.bool)
    outside[start:stop] = False
    assert torch.all(got[2][outside] == 0)


# ---------------------------------------------------------------- inner Adam


def test_adam_steps_are_those_of_torch_adam():
    """Adam unrolled steps equal ``torch.optim.Adam`` (default betas and ε) on the same net,
    one batch and one step size per step, to float64 precision, moments included."""
    net, forward, p0, x, y, batches = _optimizer_problem(optimizer="adam")
    assert forward.optimizer == "adam" and not isinstance(forward, _unroll.DenseReLUForward)
    lrs = torch.tensor([0.03, 0.02, 0.025, 0.01, 0.015], dtype=torch.float64)
    state = _unroll.unroll(forward, p0, x, y, lrs, batches)
    assert set(state) == (set(p0) | {_unroll.ADAM_M + k for k in p0}
                          | {_unroll.ADAM_S + k for k in p0})

    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    _train_with(optimizer, net, x, y, lrs, batches)
    moved = 0.0
    for k, v in net.named_parameters():
        torch.testing.assert_close(state[k], v.detach(), rtol=0, atol=1e-12)
        moved = max(moved, (v.detach() - p0[k]).abs().max().item())
        torch.testing.assert_close(state[_unroll.ADAM_M + k], optimizer.state[v]["exp_avg"],
                                   rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(state[_unroll.ADAM_S + k],
                                   optimizer.state[v]["exp_avg_sq"], rtol=1e-10, atol=1e-16)
    assert moved > 0.05  # Adam moves every weight by about the step size per step
    # the steps differ from plain gradient descent with the same step sizes
    plain = _unroll.unroll(_unroll.make_forward(net), p0, x, y, lrs, batches)
    assert (plain["layers.0.weight"] - state["layers.0.weight"]).abs().max() > 1e-2
    assert set(_unroll.unroll_stacked(forward, {k: v[None] for k, v in p0.items()}, x, y,
                                      lrs, batches)) == set(p0)


def test_adam_is_rejected_with_momentum_or_without_its_step_index():
    with pytest.raises(ValueError, match="optimizer must be one of \\('sgd', 'adam'\\)"):
        _unroll.make_forward(MLP(4, 3), optimizer="rmsprop")
    with pytest.raises(ValueError, match="momentum applies to optimizer='sgd' only"):
        _unroll.make_forward(MLP(4, 3), momentum=0.9, optimizer="adam")
    net = MLP(4, 3).double()
    forward = _unroll.make_forward(net, optimizer="adam")
    with pytest.raises(ValueError, match="pass step=t"):
        _unroll.inner_step(forward, param_dict(net), torch.zeros(2, 4, dtype=torch.float64),
                           torch.full((2, 3), 1 / 3, dtype=torch.float64), 0.1)


def test_adam_meta_gradient_is_finite_where_an_inner_gradient_is_zero():
    """A weight that the inner loss does not depend on has a zero gradient at every step:
    √ŝ's derivative at ŝ = 0 would make the meta-gradient NaN; the zero-safe root keeps it
    finite."""
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(optimizer="adam")
    x_syn = x_syn.detach().clone()
    x_syn[:, 0] = 0.0  # the first input feature is zero in every synthetic sample
    x_syn.requires_grad_()
    loss = _unroll.meta_loss(forward, params0, x_syn, torch.softmax(label_logits, 1),
                             log_lr.exp(), [slice(None)], x_real, y_real)
    grads = torch.autograd.grad(loss, (x_syn, label_logits, log_lr))
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("batches", [[slice(None)], [torch.tensor([0, 2]), torch.tensor([1])]])
def test_adam_meta_gradient_matches_finite_differences(vectorize, batches):
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem(optimizer="adam")
    log_lr = torch.log(torch.tensor([0.03, 0.02, 0.01], dtype=torch.float64)).requires_grad_()

    def loss(x, logits, log_lr):
        return _unroll.meta_loss(forward, params0, x, torch.softmax(logits, 1), log_lr.exp(),
                                 batches, x_real, y_real, vectorize=vectorize)

    assert torch.autograd.gradcheck(loss, (x_syn, label_logits, log_lr), eps=1e-6, atol=1e-6)
    plain = _problem()[0]
    without = _unroll.meta_loss(plain, params0, x_syn, torch.softmax(label_logits, 1),
                                log_lr.exp(), batches, x_real, y_real, vectorize=vectorize)
    assert abs(without.item() - loss(x_syn, label_logits, log_lr).item()) > 1e-4


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("segment", [None, 1, 2, (3, 2)])
@pytest.mark.parametrize("window", [(0, 7), (2, 7), (3, 5), (6, 7)])
def test_adam_meta_gradient_across_memory_modes_and_windows(vectorize, segment, window):
    """Checkpointing and truncated windows carry Adam's moments, and a window's steps keep
    their bias corrections (step t's, not the window's own count): the gradient equals the
    all-in-memory one of the loss from the full training state at the window's start,
    checked against finite differences in float64."""
    forward, params0, leaves, x_real, y_real = _window_problem(False, optimizer="adam")
    leaves[2] = torch.log(torch.linspace(0.005, 0.03, 7, dtype=torch.float64)).requires_grad_()
    batches = [torch.tensor([0, 2]), torch.tensor([1])]
    start, stop = window
    with torch.no_grad():
        theta = _unroll._map_draws(
            lambda p: _unroll.unroll(forward, p, *_make(leaves), batches, 0, start),
            params0, True)
    assert (_unroll.ADAM_S + "layers.0.weight" in theta) == (start > 0)
    _check_window_gradient(forward, params0, theta, leaves, batches, x_real, y_real,
                           window, vectorize, segment)

"""The meta-gradient of the functional core, checked against finite differences in float64."""

import pytest
import torch

from skdistill import _unroll
from skdistill.nets import MLP, param_dict, reset_parameters


def _problem(n_draws=2, seed=0):
    torch.manual_seed(seed)
    net = MLP(4, 3, hidden_layer_sizes=(5,)).double()
    draws = [param_dict(reset_parameters(net)) for _ in range(n_draws)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    forward = _unroll.make_forward(net)
    x_syn = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    label_logits = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    log_lr = torch.log(torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)).requires_grad_()
    x_real = torch.randn(8, 4, dtype=torch.float64)
    y_real = torch.randint(0, 3, (8,))
    return forward, params0, x_syn, label_logits, log_lr, x_real, y_real


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("batches", [[slice(None)], [torch.tensor([0, 2]), torch.tensor([1])]])
def test_meta_gradient_matches_finite_differences(vectorize, batches):
    forward, params0, x_syn, label_logits, log_lr, x_real, y_real = _problem()

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
@pytest.mark.parametrize("segment", [1, 2, 3, 5])
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


def test_checkpoint_segment_is_square_root():
    assert [_unroll.checkpoint_segment(t) for t in (1, 10, 100, 200)] == [1, 4, 10, 15]


def test_bfloat16_autocast_meta_gradient_stays_close_to_float32():
    """bf16 autocast: the meta-gradient points the same way (cosine > 0.98) as in float32."""
    torch.manual_seed(0)
    net = MLP(64, 10, hidden_layer_sizes=(128,))
    draws = [param_dict(reset_parameters(net)) for _ in range(2)]
    params0 = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    forward = _unroll.make_forward(net)
    x_syn = torch.randn(10, 64, requires_grad=True)
    log_lr = torch.full((5,), -1.6, requires_grad=True)
    x_real, y_real = torch.randn(128, 64), torch.randint(0, 10, (128,))

    def make(leaves):
        return leaves[0], torch.eye(10), leaves[1].exp()

    grads = {}
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            _, grads[enabled] = _unroll.meta_value_and_grad(
                forward, params0, make, [x_syn, log_lr], [slice(None)], x_real, y_real)
    for a, b in zip(grads[False], grads[True]):
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) > 0.98

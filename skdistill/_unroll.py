"""The functional core of dataset distillation: unrolled inner SGD and its meta-objective.

Everything here is a pure function of tensors (torch.func style): parameters are dicts of
tensors, a network is a ``forward(params, x) -> logits`` callable, and nothing is written in
place. Stacked parameters (a leading axis of θ0 draws) are handled either by ``torch.vmap``
or by a Python loop over the draws; both give the same numbers. No scikit-learn, no numpy.

Notation (Wang et al. 2018, Algorithm 1): ``x_syn`` are the synthetic samples x̃, ``y_syn``
their target distributions (one-hot or learned soft labels), ``lrs`` the per-step learned
step sizes η̃, and the meta-objective is the loss on real data of the network after the
unrolled steps.
"""

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

__all__ = [
    "make_forward",
    "inner_step",
    "unroll",
    "meta_loss",
    "meta_value_and_grad",
    "checkpoint_segment",
    "unroll_stacked",
    "predict_stacked",
    "n_draws",
    "index_draw",
]


def make_forward(net, input_shape=None):
    """A pure ``forward(params, x)`` for ``net``, restoring ``input_shape`` from flat rows.

    Buffers (if any) are captured as constants; parameters come from the caller.
    """
    buffers = {k: v for k, v in net.named_buffers()}
    shape = tuple(input_shape) if input_shape is not None else None

    def forward(params, x):
        if shape is not None:
            x = x.reshape(x.shape[0], *shape)
        return functional_call(net, (params, buffers), (x,))

    return forward


def _inner_loss(params, forward, x, y):
    # y holds one probability distribution per row (one-hot for hard labels).
    return F.cross_entropy(forward(params, x), y)


_inner_grad = grad(_inner_loss)


def inner_step(forward, params, x, y, lr):
    """One gradient-descent step θ ← θ − lr ∇θ ℓ(x, y; θ), differentiable in x, y and lr."""
    grads = _inner_grad(params, forward, x, y)
    return {k: p - lr * grads[k] for k, p in params.items()}


def unroll(forward, params, x_syn, y_syn, lrs, batches, start=0, stop=None):
    """Train one θ0 for ``len(lrs)`` steps on the synthetic set; returns θ_T.

    ``batches`` is a sequence of index tensors (or ``slice(None)`` for the whole set), cycled
    in order: step ``t`` uses ``batches[t % len(batches)]`` with step size ``lrs[t]``.
    ``start`` and ``stop`` run only steps ``start <= t < stop`` (a segment of the unroll).
    """
    stop = lrs.shape[0] if stop is None else stop
    for t in range(start, stop):
        idx = batches[t % len(batches)]
        params = inner_step(forward, params, x_syn[idx], y_syn[idx], lrs[t])
    return params


def n_draws(stacked):
    """Number of θ0 draws in a dict of stacked parameters."""
    return next(iter(stacked.values())).shape[0]


def index_draw(stacked, i):
    """The ``i``-th draw of a dict of stacked parameters."""
    return {k: v[i] for k, v in stacked.items()}


def _map_draws(fn, stacked, vectorize):
    """Apply ``fn`` to every draw of ``stacked``; outputs are stacked along a new axis 0."""
    if vectorize:
        return torch.vmap(fn)(stacked)
    outs = [fn(index_draw(stacked, i)) for i in range(n_draws(stacked))]
    if isinstance(outs[0], dict):
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
    return torch.stack(outs)


def meta_loss(forward, params0, x_syn, y_syn, lrs, batches, x_real, y_real, vectorize=True):
    """Mean over θ0 draws of the real-data loss after unrolling on the synthetic set.

    Parameters
    ----------
    forward : callable
        ``forward(params, x) -> logits``.
    params0 : dict of str to Tensor
        Stacked initial parameters, leading axis = θ0 draws.
    x_syn, y_syn : Tensor
        Synthetic samples ``(M, n_features)`` and targets ``(M, n_classes)`` (probabilities).
    lrs : Tensor
        Positive step sizes, one per unrolled step.
    batches : sequence
        See :func:`unroll`.
    x_real : Tensor
        Real minibatch.
    y_real : Tensor
        Class indices (int64) or probabilities for the real minibatch.
    vectorize : bool
        ``torch.vmap`` over the draws (True) or a loop (False).

    Returns
    -------
    loss : Tensor
        Scalar, differentiable with respect to ``x_syn``, ``y_syn`` and ``lrs``.
    """

    def one(p0):
        p_final = unroll(forward, p0, x_syn, y_syn, lrs, batches)
        return F.cross_entropy(forward(p_final, x_real), y_real)

    return _map_draws(one, params0, vectorize).mean()


def _final_loss(forward, params, x_real, y_real, vectorize):
    return _map_draws(
        lambda p: F.cross_entropy(forward(p, x_real), y_real), params, vectorize
    ).mean()


def checkpoint_segment(n_steps):
    """Steps per recomputed segment that minimise stored states: ⌈√T⌉ (O(√T) memory)."""
    return max(1, math.ceil(math.sqrt(n_steps)))


def meta_value_and_grad(forward, params0, make_synthetic, leaves, batches, x_real, y_real,
                        vectorize=True, segment=None):
    """The meta-loss and its gradient with respect to ``leaves``.

    Parameters
    ----------
    forward, params0, batches, x_real, y_real, vectorize
        As in :func:`meta_loss`.
    make_synthetic : callable
        ``make_synthetic(leaves) -> (x_syn, y_syn, lrs)``: the synthetic set, its targets and
        the step sizes as differentiable functions of the learned tensors.
    leaves : list of Tensor
        The learned tensors (``requires_grad=True``).
    segment : int or None
        None keeps the graph of every unrolled step (memory O(T)). An integer ``k`` stores
        only the parameters at the start of each ``k``-step segment and recomputes one segment
        at a time in the backward pass (gradient checkpointing: memory O(T/k + k), about one
        more forward pass of compute). The gradient is the same to float tolerance.

    Returns
    -------
    loss : Tensor
        Scalar, detached.
    grads : list of Tensor
        One per leaf (zeros where a leaf does not influence the loss).
    """
    n_steps = make_synthetic(leaves)[2].shape[0]
    if segment is None or segment >= n_steps:
        loss = meta_loss(forward, params0, *make_synthetic(leaves), batches, x_real, y_real,
                         vectorize)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return loss.detach(), [torch.zeros_like(l) if g is None else g
                               for l, g in zip(leaves, grads)]

    def run(params, x_syn, y_syn, lrs, start, stop):
        return _map_draws(
            lambda p: unroll(forward, p, x_syn, y_syn, lrs, batches, start, stop),
            params, vectorize,
        )

    starts = list(range(0, n_steps, segment))
    # Forward without a graph, keeping the parameters at each segment start.
    saved = []
    with torch.no_grad():
        x_syn, y_syn, lrs = make_synthetic(leaves)
        params = params0
        for start in starts:
            saved.append(params)
            params = run(params, x_syn, y_syn, lrs, start, min(start + segment, n_steps))
    final = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss = _final_loss(forward, final, x_real, y_real, vectorize)
    keys = list(final)
    grad_params = torch.autograd.grad(loss, [final[k] for k in keys])
    totals = [torch.zeros_like(l) for l in leaves]
    # Backward one segment at a time, from the last: recompute it with a graph, then pull the
    # gradient back to its start and into the leaves.
    for start, params in zip(reversed(starts), reversed(saved)):
        first = start == 0  # θ0 is not learned: no gradient needed there
        params = {k: v if first else v.detach().requires_grad_() for k, v in params.items()}
        x_syn, y_syn, lrs = make_synthetic(leaves)
        end = run(params, x_syn, y_syn, lrs, start, min(start + segment, n_steps))
        inputs = list(leaves) + ([] if first else [params[k] for k in keys])
        grads = torch.autograd.grad([end[k] for k in keys], inputs, grad_outputs=grad_params,
                                    allow_unused=True)
        for i, g in enumerate(grads[: len(leaves)]):
            if g is not None:
                totals[i] += g
        grad_params = grads[len(leaves):]
    return loss.detach(), totals


def unroll_stacked(forward, params0, x_syn, y_syn, lrs, batches, vectorize=True):
    """θ_T for every draw of ``params0`` (stacked), e.g. to evaluate the learned recipe."""
    return _map_draws(
        lambda p0: unroll(forward, p0, x_syn, y_syn, lrs, batches), params0, vectorize
    )


def predict_stacked(forward, params, x, chunk_size=1024):
    """Predicted class indices ``(n_draws, n_samples)`` of every draw, in chunks of rows."""
    preds = []
    for i in range(n_draws(params)):
        p = index_draw(params, i)
        preds.append(
            torch.cat([forward(p, xc).argmax(1) for xc in torch.split(x, chunk_size)])
        )
    return torch.stack(preds)

"""The functional core of dataset distillation: unrolled inner SGD and its meta-objective.

Everything here is a pure function of tensors (torch.func style): parameters are dicts of
tensors, a network is a ``forward(params, x) -> logits`` callable, and nothing is written in
place. Stacked parameters (a leading axis of θ0 draws) are handled either by ``torch.vmap``
or by a Python loop over the draws; both give the same numbers (the loop takes its inner
gradients with ``torch.autograd.grad``, faster outside ``vmap``). No scikit-learn, no numpy.

Plain ReLU MLPs get a faster path (:class:`DenseReLUForward`): their parameters carry the
leading draw axis natively, so a whole batch of θ0 draws steps with batched matrix products
instead of ``torch.func.grad`` under ``vmap``; their inner gradient is written out by hand,
and so is the reverse pass of the meta-gradient through the unrolled steps (no autograd
graph is recorded). Tests compare it with the generic path in float64.

Notation (Wang et al. 2018, Algorithm 1): ``x_syn`` are the synthetic samples x̃, ``y_syn``
their target distributions (one-hot or learned soft labels), ``lrs`` the per-step learned
step sizes η̃, and the meta-objective is the loss on real data of the network after the
unrolled steps.

Inner momentum (a forward made with ``make_forward(..., momentum=μ)``, μ > 0) turns each step
into heavy-ball SGD, as ``torch.optim.SGD(momentum=μ)`` steps: v ← μ v + g (v = g at the
first step), θ ← θ − η_t v. The unrolled state is then a *training state*: the parameters
and, under keys ``"velocity:" + name``, their velocities; the forward reads the parameters
out of it, and checkpointing and truncated windows carry the velocities like the weights.

An Adam forward (``make_forward(..., optimizer="adam")``) steps as ``torch.optim.Adam`` with
its default betas (0.9, 0.999) and ε = 1e-8, the learned step size η_t as its learning rate:
m ← β1 m + (1 − β1) g, s ← β2 s + (1 − β2) g², θ ← θ − η_t m̂ / (√ŝ + ε) with the bias
corrections m̂ = m / (1 − β1^(t+1)), ŝ = s / (1 − β2^(t+1)) of step t (counted from θ0). Where
a gradient has been exactly zero so far (s = 0), √'s infinite derivative would make the
meta-gradient NaN (∞ · 0); there √ŝ is taken as a constant 0. The training state holds the
moments under the keys ``"adam_m:" + name`` and ``"adam_s:" + name``.
"""

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

__all__ = [
    "make_forward",
    "parameters_of",
    "DenseReLUForward",
    "inner_step",
    "unroll",
    "meta_loss",
    "meta_value_and_grad",
    "checkpoint_schedule",
    "unroll_stacked",
    "predict_stacked",
    "n_draws",
    "index_draw",
    "choose_vectorize",
    "final_loss",
]


VELOCITY = "velocity:"  # key prefix of the momentum buffers in a training state
ADAM_M, ADAM_S = "adam_m:", "adam_s:"  # key prefixes of Adam's first and second moments
_BUFFERS = (VELOCITY, ADAM_M, ADAM_S)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
INNER_OPTIMIZERS = ("sgd", "adam")


def parameters_of(state):
    """The network parameters of a training state (its optimiser buffers left out)."""
    return {k: v for k, v in state.items() if not k.startswith(_BUFFERS)}


def make_forward(net, input_shape=None, analytic=True, momentum=0.0, optimizer="sgd"):
    """A pure ``forward(params, x)`` for ``net``, restoring ``input_shape`` from flat rows.

    Buffers (if any) are captured as constants; parameters come from the caller. With
    ``analytic=True`` a built-in :class:`~skdistill.nets.MLP`, or an ``nn.Sequential`` of
    ``Linear`` (with bias) and ``ReLU`` layers in turn (after an optional ``Flatten``), gets a
    :class:`DenseReLUForward` (hand-written inner gradient, native draw axis); every other
    network, or ``analytic=False``, gets ``torch.func.functional_call``.

    ``momentum`` μ > 0 makes the inner steps taken with this forward heavy-ball steps (see the
    module docstring): the forward then takes a training state, ignores its velocities and
    carries ``forward.momentum``. ``optimizer="adam"`` makes them Adam steps (module
    docstring; ``momentum`` must then be 0): the forward takes a training state as well,
    carries ``forward.optimizer``, and is always the generic one (the hand-written MLP path
    takes only SGD steps).
    """
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {INNER_OPTIMIZERS}, got {optimizer!r}.")
    if optimizer == "adam" and momentum:
        raise ValueError("momentum applies to optimizer='sgd' only (Adam's β1 = 0.9 is its "
                         f"momentum), got momentum={momentum} with optimizer='adam'.")
    stateful = bool(momentum) or optimizer == "adam"
    if analytic and optimizer == "sgd":
        layers = _dense_relu_layers(net, input_shape)
        if layers is not None:
            return DenseReLUForward(layers, momentum)
    buffers = {k: v for k, v in net.named_buffers()}
    shape = tuple(input_shape) if input_shape is not None else None

    def forward(params, x):
        if shape is not None:
            x = x.reshape(x.shape[0], *shape)
        if stateful:
            params = parameters_of(params)
        return functional_call(net, (params, buffers), (x,))

    forward.momentum = momentum
    forward.optimizer = optimizer
    return forward


def _dense_relu_layers(net, input_shape=None):
    """Weight and bias keys of each linear layer if ``net`` is a plain ReLU MLP, else None."""
    from .nets import MLP  # nets does not import this module: no cycle

    nn = torch.nn
    if type(net) is MLP:
        seq, prefix = net.layers, "layers."
    elif type(net) is nn.Sequential:
        seq, prefix = net, ""
    else:
        return None
    children = list(seq.named_children())
    if prefix == "":
        first = children[0][1] if children else None
        if isinstance(first, nn.Flatten) and first.start_dim == 1 and first.end_dim == -1:
            children = children[1:]
        elif input_shape is not None and len(input_shape) > 1:
            return None  # its Linear layers would act on the last axis of image-shaped input
    if len(children) % 2 == 0:
        return None
    for i, (_, m) in enumerate(children):
        if type(m) is not (nn.Linear if i % 2 == 0 else nn.ReLU):
            return None
        if i % 2 == 0 and m.bias is None:
            return None
    return [(f"{prefix}{name}.weight", f"{prefix}{name}.bias")
            for name, m in children if isinstance(m, nn.Linear)]


def _relu_backward(grad, out):
    """``grad`` where the ReLU output ``out`` is positive, else 0: ReLU's derivative, fused.

    One ``threshold_backward`` instead of a 0/1 mask (``out.sign()``) and products: timed op
    by op on this project's CPU, 1.4x faster for 4×10×256 activations and 20x for 4×500×256
    (``sign`` of large float tensors is slow there); the whole meta-step gained 3-10 %
    (README, Speed and memory). ReLU's second derivative is zero almost everywhere,
    so autograd, differentiating through it, treats the selection as a constant.
    """
    if grad.dtype != out.dtype:  # bf16 activations under autocast, float32 adjoints
        out = out.to(grad.dtype)
    return torch.ops.aten.threshold_backward(grad, out, 0)


def _mm(a, b):
    """``a @ b``; straight to ``bmm`` for stacked draws (``matmul``'s dispatch costs ~10 µs).

    A matrix against a stack (the synthetic or real batch, shared by all draws) is expanded
    to the stack and sent to ``bmm`` too: what ``matmul`` does for these operands after
    four more dispatched views (same kernel, same bits; the MLP meta-step dispatches 120
    fewer operations at 4 draws x 10 steps).
    """
    if a.dim() == 3 or b.dim() == 3:
        if a.dim() == 2:
            a = a.expand(b.shape[0], *a.shape)
        elif b.dim() == 2:
            b = b.expand(a.shape[0], *b.shape)
        return torch.bmm(a, b)
    return torch.matmul(a, b)


class DenseReLUForward:
    """Forward pass, inner gradient and its reverse pass for a ReLU MLP, written by hand.

    ``params[w]`` has shape ``(out, in)`` for one draw or ``(n_draws, out, in)`` for a stack
    of draws (biases ``(out,)`` or ``(n_draws, out)``); the same code serves both through
    broadcasting matrix products, so stacked draws need neither ``vmap`` nor a loop. The
    gradient of the inner loss (mean cross-entropy against probability targets) is computed
    with plain tensor operations: autograd can differentiate it again (the generic path),
    and :meth:`vjp` differentiates it by hand (the fast path of :func:`meta_value_and_grad`).
    ReLU's second derivative is zero almost everywhere, so its mask enters as a constant.

    Parameters
    ----------
    layers : list of (str, str)
        Keys of the weight and bias of each linear layer, in order; ReLU between them.
    momentum : float, default=0.0
        Heavy-ball momentum of the inner steps taken with this forward (see
        :func:`make_forward`); every method reads only the layers' keys of a training state.
    """

    def __init__(self, layers, momentum=0.0):
        self.layers = list(layers)
        self.momentum = float(momentum)

    def _activations(self, params, x):
        h = x.flatten(1)
        acts = [h]
        for i, (w, b) in enumerate(self.layers):
            weight, bias = params[w], params[b]
            if weight.dim() == 2:
                z = torch.addmm(bias, h, weight.t())
            else:  # stacked draws: (D, out, in)
                if h.dim() == 2:
                    h = h.expand(weight.shape[0], *h.shape)
                z = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            # in place: the matrix product does not need its output for its backward
            h = z if i == len(self.layers) - 1 else torch.relu_(z)
            acts.append(h)
        return acts

    def __call__(self, params, x):
        return self._activations(params, x)[-1]

    def grad_with_cache(self, params, x, y):
        """:meth:`grad`, and what :meth:`vjp` needs of this forward and backward pass."""
        acts = self._activations(params, x)
        n_rows = x.shape[0]
        prob = torch.softmax(acts[-1], -1)
        # d/dz of -Σ y log softmax(z), averaged over the rows
        delta = (prob * y.sum(-1, keepdim=True) - y) / n_rows
        deltas = [None] * len(self.layers)
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            w, b = self.layers[i]
            deltas[i] = delta
            grads[w] = _mm(delta.transpose(-1, -2), acts[i])
            grads[b] = delta.sum(-2)
            if i:
                delta = _relu_backward(_mm(delta, params[w]), acts[i])
        cache = {"acts": acts, "deltas": deltas, "prob": prob, "y": y}
        return grads, cache

    def grad(self, params, x, y):
        """∇θ of ``cross_entropy(self(params, x), y)`` (mean over rows of ``x``, per draw)."""
        return self.grad_with_cache(params, x, y)[0]

    def vjp(self, params, cache, cotangent, need_x=True, need_y=True, need_params=True):
        """Reverse-mode derivative of :meth:`grad`: vector-Jacobian products with ``λ``.

        For the gradient ``g`` of the pass that made ``cache`` and a ``cotangent`` λ shaped
        like the parameters, returns ``∂⟨λ, g⟩/∂θ`` (per draw), ``∂⟨λ, g⟩/∂x`` and
        ``∂⟨λ, g⟩/∂y`` (summed over draws; None unless asked for) and ``⟨λ, g⟩`` itself
        (summed over draws). ``need_params=False`` skips the parameters' products (an empty
        dict is returned), for the first step, whose θ is not learned. One pass back through
        the gradient's own backward sweep, then through the forward pass; no autograd graph
        is built.
        """
        # Sums stay apart from the products (no baddbmm): fused, they round differently, and
        # a fit follows its rounding (the README's digits demo gave 94.2 ± 3.1 % instead of
        # 95.6 ± 0.7 % with the same seed); under autocast baddbmm would also round the
        # float32 accumulators to bf16.
        acts, deltas = cache["acts"], cache["deltas"]
        prob, y = cache["prob"], cache["y"]
        n_rows = acts[0].shape[-2]
        d_params = {}
        d_acts = [None] * len(self.layers)  # adjoints of each layer's input
        lam_dot_g = None
        # Back through the backward sweep, in reverse of its order (first layer first).
        d_delta = None
        for i, (w, b) in enumerate(self.layers):
            lam_w, lam_b = cotangent[w], cotangent[b]
            # g_w = δᵀ a and g_b = Σ_rows δ, so ⟨λ, g⟩ = ⟨δ, a λ_wᵀ + λ_b⟩
            new = _mm(acts[i], lam_w.transpose(-1, -2)) + lam_b.unsqueeze(-2)
            term = (deltas[i] * new).sum()
            lam_dot_g = term if lam_dot_g is None else lam_dot_g + term
            if i or need_x:
                d_acts[i] = _mm(deltas[i], lam_w)
            if i:
                # δ_{i-1} = (δ_i W_i) ⊙ mask_i
                e = _relu_backward(d_delta, acts[i])
                new = new + _mm(e, params[w].transpose(-1, -2))
                if need_params:
                    d_params[w] = _mm(deltas[i].transpose(-1, -2), e)
            d_delta = new
        # δ_L = (p Σy - y) / n with p = softmax(z_L)
        y_sum = y.sum(-1, keepdim=True)
        d_prob = d_delta * (y_sum / n_rows)
        d_logits = prob * (d_prob - (d_prob * prob).sum(-1, keepdim=True))
        d_y = None
        if need_y:
            d_y = ((d_delta * prob).sum(-1, keepdim=True) - d_delta) / n_rows
            d_y = d_y.reshape(-1, *y.shape).sum(0)
        # Back through the forward pass.
        d_z = d_logits
        for i in range(len(self.layers) - 1, -1, -1):
            w, b = self.layers[i]
            if need_params:
                d_w = _mm(d_z.transpose(-1, -2), acts[i])
                d_params[w] = d_w if w not in d_params else d_params[w] + d_w
                d_params[b] = d_z.sum(-2)
            if i or need_x:
                d_in = _mm(d_z, params[w])
                d_acts[i] = d_in if d_acts[i] is None else d_acts[i] + d_in
            if i:
                d_z = _relu_backward(d_acts[i], acts[i])
        d_x = d_acts[0].reshape(-1, *acts[0].shape[-2:]).sum(0) if need_x else None
        return d_params, d_x, d_y, lam_dot_g


@contextlib.contextmanager
def ieee_float32():
    """Float32 matrix products and convolutions in full IEEE precision on CUDA.

    cuDNN runs float32 convolutions in TF32 (a 10-bit mantissa) by default. Through an
    unrolled loop and its double backward that rounding grows: on an H200 the meta-gradient
    of the width-128 ConvNet differed from the naive reference's by a relative 0.1-2 with
    TF32 and by 1e-6 without, at the same speed (``benchmarks/speed.py --device cuda``).
    Restores the caller's settings on exit; changes nothing on CPU.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def choose_vectorize(forward, net, n_draws=None, device_type="cpu"):
    """How to run θ0 draws, as measured by ``benchmarks/speed.py``.

    ``"batched"`` for a :class:`DenseReLUForward` (stacked matrix products and the
    hand-written reverse pass: 1.6-7.3x the naive reference on CPU, against 0.5-3.0x for
    ``vmap``); a loop for a single draw, and for convolutional nets on CPU (grouped
    convolutions under ``vmap`` run at 0.6-0.7x a loop); ``vmap`` otherwise.
    """
    if isinstance(forward, DenseReLUForward):
        return "batched"
    if n_draws == 1:
        return False
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    return not has_conv or device_type == "cuda"


def _inner_loss(params, forward, x, y):
    # y holds one probability distribution per row (one-hot for hard labels).
    return F.cross_entropy(forward(params, x), y)


_inner_grad = grad(_inner_loss)


def _autograd_inner_grad(params, forward, x, y):
    """``_inner_grad`` through ``torch.autograd.grad``: for one draw outside any transform.

    The graph of the gradient is kept (``create_graph``) exactly when grad mode is on, as
    ``torch.func.grad`` does; parameters that do not require a gradient (θ0) get a detached
    stand-in that does; a parameter the loss does not use gets zeros, as there. On the
    Intel Xeon of ``benchmarks/results/speed_fashion_convnet_xeon.md`` (variant ``loop``,
    ConvNet 128x3, one draw, 10 steps, one CPU thread) the loop ran at 0.78x the naive
    reference with ``torch.func.grad`` and 0.96x with this, the same kernels otherwise.
    """
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = {k: p if p.requires_grad else p.detach().requires_grad_()
                  for k, p in params.items()}
        loss = _inner_loss(leaves, forward, x, y)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=keep_graph,
                                    allow_unused=True, materialize_grads=True)
    return dict(zip(leaves, grads))


def inner_step(forward, params, x, y, lr, autograd=False, step=None):
    """One gradient-descent step θ ← θ − lr ∇θ ℓ(x, y; θ), differentiable in x, y and lr.

    ``autograd=True`` takes the inner gradient with ``torch.autograd.grad`` instead of
    ``torch.func.grad``: faster for a single draw, but not under ``vmap`` or other
    ``torch.func`` transforms, nor inside ``torch.compile``. With a forward that has a
    ``momentum`` μ > 0 (:func:`make_forward`), ``params`` is a training state and the step is
    heavy-ball: v ← μ v + ∇θ ℓ (v = ∇θ ℓ when the state has no velocity yet, as at θ0),
    θ ← θ − lr v; the new state holds both. With an Adam forward (``optimizer="adam"``) the
    step is an Adam step (module docstring) and ``step`` is its index t, counted from θ0
    (for the bias corrections).
    """
    momentum = getattr(forward, "momentum", 0.0)
    adam = getattr(forward, "optimizer", "sgd") == "adam"
    if adam and step is None:
        raise ValueError("an Adam step needs its index: pass step=t (0 at θ0).")
    if momentum or adam:
        state, params = params, parameters_of(params)
    if isinstance(forward, DenseReLUForward):
        grads = forward.grad(params, x, y)
    elif autograd:
        grads = _autograd_inner_grad(params, forward, x, y)
    else:
        grads = _inner_grad(params, forward, x, y)
    neg_lr = -lr
    if adam:
        return _adam_step(state, params, grads, neg_lr, step)
    if not momentum:
        return {k: torch.addcmul(p, grads[k], neg_lr) for k, p in params.items()}
    new = {}
    for k, p in params.items():
        v = state.get(VELOCITY + k)
        v = grads[k] if v is None else torch.add(grads[k], v, alpha=momentum)
        new[k] = torch.addcmul(p, v, neg_lr)
        new[VELOCITY + k] = v
    return new


def _sqrt_zero_safe(s):
    """√s for s ≥ 0, with derivative 0 instead of ∞ where s = 0 (the double ``where``
    keeps the infinite branch out of the backward pass; ``torch.func`` transforms pass)."""
    positive = s > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, s, 1.0)), 0.0)


def _adam_step(state, params, grads, neg_lr, step):
    """The Adam step of :func:`inner_step` (module docstring), out of place."""
    (b1, b2), t = ADAM_BETAS, step + 1
    lr_t = neg_lr / (1.0 - b1 ** t)  # −η_t / (1 − β1^t)
    correction2 = 1.0 - b2 ** t
    new = {}
    for k, p in params.items():
        g = grads[k]
        m, s = state.get(ADAM_M + k), state.get(ADAM_S + k)
        m = g * (1.0 - b1) if m is None else torch.add(m * b1, g, alpha=1.0 - b1)
        g2 = g * g
        s = g2 * (1.0 - b2) if s is None else torch.add(s * b2, g2, alpha=1.0 - b2)
        denom = _sqrt_zero_safe(s / correction2) + ADAM_EPS
        new[k] = torch.addcmul(p, m / denom, lr_t)
        new[ADAM_M + k], new[ADAM_S + k] = m, s
    return new


def unroll(forward, params, x_syn, y_syn, lrs, batches, start=0, stop=None, autograd=False):
    """Train one θ0 for ``len(lrs)`` steps on the synthetic set; returns θ_T.

    ``batches`` is a sequence of index tensors (or ``slice(None)`` for the whole set), cycled
    in order: step ``t`` uses ``batches[t % len(batches)]`` with step size ``lrs[t]``.
    ``x_syn`` may also be a list of the samples of every step, already taken (e.g.
    augmented differently at each step); ``y_syn`` is then still indexed by ``batches``.
    ``start`` and ``stop`` run only steps ``start <= t < stop`` (a segment of the unroll).
    ``autograd`` is passed to :func:`inner_step`.
    """
    stop = lrs.shape[0] if stop is None else stop
    per_step = isinstance(x_syn, (list, tuple))
    for t in range(start, stop):
        idx = batches[t % len(batches)]
        x_t = x_syn[t] if per_step else x_syn[idx]
        params = inner_step(forward, params, x_t, y_syn[idx], lrs[t], autograd, step=t)
    return params


def n_draws(stacked):
    """Number of θ0 draws in a dict of stacked parameters."""
    return next(iter(stacked.values())).shape[0]


def index_draw(stacked, i):
    """The ``i``-th draw of a dict of stacked parameters."""
    return {k: v[i] for k, v in stacked.items()}


def _map_draws(fn, stacked, vectorize):
    """Apply ``fn`` to every draw of ``stacked``; outputs are stacked along a new axis 0.

    ``vectorize`` is True (``torch.vmap``), False (a loop) or ``"batched"``: ``fn`` takes the
    stack itself (a :class:`DenseReLUForward` network) and returns per-draw outputs.
    """
    if vectorize == "batched":
        return fn(stacked)
    if vectorize:
        return torch.vmap(fn)(stacked)
    outs = [fn(index_draw(stacked, i)) for i in range(n_draws(stacked))]
    if isinstance(outs[0], dict):
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
    return torch.stack(outs)


def meta_loss(forward, params0, x_syn, y_syn, lrs, batches, x_real, y_real, vectorize=True,
              autograd=None, start=0, stop=None):
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
    vectorize : bool or "batched"
        ``torch.vmap`` over the draws (True), a loop (False), or ``"batched"`` when
        ``forward`` is a :class:`DenseReLUForward` that takes the stacked draws directly.
    autograd : bool or None
        Passed to :func:`inner_step`; None: True for a loop (``vectorize=False``).
    start, stop : int
        Unroll only steps ``start <= t < stop`` (``stop=None``: to the end) from
        ``params0``, which then stands for θ at step ``start``.

    Returns
    -------
    loss : Tensor
        Scalar, differentiable with respect to ``x_syn``, ``y_syn`` and ``lrs``.
    """
    autograd = vectorize is False if autograd is None else autograd

    def one(p0):
        p_final = unroll(forward, p0, x_syn, y_syn, lrs, batches, start, stop,
                         autograd=autograd)
        return _real_loss(forward(p_final, x_real), y_real)

    return _map_draws(one, params0, vectorize).mean()


def _real_loss(logits, y):
    """Cross-entropy of one draw's logits ``(N, C)``, or per draw of stacked ``(D, N, C)``."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y)
    d, n = logits.shape[:2]
    y = y.expand(d, *y.shape).flatten(0, 1)
    return F.cross_entropy(logits.flatten(0, 1), y, reduction="none").view(d, n).mean(1)


def final_loss(forward, params, x_real, y_real, vectorize):
    """Mean over the draws of ``params`` of the cross-entropy on ``(x_real, y_real)``."""
    return _map_draws(
        lambda p: _real_loss(forward(p, x_real), y_real), params, vectorize
    ).mean()


def checkpoint_schedule(n_steps, levels=None):
    """Nested segment sizes for gradient checkpointing of a ``n_steps``-step unroll.

    With ``levels`` L and b the smallest integer with b^L ≥ T, the unroll is cut into
    segments of b^(L-1) steps, each of those into segments of b^(L-2), and so on down to
    b-step segments; the result lists the sizes from the outermost: ``(b,)`` for two levels
    (⌈√T⌉-step segments), ``(b², b)`` for three. The backward pass stores θ at the start of
    the segments of every level on the path it is working on (about b per level) plus the
    states of one innermost segment: about L·T^(1/L) parameter sets, at the cost of one more
    unrolled pass without a graph per extra level. ``levels=None``: two for up to 64 steps,
    three beyond (200 steps: 18 stored sets instead of 30).
    """
    if levels is None:
        levels = 2 if n_steps <= 64 else 3
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}.")
    base = 1
    while base**levels < n_steps:
        base += 1
    return tuple(base ** (levels - 1 - i) for i in range(levels - 1))


def _schedule(segment, n_steps):
    """``segment`` (None, an int or nested sizes) as a tuple of sizes below ``n_steps``."""
    if segment is None:
        return None
    sizes = (segment,) if isinstance(segment, int) else tuple(segment)
    if any(b < 1 for b in sizes) or list(sizes) != sorted(sizes, reverse=True):
        raise ValueError(f"segment sizes must be positive and decreasing, got {segment}.")
    return tuple(b for b in sizes if b < n_steps) or None


def _saving_starts(advance, params, start, stop, size, need_end):
    """Run steps ``start..stop`` without a graph, keeping θ at the start of each segment.

    Returns ``[(segment_start, segment_stop, θ_segment_start), ...]`` and θ at ``stop``
    (None unless ``need_end``: the last segment's steps are not run otherwise).
    """
    segments = []
    with torch.no_grad():
        for a in range(start, stop, size):
            b = min(a + size, stop)
            segments.append((a, b, params))
            if b < stop or need_end:
                params = advance(params, a, b)
    return segments, (params if need_end else None)


def _reverse_nested(advance, reverse_leaf, segments, sizes, adjoint):
    """Carry ``adjoint`` (∂L/∂θ at the end of the last segment) back to the first's start.

    ``segments`` are the stored starts of one level (from :func:`_saving_starts`), taken
    from the last; each is cut again by the next of ``sizes`` until none is left, where
    ``reverse_leaf(θ_start, start, stop, adjoint)`` recomputes the steps with what the
    backward pass needs and returns the adjoint at ``start``.
    """
    while segments:
        a, b, params = segments.pop()
        if sizes:
            inner, _ = _saving_starts(advance, params, a, b, sizes[0], need_end=False)
            adjoint = _reverse_nested(advance, reverse_leaf, inner, sizes[1:], adjoint)
        else:
            adjoint = reverse_leaf(params, a, b, adjoint)
    return adjoint


def meta_value_and_grad(forward, params0, make_synthetic, leaves, batches, x_real, y_real,
                        vectorize=True, segment=None, window=None):
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
    segment : int, tuple of int or None
        None keeps the graph of every unrolled step (memory O(T)). An integer ``k`` stores
        only the parameters at the start of each ``k``-step segment and recomputes one segment
        at a time in the backward pass (gradient checkpointing: memory O(T/k + k), about one
        more forward pass of compute). Decreasing sizes (from :func:`checkpoint_schedule`)
        nest the segments: each level stores its segment starts and recomputes the next
        level's (memory about L·T^(1/L) for L - 1 sizes, one more pass per level). The
        gradient is the same to float tolerance.
    window : tuple of (int, int) or None
        ``(start, stop)``: truncated backpropagation through the unroll. Steps
        ``t < start`` run without a graph (the gradient does not flow back through them),
        steps ``start <= t < stop`` are differentiated, and the real-data loss is taken
        after step ``stop - 1`` (later steps are not run). Step sizes of the steps outside
        the window get a zero gradient. None: ``(0, n_steps)``, the whole unroll. Memory
        and ``segment`` then concern the window's ``stop - start`` steps only.

    Returns
    -------
    loss : Tensor
        Scalar, detached.
    grads : list of Tensor
        One per leaf (zeros where a leaf does not influence the loss).
    """
    syn = make_synthetic(leaves)
    n_steps = syn[2].shape[0]
    begin, end = (0, n_steps) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= begin < end <= n_steps:
        raise ValueError(f"window must satisfy 0 <= start < stop <= n_steps={n_steps}, "
                         f"got {window}.")
    sizes = _schedule(segment, end - begin)
    batched = vectorize == "batched" and isinstance(forward, DenseReLUForward)
    if batched and isinstance(syn[0], (list, tuple)):
        raise ValueError("the batched path takes one synthetic set, not one per step; "
                         "use vectorize=True or False.")
    if begin:  # the steps before the window, without a graph: θ_begin stands for θ0
        fixed = _detached(syn)
        with torch.no_grad():
            params0 = _map_draws(
                lambda p: unroll(forward, p, *fixed, batches, 0, begin,
                                 autograd=vectorize is False),
                params0, "batched" if batched else vectorize,
            )
    if batched:
        return _dense_meta_value_and_grad(forward, params0, syn, leaves, batches,
                                          x_real, y_real, sizes, begin, end)
    if sizes is None:
        loss = meta_loss(forward, params0, *syn, batches, x_real, y_real, vectorize,
                         start=begin, stop=end)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return loss.detach(), [torch.zeros_like(leaf) if g is None else g
                               for leaf, g in zip(leaves, grads)]

    def run(params, x_syn, y_syn, lrs, start, stop):
        return _map_draws(
            lambda p: unroll(forward, p, x_syn, y_syn, lrs, batches, start, stop,
                             autograd=vectorize is False),
            params, vectorize,
        )

    syn_const = _detached(syn)
    del syn  # its graph is not needed: each segment recomputes its own

    def advance(params, start, stop):
        return run(params, *syn_const, start, stop)

    # Forward without a graph, keeping the parameters at each outermost segment start.
    segments, params = _saving_starts(advance, params0, begin, end, sizes[0], need_end=True)
    final = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss = final_loss(forward, final, x_real, y_real, vectorize)
    keys = list(final)
    # the optimiser buffers of a training state (momentum, Adam) do not enter the loss: zeros
    grad_final = torch.autograd.grad(loss, [final[k] for k in keys], allow_unused=True,
                                     materialize_grads=True)
    totals = [torch.zeros_like(leaf) for leaf in leaves]

    def reverse_leaf(params, start, stop, grad_params):
        # recompute the segment with a graph, then pull the gradient back to its start and
        # into the leaves
        first = start == begin  # θ0 (or θ at the window's start) needs no gradient
        params = {k: v if first else v.detach().requires_grad_() for k, v in params.items()}
        end = run(params, *make_synthetic(leaves), start, stop)
        inputs = list(leaves) + ([] if first else [params[k] for k in keys])
        grads = torch.autograd.grad([end[k] for k in keys], inputs, grad_outputs=grad_params,
                                    allow_unused=True)
        for i, g in enumerate(grads[: len(leaves)]):
            if g is not None:
                totals[i] += g
        # a buffer that the rest of the unroll does not use (the last step's): zeros
        return [torch.zeros_like(params[k]) if g is None else g
                for k, g in zip(keys, grads[len(leaves):])]

    _reverse_nested(advance, reverse_leaf, segments, sizes[1:], grad_final)
    return loss.detach(), totals


def _detached(syn):
    """``(x_syn, y_syn, lrs)`` detached from the leaves (``x_syn`` may be a list per step)."""
    return tuple([t.detach() for t in v] if isinstance(v, (list, tuple)) else v.detach()
                 for v in syn)


class CompiledMetaGradient:
    """:func:`meta_value_and_grad` with every step in memory, through ``torch.compile``.

    The meta-loss (synthetic set from the leaves, unroll of every draw, real-data loss) is
    compiled once per shape; autograd (AOTAutograd) derives its backward. If compilation or
    a compiled call fails (no C++ compiler, an unsupported platform or operator), a warning
    says why and this and every later call run eagerly, with the same result.

    Parameters
    ----------
    forward, make_synthetic, batches, vectorize
        As in :func:`meta_value_and_grad`.
    """

    def __init__(self, forward, make_synthetic, batches, vectorize):
        self.forward, self.make_synthetic = forward, make_synthetic
        self.batches, self.vectorize = batches, vectorize
        self.error = None  # the exception that made it fall back to eager, if any

        def loss_fn(params0, x_real, y_real, *leaves):
            x_syn, y_syn, lrs = make_synthetic(list(leaves))
            # torch.func.grad traces into one graph; autograd.grad would break it
            return meta_loss(forward, params0, x_syn, y_syn, lrs, batches, x_real, y_real,
                             vectorize, autograd=False)

        try:
            self._compiled = torch.compile(loss_fn, dynamic=False)
        except Exception as exc:  # torch.compile itself unavailable here
            self._fall_back(exc)

    def _fall_back(self, exc):
        self.error = exc
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        warnings.warn(
            f"torch.compile failed ({type(exc).__name__}: {first}); computing the "
            "meta-gradient eagerly instead (compile=False), with the same result.",
            RuntimeWarning, stacklevel=3,
        )

    def __call__(self, params0, leaves, x_real, y_real):
        """``(loss, grads)`` as :func:`meta_value_and_grad` returns them."""
        if self.error is None:
            try:
                loss = self._compiled(params0, x_real, y_real, *leaves)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                return loss.detach(), [torch.zeros_like(leaf) if g is None else g
                                       for leaf, g in zip(leaves, grads)]
            except Exception as exc:
                self._fall_back(exc)
        return meta_value_and_grad(self.forward, params0, self.make_synthetic, leaves,
                                   self.batches, x_real, y_real, self.vectorize, None)


def _dense_meta_value_and_grad(forward, params0, syn, leaves, batches, x_real,
                               y_real, sizes, begin=0, end=None):
    """:func:`meta_value_and_grad` for a :class:`DenseReLUForward` and stacked draws.

    The reverse pass is written by hand (:meth:`DenseReLUForward.vjp`) instead of recorded
    by autograd. The forward pass keeps each step's parameters θ_t and the small activations
    of its pass over the synthetic batch (with checkpointing ``sizes``: only θ at segment
    starts, recomputing the rest one segment at a time), and the backward pass carries the
    adjoint λ_t = ∂L/∂θ_t from t = T down to 0 (g_t: the inner gradient at step t):

        λ_t = λ_{t+1} - η_t ∂⟨λ_{t+1}, g_t⟩/∂θ_t,   ∂L/∂η_t = -⟨λ_{t+1}, g_t⟩,
        ∂L/∂x̃ -= η_t ∂⟨λ_{t+1}, g_t⟩/∂x̃,           ∂L/∂ỹ -= η_t ∂⟨λ_{t+1}, g_t⟩/∂ỹ.

    With inner momentum μ (``forward.momentum``), step t is v_{t+1} = μ v_t + g_t,
    θ_{t+1} = θ_t - η_t v_{t+1} (v_1 = g_0 from θ0, which has no velocity), and the adjoint
    carries λ_t = ∂L/∂θ_t and ν_t = ∂L/∂v_t: with a_t = ν_{t+1} - η_t λ_{t+1}, the adjoint of
    v_{t+1} through both of its uses,

        λ_t = λ_{t+1} + ∂⟨a_t, g_t⟩/∂θ_t,   ν_t = μ a_t,   ∂L/∂η_t = -⟨λ_{t+1}, v_{t+1}⟩,
        ∂L/∂x̃ += ∂⟨a_t, g_t⟩/∂x̃,            ∂L/∂ỹ += ∂⟨a_t, g_t⟩/∂ỹ

    (with μ = 0, a_t = -η_t λ_{t+1} and these are the equations above).

    Autograd is used once at the end, to carry ∂L/∂(x̃, ỹ, η) back to ``leaves``; ``syn`` is
    ``make_synthetic(leaves)``, computed once by the caller. Only steps ``begin <= t < end``
    are run (``params0`` is θ at ``begin``, a training state with momentum) and
    differentiated.
    """
    x_syn, y_syn, lrs = (t.detach() for t in syn)
    need_x, need_y = syn[0].requires_grad, syn[1].requires_grad
    n_steps = lrs.shape[0]
    end = n_steps if end is None else end
    # Step sizes as Python numbers for the parameter updates, which then take one
    # ``_foreach_add`` for all tensors of a step (the same bits as ``addcmul`` with a tensor
    # step size, measured); as tensors where they scale the synthetic set's adjoints. On a
    # GPU ``tolist`` waits for the device once per meta-gradient, as the caller's loss check
    # does anyway, not once per step.
    neg_lrs = -lrs
    neg_lr_values = neg_lrs.tolist()
    momentum = forward.momentum
    keys = list(parameters_of(params0))
    vkeys = [VELOCITY + k for k in keys]
    # one-step segments keep every step: that is the all-in-memory pass
    if sizes is not None and sizes[-1] == 1:
        sizes = sizes[:-1] or None

    def step(params, t, keep):
        """θ_{t+1} (with momentum a training state); (θ_t, cache, v_{t+1}) if ``keep``."""
        idx = batches[t % len(batches)]
        grads, cache = forward.grad_with_cache(params, _rows(x_syn, idx), _rows(y_syn, idx))
        grads = [grads[k] for k in keys]
        if momentum:  # as inner_step: v ← μ v + g (v = g at θ0), θ ← θ - η v
            # in θ's dtype, as autograd gives the generic path's gradients: under autocast
            # the velocity would otherwise sum its gradients in bf16
            grads = [g.to(params[k].dtype) for g, k in zip(grads, keys)]
            if vkeys[0] in params:
                grads = [torch.add(g, params[vk], alpha=momentum)
                         for g, vk in zip(grads, vkeys)]
            new = dict(zip(vkeys, grads))
        else:
            new = {}
        new.update(zip(keys, torch._foreach_add([params[k] for k in keys], grads,
                                                alpha=neg_lr_values[t])))
        return new, ((params, cache, grads) if keep else None)

    def advance(params, start, stop):
        for t in range(start, stop):
            params, _ = step(params, t, False)
        return params

    d_x, d_y = torch.zeros_like(x_syn), torch.zeros_like(y_syn)
    lam_dots = [None] * n_steps  # ⟨λ_{t+1}, g_t⟩ (or v_{t+1}), stacked once at the end

    def reverse(kept, start, lam):
        """Carry λ back over the kept steps ``start, start + 1, ...`` (popped from the end)."""
        for t in range(start + len(kept) - 1, start - 1, -1):
            params, cache, velocity = kept.pop()
            # λ at ``begin`` is not needed: θ there (θ0, or the truncation's start) is fixed
            lam_params = [lam[k] for k in keys]
            if momentum:
                lam_dots[t] = sum(torch.vdot(a.reshape(-1), v.reshape(-1).to(a.dtype))
                                  for a, v in zip(lam_params, velocity))
                nu = [lam[vk] for vk in vkeys] if vkeys[0] in lam else None
                a_t = (torch._foreach_mul(lam_params, neg_lr_values[t]) if nu is None else
                       torch._foreach_add(nu, lam_params, alpha=neg_lr_values[t]))
                a_t = dict(zip(keys, a_t))
                d_params, dx, dy, _ = forward.vjp(params, cache, a_t, need_x, need_y,
                                                  need_params=t > begin)
                scale = None
            else:
                d_params, dx, dy, lam_dots[t] = forward.vjp(params, cache, lam, need_x, need_y,
                                                            need_params=t > begin)
                scale = neg_lrs[t]
            idx = batches[t % len(batches)]
            if need_x:
                _accumulate(d_x, idx, dx, scale)
            if need_y:
                _accumulate(d_y, idx, dy, scale)
            if t > begin:
                # in place into λ_{t+1} (and a_t), which nothing else holds: fewer
                # allocations (out of place the heap fragmented: 4.7x the memory from 10 to
                # 200 checkpointed steps with momentum), and λ keeps its dtype under autocast
                torch._foreach_add_(lam_params, [d_params[k] for k in keys],
                                    alpha=1.0 if momentum else neg_lr_values[t])
                lam = dict(zip(keys, lam_params))
                if momentum and vkeys[0] in params:  # v_t exists: it fed v_{t+1}
                    nu_new = list(a_t.values())
                    torch._foreach_mul_(nu_new, momentum)
                    lam.update(zip(vkeys, nu_new))
        return lam

    def reverse_leaf(params, start, stop, lam):
        kept = []  # recompute the segment, keeping its steps
        for t in range(start, stop):
            params, entry = step(params, t, True)
            kept.append(entry)
        del params  # θ at ``stop``: not needed
        return reverse(kept, start, lam)

    with torch.no_grad():
        if sizes is None:
            kept, params = [], params0
            for t in range(begin, end):
                params, entry = step(params, t, True)
                kept.append(entry)
        else:
            segments, params = _saving_starts(advance, params0, begin, end, sizes[0],
                                              need_end=True)
        n = n_draws(params0)
        targets = y_real if y_real.dim() == 2 else F.one_hot(
            y_real, y_syn.shape[-1]).to(x_real.dtype)
        grads, cache = forward.grad_with_cache(params, x_real, targets)
        loss = _real_loss(cache["acts"][-1], y_real).mean()
        del cache, params
        # λ_T: gradient of the mean over draws of each draw's real-data loss
        lam = {k: g / n for k, g in grads.items()}
        del grads
        if sizes is None:
            reverse(kept, begin, lam)
        else:
            _reverse_nested(advance, reverse_leaf, segments, sizes[1:], lam)
    zero = torch.zeros_like(lam_dots[begin])  # the steps outside the window
    d_lrs = torch.stack([zero if v is None else v for v in lam_dots]).neg_().to(lrs.dtype)
    outputs, cotangents = [], []
    for out, cot in zip(syn, (d_x, d_y, d_lrs)):
        if out.requires_grad:
            outputs.append(out)
            cotangents.append(cot)
    grads = torch.autograd.grad(outputs, leaves, grad_outputs=cotangents, allow_unused=True)
    return loss, [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


def _rows(tensor, idx):
    """``tensor[idx]``, or ``tensor`` itself for the whole set (one dispatch fewer)."""
    return tensor if _whole(idx) else tensor[idx]


def _whole(idx):
    return isinstance(idx, slice) and idx == slice(None)


def _accumulate(total, idx, value, scale):
    """``total[idx] += scale * value`` (``scale`` None: 1) for a slice or an index tensor
    (repeats add up)."""
    value = (value if scale is None else value * scale).to(total.dtype)  # bf16 under autocast
    if isinstance(idx, torch.Tensor):
        total.index_add_(0, idx, value)
    elif isinstance(idx, slice):  # a view: in place, without setitem's copy back
        _rows(total, idx).add_(value)
    else:
        total[idx] += value


def unroll_stacked(forward, params0, x_syn, y_syn, lrs, batches, vectorize=True):
    """θ_T for every draw of ``params0`` (stacked), e.g. to evaluate the learned recipe.

    Only the parameters: the optimiser buffers (momentum, Adam) are left out.
    """
    return parameters_of(_map_draws(
        lambda p0: unroll(forward, p0, x_syn, y_syn, lrs, batches, autograd=vectorize is False),
        params0, vectorize,
    ))


def predict_stacked(forward, params, x, chunk_size=256):
    """Predicted class indices ``(n_draws, n_samples)`` of every draw, in chunks of rows."""
    # Small chunks keep a ConvNet's activations in cache: on one CPU thread, 4 draws of the
    # width-32 depth-2 ConvNet over 6,000 28x28 images took 3.9 s in chunks of 256 rows and
    # 9.7 s in chunks of 1,024; the MLPs' time does not depend on it.
    preds = []
    for i in range(n_draws(params)):
        p = index_draw(params, i)
        preds.append(
            torch.cat([forward(p, xc).argmax(1) for xc in torch.split(x, chunk_size)])
        )
    return torch.stack(preds)

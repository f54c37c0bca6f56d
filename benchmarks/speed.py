"""Speed and peak memory of the meta-gradient: skdistill's core against a naive reference.

One *outer iteration* is one meta-gradient: ``n_inits`` θ0 draws, each trained for
``n_steps`` gradient-descent steps on the synthetic set (one image per class by default), the
loss of every trained network on a real minibatch, and the gradient of their mean with
respect to the synthetic images and the step sizes. Optimiser updates, sampling of θ0 and
validation are not part of it.

Compared side by side in one process, interleaved round by round so that a change of load on
a shared machine hits every variant alike:

* **naive**: the reference written here, in the style of the original implementation: a
  Python loop over θ0 draws, each unrolled on an ``nn.Module`` whose weights are rewritten
  (plain tensor attributes) at every step, ``torch.autograd.grad(create_graph=True)`` per
  step, and one backward through the whole graph of every draw kept in memory;
* skdistill's core, ``skdistill._unroll.meta_value_and_grad``, in the variants
  ``batched`` (MLP only, skdistill's choice for it: stacked draws through batched matrix
  products, the inner gradient and the reverse pass written by hand, ``DenseReLUForward``),
  ``vmap`` / ``loop`` (the generic path: ``functional_call`` and ``torch.func.grad``, θ0
  draws through ``torch.vmap`` or a Python loop), ``+ckpt`` (skdistill's gradient checkpointing
  schedule: ⌈√T⌉-step segments up to 64 steps, nested b²- and b-step segments beyond,
  b = ⌈T^(1/3)⌉) and ``+bf16`` (bf16 autocast around the meta step), and ``compile``:
  ``torch.compile`` of the meta-loss (skdistill's default forward and draw mode, all steps in
  memory; AOTAutograd derives the outer backward), timed after its first call, whose
  duration (the compilation) is reported apart. Not run unless named: ``loop+threads`` and
  ``loop+threads+bf16``, the loop's draws in ``skdistill._threads.DrawThreads`` (a share of
  the draws per thread, torch's threads shared out among them; needs ``--threads 2`` or more
  to differ from ``loop``).

Reported per configuration: outer iterations per second, their ratio to the naive reference,
the achieved FLOP rate as a fraction of a plain training step's in the same process (forward
and backward of the same network on the real minibatch, same precision), and the relative
error of each variant's gradient against the naive one. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions) on one naive
meta step with one θ0 draw, times ``n_inits``; every variant is credited with that *useful*
count, so the recomputation of checkpointing shows as a lower rate.

Peak memory (CPU) is measured in a fresh process per configuration, forked from a
``multiprocessing`` fork server that has imported torch and skdistill but computed nothing:
after a warm-up call (2 steps) and ``malloc_trim``, the process resets its peak resident set
size (``/proc/self/clear_refs``), runs one meta step and reports ``VmHWM`` minus the
resident size just before it. That is every byte the step touched (tensors, autograd graph,
allocator slack), not only live tensors; tracemalloc does not see torch's allocations.

With ``--device cuda`` every variant runs on the GPU (timed between
``torch.cuda.synchronize`` calls) and peak memory is ``torch.cuda.max_memory_allocated``
during one meta step above what was allocated before it, in this process. TF32 convolutions
are off, as in skdistill's own fits, unless ``--tf32`` is given.

Results go to ``benchmarks/results/speed.{md,json,png}`` (``speed_quick.*`` with ``--quick``).

Examples
--------
OMP_NUM_THREADS=1 python benchmarks/speed.py --quick
OMP_NUM_THREADS=1 python benchmarks/speed.py
python benchmarks/speed.py --workloads digits_mlp --n-inits 4 16 --n-steps 10 50
python benchmarks/speed.py --device cuda --workloads fashion_convnet --n-inits 1 4 --n-steps 10
python benchmarks/speed.py --workloads fashion_convnet32 --ipc 40 --batch-size 1024 \
    --n-inits 1 --n-steps 30 --variants loop loop+bf16 --memory-steps 0
"""

import argparse
import contextlib
import copy
import ctypes
import gc
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HelpFormatter,
    add_output_args,
    finish_args,
    markdown_table,
    progress,
    set_allocator,
    stamp,
    stamp_lines,
    vm_kb,
    write_results,
)

from skdistill import _threads, _unroll, load_digits_images, load_fashion_mnist  # noqa: E402
from skdistill._alloc import retain_freed_memory  # noqa: E402
from skdistill.distiller import resolve_device  # noqa: E402
from skdistill.nets import MLP, ConvNet, sample_params  # noqa: E402

WORKLOADS = {
    "digits_mlp": "digits (8×8), MLP with 256 hidden units",
    "fashion_convnet": "Fashion-MNIST (28×28), ConvNet width 128 depth 3",
    "fashion_convnet32": "Fashion-MNIST (28×28), ConvNet width 32 depth 2 (the distiller's "
                         "default for module='convnet')",
}
# (width, depth) of the ConvNet workloads
CONVNETS = {"fashion_convnet": (128, 3), "fashion_convnet32": (32, 2)}
CORE_VARIANTS = ["batched", "vmap", "loop", "batched+ckpt", "vmap+ckpt", "loop+ckpt",
                 "batched+bf16", "vmap+bf16", "loop+bf16", "compile",
                 "loop+threads", "loop+threads+bf16"]
# not run unless asked for: they need --threads 2 or more to differ from loop
OPT_IN_VARIANTS = ["loop+threads", "loop+threads+bf16"]
# The timing grid: (n_inits, n_steps). The ConvNet's meta step costs about
# n_inits * (57 + 6.5 * n_steps) GFLOP, so its full grid would take hours on two CPU cores.
FULL = {
    "workloads": ["digits_mlp", "fashion_convnet"],
    "grid": {"digits_mlp": [(i, t) for i in (1, 4, 16) for t in (10, 50, 100, 200)],
             "fashion_convnet": [(1, 10), (4, 10), (1, 50)],
             # not run by default; the default fit's draws and unroll
             "fashion_convnet32": [(2, 20)]},
    "memory_steps": [10, 50, 100, 200],
    "memory_inits": {"digits_mlp": 4, "fashion_convnet": 1, "fashion_convnet32": 1},
    "compile_max_steps": 10,
    # Compiling the ConvNet's 10-step unroll took 13 min here and ran 2x slower than eager.
    "compile_workloads": ["digits_mlp"],
    "min_time": 1.0,
}
QUICK = {
    "workloads": ["digits_mlp"],
    "grid": {"digits_mlp": [(1, 10), (4, 10), (4, 30)]},
    "memory_steps": [10, 40],
    "memory_inits": {"digits_mlp": 4},
    "compile_max_steps": 0,
    "compile_workloads": [],
    "min_time": 0.2,
}


# ---------------------------------------------------------------------- workloads


def load_workload(name, batch_size, ipc, seed, data_home=None, device="cpu"):
    """The network, its ``forward``, a real minibatch and a synthetic set of real images."""
    if name == "digits_mlp":
        data = load_digits_images()
        net = MLP(data.X_train.shape[1], 10)
        shape = None
    else:
        data = load_fashion_mnist(data_home=data_home)
        width, depth = CONVNETS[name]
        net = ConvNet(tuple(data.image_shape), 10, width=width, depth=depth)
        shape = tuple(data.image_shape)
    rng = np.random.RandomState(seed)
    X, y = data.X_train, np.asarray(data.y_train)
    real = rng.choice(X.shape[0], batch_size, replace=False)
    # ``ipc`` real images of every class, ordered by class (init="real").
    syn = np.concatenate([rng.choice(np.flatnonzero(y == c), ipc, replace=False)
                          for c in range(10)])
    device = torch.device(device)
    return {
        "name": name,
        "net": net.to(device),
        "device": device,
        "input_shape": shape,
        "x_real": torch.as_tensor(X[real], dtype=torch.float32, device=device),
        "y_real": torch.as_tensor(y[real], dtype=torch.int64, device=device),
        "x_syn": torch.as_tensor(X[syn], dtype=torch.float32, device=device),
        "y_syn": F.one_hot(torch.as_tensor(y[syn], dtype=torch.int64, device=device),
                           10).float(),
    }


def make_problem(w, n_inits, n_steps, inner_lr, seed):
    """θ0 draws and the learned tensors (synthetic images, log step sizes) of one config."""
    params0 = sample_params(("random", None), w["net"], n_inits, np.random.RandomState(seed),
                            w["device"])
    leaves = [w["x_syn"].clone().requires_grad_(),
              torch.full((n_steps,), math.log(inner_lr), device=w["device"]).requires_grad_()]
    return params0, leaves


# ---------------------------------------------------------------------- the naive reference


class NaiveReference:
    """Meta-gradient the way the original implementation computes it.

    A Python loop over θ0 draws; each is unrolled on one ``nn.Module`` whose weights are
    rewritten as plain tensor attributes before every forward pass, with
    ``torch.autograd.grad(create_graph=True)`` per step; the graphs of every step of every
    draw stay in memory until one backward pass from the mean real-data loss.
    ``momentum`` μ > 0: heavy-ball steps as ``torch.optim.SGD(momentum=μ)`` takes them
    (v = g at the first step, then v = μ v + g; θ -= η v).
    """

    def __init__(self, net, input_shape, momentum=0.0):
        self.momentum = momentum
        self.net = copy.deepcopy(net)
        self.names = [k for k, _ in self.net.named_parameters()]
        self.shape = input_shape
        for module in self.net.modules():
            for k in list(module._parameters):
                value = module._parameters.pop(k)
                setattr(module, k, value.detach())

    def _load(self, weights):
        for name, w in zip(self.names, weights):
            owner, _, attr = name.rpartition(".")
            setattr(self.net.get_submodule(owner), attr, w)

    def _forward(self, weights, x):
        self._load(weights)
        # Always a view: FlopCounterMode's module hooks reject a leaf as a module's input.
        x = x.reshape(x.shape[0], *(self.shape or x.shape[1:]))
        return self.net(x)

    def __call__(self, params0, leaves, y_syn, x_real, y_real):
        x_syn, log_lr = leaves
        lrs = log_lr.exp()
        n = _unroll.n_draws(params0)
        losses = []
        for i in range(n):
            weights = [params0[k][i].clone().requires_grad_() for k in self.names]
            velocity = None
            for t in range(lrs.shape[0]):
                loss = F.cross_entropy(self._forward(weights, x_syn), y_syn)
                grads = torch.autograd.grad(loss, weights, create_graph=True)
                if self.momentum:
                    velocity = grads if velocity is None else [
                        self.momentum * v + g for v, g in zip(velocity, grads)]
                    grads = velocity
                weights = [w - lrs[t] * g for w, g in zip(weights, grads)]
            losses.append(F.cross_entropy(self._forward(weights, x_real), y_real))
        loss = torch.stack(losses).mean()
        return loss.detach(), list(torch.autograd.grad(loss, leaves))


# ---------------------------------------------------------------------- the variants


def _momentum_kwargs(w):
    """``make_forward``'s momentum argument where the workload has one (another checkout's
    ``_unroll``, in ``compare.py``, may predate it)."""
    return {"momentum": w["momentum"]} if w.get("momentum") else {}


def default_variant(w, n_inits=None):
    """skdistill's own choice (``_unroll.choose_vectorize``) as a variant name."""
    forward = _unroll.make_forward(w["net"], w["input_shape"], **_momentum_kwargs(w))
    choice = _unroll.choose_vectorize(forward, w["net"], n_inits, w["device"].type)
    return {"batched": "batched", True: "vmap", False: "loop"}[choice]


def applies(variant, w):
    """``batched`` needs a built-in MLP (``_unroll.DenseReLUForward``); ``threads`` a CPU."""
    if "threads" in variant.split("+") and w["device"].type != "cpu":
        return False
    dense = isinstance(_unroll.make_forward(w["net"], **_momentum_kwargs(w)),
                       _unroll.DenseReLUForward)
    return dense or not variant.startswith("batched")


def make_step(variant, w, n_steps, unroll=_unroll):
    """``step(params0, leaves) -> (loss, grads)`` for one variant.

    ``unroll``: the ``_unroll`` module that runs it (``compare.py`` passes another
    checkout's).
    """
    y_syn, x_real, y_real = w["y_syn"], w["x_real"], w["y_real"]
    if variant == "naive":
        naive = NaiveReference(w["net"], w["input_shape"], w.get("momentum", 0.0))
        return lambda params0, leaves: naive(params0, leaves, y_syn, x_real, y_real)
    parts = variant.split("+")
    # vmap / loop: the generic path (functional_call; the inner gradient by torch.func.grad
    # under vmap, by torch.autograd.grad in a loop); batched: the hand-written MLP path that
    # skdistill picks for its MLPs
    forward = unroll.make_forward(w["net"], w["input_shape"],
                                  analytic=parts[0] in ("batched", "compile"),
                                  **_momentum_kwargs(w))
    batches = [slice(None)]

    def synthetic(leaves):
        return leaves[0], y_syn, leaves[1].exp()

    if variant == "compile":
        vectorize = unroll.choose_vectorize(forward, w["net"], device_type=w["device"].type)

        def loss_fn(x_syn, log_lr, params0):
            return unroll.meta_loss(forward, params0, x_syn, y_syn, log_lr.exp(), batches,
                                    x_real, y_real, vectorize, autograd=False)

        compiled = torch.compile(loss_fn, dynamic=False)

        def step(params0, leaves):
            loss = compiled(leaves[0], leaves[1], params0)
            return loss.detach(), list(torch.autograd.grad(loss, leaves))

        return step
    vectorize = {"batched": "batched", "vmap": True, "loop": False}[parts[0]]
    segment = unroll.checkpoint_schedule(n_steps) if "ckpt" in parts else None
    bf16 = "bf16" in parts
    pools = {}  # +threads: a skdistill._threads.DrawThreads per number of draws

    def step(params0, leaves):
        with torch.autocast(w["device"].type, dtype=torch.bfloat16, enabled=bf16):
            if "threads" not in parts:
                return unroll.meta_value_and_grad(forward, params0, synthetic, leaves,
                                                  batches, x_real, y_real, vectorize, segment)
            n = min(_unroll.n_draws(params0), torch.get_num_threads())
            if n not in pools:
                pools[n] = _threads.DrawThreads(w["net"], w["input_shape"], n,
                                                **_momentum_kwargs(w))
            return pools[n].meta_value_and_grad(params0, synthetic, leaves, batches, x_real,
                                                y_real, segment)

    def close():
        for pool in pools.values():
            pool.close()
        pools.clear()

    step.close = close
    return step


def count_flops(fn):
    """FLOPs (matrix products and convolutions) of one call of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rel_error(grads, ref):
    """Largest relative error (2-norm) over the learned tensors."""
    return max(float((g.float() - r).norm() / r.norm().clamp_min(1e-30))
               for g, r in zip(grads, ref))


def synchronize(device):
    """Waits for the device's queued work (CUDA runs asynchronously); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns, min_time, min_rounds, max_rounds, on_round=None, device=None,
                      shuffle=True):
    """Seconds per call of every function, calling each once per round in turn.

    ``shuffle``: the order changes from round to round (seeded), so that no function always
    runs right after the same other one (after the naive reference, whose large graphs
    leave the caches and the allocator in another state than a light variant does).
    """
    device = torch.device("cpu") if device is None else device
    times = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for r in range(max_rounds):
        if shuffle:
            rng.shuffle(order)
        for k in order:
            fn = fns[k]
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[k].append(time.perf_counter() - t0)
        if on_round is not None:
            on_round(r)
        if r + 1 >= min_rounds and all(sum(v) >= min_time for v in times.values()):
            break
    return times


# ---------------------------------------------------------------------- plain training step


def plain_step_rates(w, args):
    """FLOP rate of forward + backward of the network on the real minibatch, fp32 and bf16."""
    net = copy.deepcopy(w["net"])
    shape = w["input_shape"]
    x = w["x_real"] if shape is None else w["x_real"].reshape(-1, *shape)

    def step(bf16):
        with torch.autocast(w["device"].type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), w["y_real"])
        loss.backward()
        net.zero_grad(set_to_none=True)

    flops = count_flops(lambda: step(False))
    fns = {"float32": lambda: step(False), "bfloat16": lambda: step(True)}
    for fn in fns.values():
        fn()  # warm-up
    times = interleaved_times(fns, max(2 * args.min_time, 0.3), 5, 1000, device=w["device"])
    out = {"gflop": flops / 1e9}
    for k, v in times.items():
        out[k] = {"seconds": v, "median_s": statistics.median(v),
                  "gflops_rate": flops / 1e9 / statistics.median(v)}
    return out


# ---------------------------------------------------------------------- timing


def time_config(w, n_inits, n_steps, variants, args, bar):
    """Every variant on one (n_inits, n_steps): times, FLOP rates and gradient errors."""
    params0, leaves = make_problem(w, n_inits, n_steps, args.inner_lr, args.seed)
    compiles = n_steps <= args.compile_max_steps and w["name"] in args.compile_workloads
    names = ["naive"] + [v for v in variants if (v != "compile" or compiles) and applies(v, w)]
    # Useful FLOPs: one naive meta step with one θ0 draw, times n_inits.
    p1, l1 = make_problem(w, 1, n_steps, args.inner_lr, args.seed)
    naive1 = make_step("naive", w, n_steps)
    flops = n_inits * count_flops(lambda: naive1(p1, l1))
    record = {"n_inits": n_inits, "n_steps": n_steps, "gflop": flops / 1e9, "variants": {}}
    steps, outputs = {}, {}
    # Warm-up on 2 steps (same shapes, so the same kernels and oneDNN primitives).
    pw, lw = make_problem(w, n_inits, 2, args.inner_lr, args.seed)
    for name in names:
        info = record["variants"][name] = {}
        try:
            if name == "compile":
                torch._dynamo.reset()
                step = make_step(name, w, n_steps)
                t0 = time.perf_counter()
                outputs[name] = step(params0, leaves)
                synchronize(w["device"])
                info["compile_seconds"] = time.perf_counter() - t0
            else:
                step = make_step(name, w, n_steps)
                step(pw, lw)
                outputs[name] = step(params0, leaves)
            steps[name] = step
        except Exception as exc:  # torch.compile may not work here: report how it fails
            info["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            if args.verbose:
                traceback.print_exc()
        bar.update(1)

    def call(name):
        return lambda: steps[name](params0, leaves)

    times = interleaved_times({k: call(k) for k in steps}, args.min_time, args.min_rounds,
                              args.max_rounds, device=w["device"],
                              shuffle=not args.fixed_order)
    for step in steps.values():
        getattr(step, "close", lambda: None)()
    ref_loss, ref_grads = outputs["naive"]
    for name, t in times.items():
        info = record["variants"][name]
        med = statistics.median(t)
        loss, grads = outputs[name]
        info.update(seconds=t, median_s=med, it_per_s=1 / med, gflops_rate=flops / 1e9 / med,
                    loss=float(loss), loss_diff=float(loss - ref_loss),
                    grad_rel_error=rel_error(grads, ref_grads))
    naive_s = record["variants"]["naive"]["median_s"]
    for info in record["variants"].values():
        if "median_s" in info:
            info["speedup"] = naive_s / info["median_s"]
    timed = {k: v for k, v in record["variants"].items() if "median_s" in v}
    record["fastest"] = min(timed, key=lambda k: timed[k]["median_s"])
    record["fastest_float32"] = min((k for k in timed if "bf16" not in k),
                                    key=lambda k: timed[k]["median_s"])
    return record


# ---------------------------------------------------------------------- memory


def _memory_child(spec, conn):
    """Runs in a fresh process: peak RSS increase of one meta step."""
    try:
        if spec["retain_freed_memory"]:  # the parent's allocator setting (--default-malloc)
            retain_freed_memory()
        torch.set_num_threads(spec["threads"])
        w = torch.load(spec["workload_file"], weights_only=False)
        step = make_step(spec["variant"], w, spec["n_steps"])
        pw, lw = make_problem(w, spec["n_inits"], 2, spec["inner_lr"], spec["seed"])
        step(pw, lw)  # warm-up: libraries, thread pools, kernels
        params0, leaves = make_problem(w, spec["n_inits"], spec["n_steps"], spec["inner_lr"],
                                       spec["seed"])
        del pw, lw
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        base = vm_kb("VmRSS")
        t0 = time.perf_counter()
        loss, _ = step(params0, leaves)
        seconds = time.perf_counter() - t0
        conn.send({"baseline_mb": base / 1024, "peak_mb": (vm_kb("VmHWM") - base) / 1024,
                   "seconds": seconds, "loss": float(loss)})
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _cuda_peak(w, variant, n_inits, n_steps, args):
    """Peak CUDA memory allocated by one meta step, above what was allocated before it."""
    step = make_step(variant, w, n_steps)
    pw, lw = make_problem(w, n_inits, 2, args.inner_lr, args.seed)
    step(pw, lw)  # warm-up: cuDNN/cuBLAS handles and workspaces
    params0, leaves = make_problem(w, n_inits, n_steps, args.inner_lr, args.seed)
    del pw, lw
    gc.collect()
    synchronize(w["device"])
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(w["device"])
    base = torch.cuda.memory_allocated(w["device"])
    t0 = time.perf_counter()
    loss, grads = step(params0, leaves)
    synchronize(w["device"])
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(w["device"]) - base
    return {"baseline_mb": base / 2**20, "peak_mb": peak / 2**20, "seconds": seconds,
            "loss": float(loss)}


def memory_sweep(w, workload_file, n_inits, steps, args, ctx, bar):
    """Peak memory against n_steps: naive, all steps in memory, checkpointing.

    CPU: peak RSS increase in a fresh process; CUDA: ``torch.cuda.max_memory_allocated``
    in this process, above what was allocated before the step.
    """
    vec = default_variant(w, n_inits)
    records = []
    for variant in ["naive", vec, f"{vec}+ckpt"]:
        seen = []
        for n_steps in steps:
            rec = {"variant": variant, "n_inits": n_inits, "n_steps": n_steps}
            if len(seen) >= 2:
                (t1, m1), (t2, m2) = seen[-2:]
                predicted = m2 + (m2 - m1) / (t2 - t1) * (n_steps - t2)
                if predicted > 1024 * args.max_memory_gb:
                    rec["skipped"] = (f"predicted {predicted / 1024:.1f} GB > "
                                      f"--max-memory-gb {args.max_memory_gb}")
            if "skipped" not in rec and w["device"].type == "cuda":
                try:
                    rec.update(_cuda_peak(w, variant, n_inits, n_steps, args))
                except torch.cuda.OutOfMemoryError as exc:
                    rec["error"] = f"out of memory: {str(exc).splitlines()[0][:200]}"
                    torch.cuda.empty_cache()
                if "peak_mb" in rec:
                    seen.append((n_steps, rec["peak_mb"]))
            elif "skipped" not in rec:
                spec = {"variant": variant, "n_inits": n_inits, "n_steps": n_steps,
                        "threads": args.threads, "inner_lr": args.inner_lr,
                        "seed": args.seed, "workload_file": str(workload_file),
                        "retain_freed_memory": not args.default_malloc}
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_memory_child, args=(spec, child))
                proc.start()
                child.close()
                try:
                    rec.update(parent.recv())
                except EOFError:
                    rec["error"] = "the child process died (out of memory?)"
                proc.join()
                if "peak_mb" in rec:
                    seen.append((n_steps, rec["peak_mb"]))
            records.append(rec)
            bar.update(1)
    return records


# ---------------------------------------------------------------------- report


def plain_rate(block, precision):
    """GFLOP/s of the plain training step: mean of the measurements before and after."""
    rates = [block[k][precision]["gflops_rate"] for k in ("plain_step", "plain_step_after")
             if k in block]
    return sum(rates) / len(rates)


def _fmt_ratio(info):
    if "error" in info:
        return "fails"
    if "speedup" not in info:
        return "–"
    return f"{info['speedup']:.2f}×"


def report(results, args, meta):
    lines = ["# Speed and peak memory of the meta-gradient", ""]
    lines += stamp_lines(meta)
    lines += [
        "",
        f"One outer iteration: `n_inits` θ0 draws × `n_steps` inner GD steps on "
        f"{10 * args.ipc} synthetic images (one-hot labels, learned step sizes), real-data "
        f"loss on a minibatch of {args.batch_size}, gradient with respect to the images and "
        "step sizes. "
        + (f"Every inner step is a heavy-ball step with momentum {args.inner_momentum:g} "
           "(`torch.optim.SGD(momentum=...)`'s update; "
           "`DatasetDistiller(inner_momentum=...)`), "
           "in every variant and in the naive reference. " if args.inner_momentum else "")
        + "**naive**: Python loop over draws, `nn.Module` weights rewritten per "
        "step, `autograd.grad(create_graph=True)`, everything in memory. Core variants "
        "(`skdistill._unroll.meta_value_and_grad`): `batched` (MLP only; skdistill's "
        "choice for it): stacked draws through batched matrix products with the inner "
        "gradient and the reverse pass written by hand; `vmap`/`loop`: the generic "
        "`torch.func` path with the draws through `torch.vmap` or a loop; `+ckpt` "
        "gradient checkpointing (⌈√T⌉-step segments up to 64 steps, nested b²- and b-step "
        "segments beyond, b = ⌈T^(1/3)⌉), `+bf16` autocast, `compile`: "
        "`torch.compile` of the meta-loss (skdistill's default path, full memory). "
        f"Median of interleaved rounds (at least {args.min_rounds}, at least "
        f"{args.min_time:g} s per variant) after a warm-up. Ratios: naive time / variant "
        "time (>1 is faster than naive).",
    ]
    for wl, block in results.items():
        if "error" in block:
            lines += ["", f"## {WORKLOADS[wl]}", "", f"Skipped: {block['error']}"]
            continue
        fp32, bf16 = plain_rate(block, "float32"), plain_rate(block, "bfloat16")
        lines += ["", f"## {WORKLOADS[wl]}", "",
                  f"Plain training step (forward + backward, batch {args.batch_size}): "
                  f"{block['plain_step']['gflop']:.3g} GFLOP, {fp32:.1f} GFLOP/s in float32"
                  f"{' (TF32 convolutions)' if meta.get('tf32') else ''}, "
                  f"{bf16:.1f} GFLOP/s under bf16 autocast ({bf16 / fp32:.2f}×); mean of a "
                  "measurement before and after the configurations below.",
                  "", "### Outer iterations per second: ratio to naive", ""]
        variants = [v for v in ["naive", *args.variants]
                    if any(v in r["variants"] for r in block["timing"])]
        rows = []
        for r in block["timing"]:
            row = [r["n_inits"], r["n_steps"],
                   f"{r['variants']['naive']['it_per_s']:.3g}"]
            row += [_fmt_ratio(r["variants"].get(v, {})) for v in variants[1:]]
            row += [f"**{r['fastest']}**", r["fastest_float32"]]
            rows.append(row)
        lines.append(markdown_table(["n_inits", "n_steps", "naive (it/s)", *variants[1:],
                                     "fastest", "fastest fp32"], rows))
        compiles = [(r, r["variants"]["compile"]) for r in block["timing"]
                    if "compile" in r["variants"]]
        if compiles:
            lines += [""] + [
                f"- compile, n_inits={r['n_inits']}, n_steps={r['n_steps']}: " + (
                    f"fails: `{c['error']}`" if "error" in c else
                    f"first call (compilation) {c['compile_seconds']:.0f} s")
                for r, c in compiles]
        lines += ["", "### Achieved FLOP rate as a fraction of a plain training step's "
                      "(same precision)", ""]
        rows = []
        for r in block["timing"]:
            row = [r["n_inits"], r["n_steps"], f"{r['gflop']:.3g}"]
            for v in variants:
                info = r["variants"].get(v, {})
                if "gflops_rate" in info:
                    ref = bf16 if "bf16" in v else fp32
                    row.append(f"{info['gflops_rate'] / ref:.2f}")
                else:
                    row.append("–")
            rows.append(row)
        lines.append(markdown_table(["n_inits", "n_steps", "GFLOP", *variants], rows))
        lines += ["", "### Gradient: largest relative error against naive", ""]
        rows = [[r["n_inits"], r["n_steps"]] + [
            f"{r['variants'][v]['grad_rel_error']:.1e}"
            if "grad_rel_error" in r["variants"].get(v, {}) else "–" for v in variants[1:]]
            for r in block["timing"]]
        lines.append(markdown_table(["n_inits", "n_steps", *variants[1:]], rows))
        if block.get("memory"):
            how = ("torch.cuda.max_memory_allocated above the memory allocated before it"
                   if meta.get("device_type") == "cuda"
                   else "peak RSS increase in a fresh process")
            lines += ["", f"### Peak memory of one meta step (MB, {how})", ""]
            mem = block["memory"]
            mvars = list(dict.fromkeys(m["variant"] for m in mem))
            steps = sorted({m["n_steps"] for m in mem})
            table = {(m["variant"], m["n_steps"]): m for m in mem}

            def cell(m):
                if "peak_mb" in m:
                    return f"{m['peak_mb']:.0f}"
                return "skipped" if "skipped" in m else "fails"

            rows = [[t] + [cell(table[v, t]) for v in mvars] for t in steps]
            ck = mvars[-1]
            first = table.get((ck, steps[0]), {})
            if "peak_mb" in first:
                for row, t in zip(rows, steps):
                    m = table[ck, t]
                    row.append(f"{m['peak_mb'] / first['peak_mb']:.2f}"
                               if "peak_mb" in m else "–")
            lines.append(markdown_table(
                ["n_steps", *mvars, f"{ck} / at n_steps={steps[0]}"], rows))
            lines += ["", f"n_inits={mem[0]['n_inits']}."]
            skipped = [m for m in mem if "skipped" in m or "error" in m]
            lines += [f"- {m['variant']}, n_steps={m['n_steps']}: "
                      f"{m.get('skipped', m.get('error'))}" for m in skipped]
    return "\n".join(lines)


def figure(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = {k: v for k, v in results.items() if "timing" in v}
    n_cols = 1 + max([len({r["n_inits"] for r in b["timing"]}) for b in blocks.values()] or [1])
    fig, axes = plt.subplots(max(len(blocks), 1), n_cols,
                             figsize=(4.2 * n_cols, 3.6 * len(blocks)), squeeze=False)
    names = ["naive", *CORE_VARIANTS]
    markers = dict(zip(names, "o^sv<>DPXh*"))
    colors = dict(zip(names, ["k", *(f"C{i}" for i in range(len(CORE_VARIANTS)))]))
    for row, (wl, block) in zip(axes, blocks.items()):
        inits = sorted({r["n_inits"] for r in block["timing"]})
        for ax, n in zip(row, inits):
            recs = sorted((r for r in block["timing"] if r["n_inits"] == n),
                          key=lambda r: r["n_steps"])
            for v in ["naive", *args.variants]:
                pts = [(r["n_steps"], r["variants"][v]["speedup"]) for r in recs
                       if "speedup" in r["variants"].get(v, {})]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, marker=markers.get(v, "o"), label=v,
                            linestyle="--" if "bf16" in v else "-",
                            color=colors.get(v),
                            linewidth=2 if v == "naive" else 1.2)
            ax.set_xscale("log")
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.set_yticks([2.0**k for k in range(-6, 7) if low <= 2.0**k <= high])
            ax.get_yaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xticks([r["n_steps"] for r in recs])
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.minorticks_off()
            ax.set_xlabel("n_steps")
            ax.set_ylabel("speed-up over naive")
            ax.set_title(f"{wl}, n_inits={n}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
        for ax in row[len(inits):-1]:
            ax.axis("off")
        ax = row[-1]
        mem = block.get("memory", [])
        for v in dict.fromkeys(m["variant"] for m in mem):
            pts = [(m["n_steps"], m["peak_mb"]) for m in mem
                   if m["variant"] == v and "peak_mb" in m]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker=markers.get(v, "o"), label=v,
                        color=colors.get(v))
        if mem:
            ax.set_xlabel("n_steps")
            ax.set_ylabel("peak memory increase (MB)")
            ax.set_title(f"{wl}, peak memory, n_inits={mem[0]['n_inits']}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Outer iterations per second, FLOP rate and peak memory of skdistill's "
                    "meta-gradient variants against a naive reference, side by side.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: digits/MLP only, a few small configurations, no "
                             "torch.compile, two memory points (under a minute on 2 CPU "
                             "cores); writes speed_quick.*")
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS),
                        help="(default: digits_mlp fashion_convnet)")
    parser.add_argument("--n-inits", nargs="+", type=int,
                        help="θ0 draws per outer iteration; with --n-steps, replaces the "
                             "timing grid of every workload (default: 1 4 16 × 10 50 100 200 "
                             "for the MLP; (1, 10), (4, 10), (1, 50) for the ConvNet)")
    parser.add_argument("--n-steps", nargs="+", type=int,
                        help="unrolled inner steps of the timing grid (see --n-inits)")
    parser.add_argument("--memory-steps", nargs="+", type=int,
                        help="n_steps of the peak-memory sweep (default: 10 50 100 200); "
                             "0 skips it")
    parser.add_argument("--variants", nargs="+", choices=CORE_VARIANTS,
                        default=[v for v in CORE_VARIANTS if v not in OPT_IN_VARIANTS],
                        help="skdistill core variants compared with the naive reference "
                             "(default: all but the +threads ones)")
    parser.add_argument("--compile-max-steps", type=int,
                        help="time torch.compile only up to this n_steps: compilation of the "
                             "unrolled graph grows with it (default: 10; --quick: 0, off)")
    parser.add_argument("--compile-workloads", nargs="+", choices=sorted(WORKLOADS),
                        help="workloads on which torch.compile is timed (default: digits_mlp; "
                             "the ConvNet's compilation takes over 10 minutes)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="skip a memory point whose peak, extrapolated from the previous "
                             "two, would exceed this")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="real samples per outer iteration")
    parser.add_argument("--ipc", type=int, default=1, help="synthetic images per class")
    parser.add_argument("--inner-lr", type=float, default=0.02,
                        help="every inner step size (the learned tensors' start)")
    parser.add_argument("--inner-momentum", type=float, default=0.0, metavar="MU",
                        help="heavy-ball momentum of every inner step, in the variants and "
                             "the naive reference (DatasetDistiller(inner_momentum=MU))")
    parser.add_argument("--min-time", type=float,
                        help="seconds of timed calls per variant and configuration at least "
                             "(default: 1; --quick: 0.2)")
    parser.add_argument("--fixed-order", action="store_true",
                        help="time the variants in the same order every round (naive first), "
                             "as before the order was shuffled; for comparison")
    parser.add_argument("--min-rounds", type=int, default=2,
                        help="timed calls per variant at least")
    parser.add_argument("--max-rounds", type=int, default=30,
                        help="timed calls per variant at most")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (also set OMP_NUM_THREADS to match)")
    parser.add_argument("--seed", type=int, default=0, help="data, θ0 draws")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: leave cuDNN's default TF32 convolutions on (off by "
                             "default, as in skdistill's fits: TF32 puts a relative error of "
                             "0.1-2 into the ConvNet's meta-gradient)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of every variant: cpu, cuda, cuda:1 or auto (CUDA "
                             "if any); on CUDA, peak memory is torch.cuda.max_memory_allocated")
    parser.add_argument("--data-home", default=None, help="where the Fashion-MNIST files are")
    add_output_args(parser, "speed")
    parser.add_argument("--verbose", action="store_true",
                        help="print tracebacks of failing variants (torch.compile)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.inner_momentum < 1.0:
        parser.error(f"--inner-momentum must be in [0, 1), got {args.inner_momentum}")
    defaults = QUICK if args.quick else FULL
    args.workloads = args.workloads or defaults["workloads"]
    if (args.n_inits is None) != (args.n_steps is None):
        parser.error("--n-inits and --n-steps go together")
    if args.n_inits is not None:
        args.grid = {wl: [(i, t) for i in args.n_inits for t in args.n_steps]
                     for wl in args.workloads}
    else:
        args.grid = {wl: defaults["grid"].get(wl, FULL["grid"][wl]) for wl in args.workloads}
    if args.memory_steps is None:
        args.memory_steps = defaults["memory_steps"]
    args.memory_steps = [t for t in args.memory_steps if t > 0]
    args.memory_inits = FULL["memory_inits"]
    for key in ("compile_max_steps", "compile_workloads", "min_time"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return finish_args(args, "speed")


def benchmark_device(name):
    """``torch.device`` for --device, as skdistill resolves it; only CPU and CUDA here."""
    try:
        device = resolve_device(name)
    except ValueError as exc:
        raise SystemExit(f"--device {name}: {exc}") from None
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are measured here")
    return device


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch._dynamo.config.cache_size_limit = 64
    device = benchmark_device(args.device)
    meta = stamp(device)
    set_allocator(args, meta)
    meta["device_type"] = device.type
    meta["tf32"] = bool(args.tf32 and device.type == "cuda")
    meta["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    meta["memory_method"] = (
        "torch.cuda.max_memory_allocated - memory_allocated around one meta step"
        if device.type == "cuda" else
        "VmHWM - VmRSS around one meta step, fresh forked process")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "skdistill", "skdistill._unroll"])
    n_variants = len(args.variants) + 1
    total = sum(len(args.grid[wl]) * n_variants + 3 * len(args.memory_steps)
                for wl in args.workloads)
    bar = progress(total, "speed", disable=args.no_progress)
    results = {}
    tmp = Path(args.out_dir) / f".{args.name}_tmp"
    paths = ()
    stack = contextlib.ExitStack()
    try:
        if not args.tf32:
            stack.enter_context(_unroll.ieee_float32())
        for wl in args.workloads:
            bar.set_description(f"{wl}: loading")
            try:
                w = load_workload(wl, args.batch_size, args.ipc, args.seed, args.data_home,
                                  device)
            except (OSError, ValueError) as exc:
                results[wl] = {"error": f"{type(exc).__name__}: {exc}"}
                bar.update(len(args.grid[wl]) * n_variants + 3 * len(args.memory_steps))
                continue
            w["momentum"] = args.inner_momentum
            block = results[wl] = {"description": WORKLOADS[wl], "timing": [], "memory": []}
            bar.set_description(f"{wl}: plain step")
            block["plain_step"] = plain_step_rates(w, args)
            for n_inits, n_steps in args.grid[wl]:
                bar.set_description(f"{wl}: n_inits={n_inits} n_steps={n_steps}")
                block["timing"].append(time_config(w, n_inits, n_steps, args.variants, args,
                                                   bar))
                paths = _write(results, args, meta, config)
            if args.memory_steps:
                bar.set_description(f"{wl}: memory")
                workload_file = None
                if device.type == "cpu":  # the fresh processes load the workload from disk
                    tmp.mkdir(parents=True, exist_ok=True)
                    workload_file = tmp / f"{wl}.pt"
                    torch.save(w, workload_file)
                block["memory"] = memory_sweep(w, workload_file, args.memory_inits[wl],
                                               args.memory_steps, args, ctx, bar)
                if workload_file is not None:
                    workload_file.unlink()
            bar.set_description(f"{wl}: plain step again")
            block["plain_step_after"] = plain_step_rates(w, args)
            for r in block["timing"]:
                for v, info in r["variants"].items():
                    if "gflops_rate" in info:
                        ref = plain_rate(block, "bfloat16" if "bf16" in v else "float32")
                        info["flop_fraction"] = info["gflops_rate"] / ref
            paths = _write(results, args, meta, config)
    finally:
        stack.close()
        bar.close()
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    print(report(results, args, meta))
    print("\nwrote " + ", ".join(str(p) for p in paths))


def _write(results, args, meta, config):
    import matplotlib.pyplot as plt

    fig = figure(results, args)
    paths = write_results(args.name, report(results, args, meta),
                          {"meta": meta, "config": config, "results": results}, fig,
                          args.out_dir)
    plt.close(fig)
    return paths


if __name__ == "__main__":
    main()

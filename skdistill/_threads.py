"""θ0 draws in parallel CPU threads.

On CPU one draw of a small ConvNet's unroll is a long chain of small operators (a few
synthetic images per inner step), which intra-op threads hardly speed up. The draws are
independent until their losses and gradients are averaged, so :class:`DrawThreads` runs a
contiguous share of them in each of several Python threads (torch releases the GIL inside
its operators), each thread with its share of torch's intra-op threads.

Measured with ``benchmarks/speed.py --threads 2`` (variant ``loop+threads`` against
``loop``, 2-core AMD EPYC; ``benchmarks/results/speed_threads_*.md``), it pays only where
one inner step is small: the width-32 depth-2 ConvNet on 10 synthetic images (the default
fit's; 0.04 GFLOP per forward pass) ran 1.13x and 1.18x as fast as the loop with 2 and 4
draws; on 100 images (0.4 GFLOP) 1.04x; on 400 images 0.95x, and the width-128 depth-3
ConvNet on 10 images (0.7 GFLOP) 0.80x with 2 draws and 0.74x with 4, where two intra-op
threads already work well and two draws at once contend for the caches. So
:func:`n_draw_threads` takes threads only below :data:`MAX_STEP_GFLOP` per forward pass of
an inner step. Predicting many samples (validation, ``score``) gains nothing from them:
``score`` on 10,000 Fashion-MNIST images with 5 draws of the 32x2 net took 5.6-7.2 s in
draw threads and 5.6-6.8 s in turn (a version of ``benchmarks/threads.py`` that also timed
it), so predictions stay in the calling thread.

The shares are combined in draw order, so a result depends on the number of threads (like
any change of torch's thread count, it moves float rounding) but not on their timing: the
same ``random_state`` on the same machine gives the same bits.
"""

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from . import _unroll

__all__ = ["DrawThreads", "n_draw_threads", "forward_flops", "MAX_STEP_GFLOP"]

# benchmarks/speed.py and the tests switch this off to run the serial loop side by side
ENABLED = True


# Forward FLOPs of one inner step (one draw) up to which draws run in threads; see above.
MAX_STEP_GFLOP = 0.1


# Layers that draw from torch's global generator in training mode: in threads the draws'
# calls would interleave in a different order every run.
_RANDOM_LAYERS = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
                  torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)


def n_draw_threads(n_draws, device, vectorize, step_flops=None, net=None):
    """Threads to run ``n_draws`` θ0 draws in, or 0 to run them in the calling thread.

    Threads for looped draws (``vectorize=False``: conv nets on CPU) when torch has at least
    two intra-op threads to share out (``torch.get_num_threads()``, which
    ``torch.set_num_threads``, ``OMP_NUM_THREADS`` and ``threadpoolctl`` set) and one inner
    step is small: ``step_flops()``, called only if the rest allows threads, returns the
    forward FLOPs of one draw on one step's synthetic batch, at most :data:`MAX_STEP_GFLOP`
    (None: not checked). One thread per draw up to torch's thread count. 0 for a ``net``
    with dropout layers in training mode, whose random masks would come from torch's global
    generator in an order that changes from run to run. 0 outside the main thread: fits
    run side by side in threads (joblib's threading backend, e.g. ``GridSearchCV(n_jobs=2)``
    under ``parallel_backend("threading")``) already share the cores, and each pool would
    set and restore torch's process-wide thread count under the other fits' feet.
    """
    if not ENABLED or torch.device(device).type != "cpu" or vectorize is not False:
        return 0
    if threading.current_thread() is not threading.main_thread():
        return 0
    if net is not None and any(isinstance(m, _RANDOM_LAYERS) and m.training
                               for m in net.modules()):
        return 0
    n = min(int(n_draws), torch.get_num_threads())
    if n < 2 or (step_flops is not None and step_flops() > MAX_STEP_GFLOP * 1e9):
        return 0
    return n


def forward_flops(forward, params, x):
    """FLOPs (matrix products and convolutions) of ``forward(params, x)``, without a graph.

    Counted with ``torch.utils.flop_counter.FlopCounterMode``; ``inf`` if counting fails
    (an operator it cannot run), so that nothing is chosen on a guess.
    """
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward(params, x)
    except Exception:
        return math.inf
    return counter.get_total_flops()


def _autocast_state():
    try:
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


class DrawThreads:
    """A pool of ``n_threads`` threads, each with its own copy of ``net``.

    ``torch.func.functional_call`` swaps a module's parameters in place for the call, so one
    module cannot serve two threads at once: every thread gets a forward function of its own
    copy. Each thread runs ``torch.get_num_threads() // n_threads`` (at least 1) intra-op
    threads; :meth:`close` (or leaving the ``with`` block) puts torch's thread count back as
    it was. The calling thread's grad mode and CPU autocast carry over to the tasks.
    """

    def __init__(self, net, input_shape, n_threads, momentum=0.0, optimizer="sgd"):
        if n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}.")
        self._restore = torch.get_num_threads()
        self.n_threads = int(n_threads)
        self.intra_op_threads = max(1, self._restore // self.n_threads)
        self.forwards = [
            _unroll.make_forward(copy.deepcopy(net), input_shape, momentum=momentum,
                                 optimizer=optimizer)
            for _ in range(self.n_threads)
        ]
        self._pool = ThreadPoolExecutor(
            self.n_threads, thread_name_prefix="skdistill-draws",
            initializer=torch.set_num_threads, initargs=(self.intra_op_threads,),
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Wait for the running tasks, stop the threads, restore torch's thread count."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        # a worker's torch.set_num_threads also set the count that new threads start with
        torch.set_num_threads(self._restore)

    def map_draws(self, fn, stacked):
        """``fn(forward, share)`` for contiguous shares of the draws of ``stacked``.

        Returns ``[(weight, result), ...]`` in draw order, ``weight`` being the share's
        fraction of the draws. An exception in a task is raised here.
        """
        n = _unroll.n_draws(stacked)
        k = min(self.n_threads, n)
        bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
        grad_mode = torch.is_grad_enabled()
        autocast, dtype = _autocast_state()

        def task(i, a, b):
            with torch.set_grad_enabled(grad_mode), \
                    torch.autocast("cpu", dtype=dtype, enabled=autocast):
                return fn(self.forwards[i], {key: v[a:b] for key, v in stacked.items()})

        futures = [self._pool.submit(task, i, a, b) for i, (a, b) in enumerate(bounds)]
        return [((b - a) / n, f.result()) for (a, b), f in zip(bounds, futures)]

    def meta_value_and_grad(self, params0, make_synthetic, leaves, batches, x_real, y_real,
                            segment=None, window=None):
        """:func:`_unroll.meta_value_and_grad` (looped draws), a share of them per thread.

        ``make_synthetic`` runs once in every thread, on the same leaves: it must be a
        deterministic function of them (as checkpointing already needs: it recomputes it).
        """
        parts = self.map_draws(
            lambda forward, share: _unroll.meta_value_and_grad(
                forward, share, make_synthetic, leaves, batches, x_real, y_real,
                vectorize=False, segment=segment, window=window),
            params0,
        )
        loss = sum(w * part[0] for w, part in parts)
        grads = [sum(w * part[1][i] for w, part in parts) for i in range(len(leaves))]
        return loss, grads

    def unroll_stacked(self, params0, x_syn, y_syn, lrs, batches):
        """:func:`_unroll.unroll_stacked` (looped draws), a share of them per thread."""
        parts = self.map_draws(
            lambda forward, share: _unroll.unroll_stacked(forward, share, x_syn, y_syn, lrs,
                                                          batches, vectorize=False),
            params0,
        )
        return {k: torch.cat([part[k] for _, part in parts]) for k in parts[0][1]}

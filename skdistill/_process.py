"""Leaving a process that took part in a ``torch.distributed`` gloo group."""

import os
import sys


def exit_without_finalising(code=0):
    """Flush stdout and stderr, then end the process with ``code`` at once.

    PyTorch's gloo worker threads can outlive ``destroy_process_group``, and one that drops
    the last reference to a finished collective while the interpreter finalises takes the GIL
    and aborts the process ("terminate called without an active exception": about 1 run in 40
    of two ranks under torchrun here; the core dump showed ProcessGroupGloo::AsyncWork's
    destructor in a gloo thread during Py_FinalizeEx). A rank whose work is written leaves
    through here instead, skipping finalisation (and so ``atexit`` handlers and the flushing
    of any other open file: close those first).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""Checkpoints of a DatasetDistiller fit: what they hold, how they are written and read."""

import os

import numpy as np
import torch


def to_cpu(obj):
    """``obj`` with every tensor in it (in dicts and lists) detached and moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    return obj


FORMAT = ("skdistill-checkpoint", 1)


def fingerprint(est, n_features, classes):
    """What a checkpoint must agree on with the estimator that resumes it."""
    return {
        "n_features": int(n_features),
        "classes": [str(c) for c in classes.tolist()],
        "n_distilled": int(est.n_distilled),
        "multi_formation": int(est.multi_formation),
        "n_steps": int(est._n_steps()),
        "learn_lr": bool(est.learn_lr),
        "learn_labels": bool(est.learn_labels),
        "soft_labels": bool(est.learn_labels or est.label_init is not None),
        "inner_optimizer": str(est.inner_optimizer),
        "inner_momentum": float(est.inner_momentum),
    }


def rng_state_to(state):
    """A NumPy RandomState state as tensors and numbers, which ``weights_only`` loads."""
    name, keys, pos, has_gauss, cached = state
    return [name, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss),
            float(cached)]


def rng_state_from(saved):
    """The inverse of ``rng_state_to``."""
    name, keys, pos, has_gauss, cached = saved
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def write(path, payload):
    """torch.save to a temporary file beside ``path``, then an atomic rename."""
    payload = {"format": FORMAT, **payload}
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path):
    """The payload of the checkpoint file ``path``; a clear ValueError for any other file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, unreadable file...
        raise ValueError(
            f"checkpoint file {os.fspath(path)!r} cannot be read ({type(exc).__name__}: "
            f"{exc}); it is corrupt or truncated. Delete it, or set warm_start=False to "
            "start afresh."
        ) from None
    if not isinstance(payload, dict) or tuple(payload.get("format", ())) != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"checkpoint file {os.fspath(path)!r} is not a skdistill checkpoint of format "
            f"{FORMAT[1]} (found {found})."
        )
    return payload


def check_fits(payload, est, n_features, classes):
    """Refuse, naming each difference, a checkpoint written by a fit unlike ``est``'s."""
    expected = fingerprint(est, n_features, classes)
    # Files older than an entry hold none for it; they were written by fits that had one
    # formation, learned soft labels only (no label_init) and plain SGD steps. Momentum
    # came before its entry, so a file without one may hold either: it is not compared.
    found = {"multi_formation": 1, "soft_labels": payload["fingerprint"].get("learn_labels"),
             "inner_optimizer": "sgd", **payload["fingerprint"]}
    diff = {k: (found.get(k), v) for k, v in expected.items()
            if k in found and found[k] != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"checkpoint file {os.fspath(est.checkpoint)!r} belongs to another fit ({detail}); "
            "use another checkpoint path or warm_start=False."
        )

"""torch.distributed helpers of a DatasetDistiller fit run by several processes."""

import torch


def world():
    """(world size, rank) of torch.distributed, or (1, 0) when it is not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def broadcast_int(value, device):
    """Rank 0's ``value`` (an int) on every rank."""
    t = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.broadcast(t, src=0)
    return int(t.item())


def all_reduce_mean(loss, grads, share):
    """Sum over ranks of ``share``-weighted losses and gradients, in one collective."""
    flat = torch.cat([loss.reshape(1)] + [g.reshape(-1) for g in grads]) * share
    torch.distributed.all_reduce(flat)
    out, offset = [], 1
    for g in grads:
        out.append(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[0], out

"""Training on several processes: torch's DistributedDataParallel (DDP), started by torchrun.

    vislang train recipes/default.toml --nproc 4     # 4 processes here: torchrun --standalone underneath
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m vislang train recipes/default.toml --out runs/big

torchrun starts the processes and says who each is in environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `init` joins them in a process group, gloo on CPUs, nccl on
GPUs. Every rank builds its own rows of each micro-batch (`shard_rows`), so the ranks together see
exactly the one-process global batch; DDP averages the gradients, and weighting each rank's loss by
its share of the answer tokens (`token_weights`) makes that average, and the logged loss, the
one-process ones. Rank 0 alone writes the run directory; what it reads there (a checkpoint, cached
chat turns) it hands to the others (`from_main`): other machines need the recipe, not the run.
With one process every function here answers trivially and the loop runs as it always did.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import VislangError

log = logging.getLogger(__name__)
T = TypeVar("T")


def launched() -> bool:
    """True in a process that torchrun (or anything setting its variables) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    # before `init` the environment already knows: logging can be set up per rank first
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched by it; returns the device this rank trains on
    (cuda:LOCAL_RANK on GPUs: one GPU a process)."""
    if not launched() or int(os.environ["WORLD_SIZE"]) < 2:
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise VislangError(
                f"local rank {local_rank} has no GPU of its own: {torch.cuda.device_count()} here"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("rank %d of %d on %s", rank(), world_size(), device)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(rows: Sequence[T], at_rank: int | None = None, world: int | None = None) -> list[T]:
    """This rank's rows of a global micro-batch: every world-th, from its own rank on. Strided rather
    than contiguous so that ranks differ by at most one row; the union over ranks is `rows`."""
    world = world_size() if world is None else world
    if world == 1:
        return list(rows)
    at_rank = rank() if at_rank is None else at_rank
    return list(rows)[at_rank::world]


def check_split(batch_size: int, where: str, world: int | None = None) -> None:
    """Every rank needs a row of each micro-batch: DDP waits for every rank's gradients."""
    world = world_size() if world is None else world
    if batch_size < world:
        raise VislangError(
            f"{where}: batch_size {batch_size} cannot be split over {world} processes: each needs a row"
        )


def _comm_device() -> torch.device:
    # nccl moves only GPU tensors, gloo CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def token_weights(counts: Sequence[int]) -> list[float]:
    """Per micro-batch, this rank's answer tokens over the ranks' mean count.

    The loss is a mean over a micro-batch's answer tokens, and the ranks hold unequal numbers of them.
    A rank's token-mean loss times this weight, averaged over ranks (what DDP does to gradients), is
    the token-mean over the whole micro-batch: the one-process loss. With one process: exactly 1.0.
    """
    if world_size() == 1:
        return [1.0] * len(counts)
    local = torch.tensor(counts, dtype=torch.float64, device=_comm_device())
    total = local.clone()
    dist.all_reduce(total)
    return (local * world_size() / total).tolist()


def reduce_mean(x: float) -> float:
    """The mean of a number over ranks (float64 on the wire: logged losses keep their digits)."""
    if world_size() == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.item() / world_size()


def from_main(obj: Any) -> Any:
    """Rank 0's obj on every rank (pickled): what rank 0 read or decided, the others use.

    Decisions on a clock go through here too: ranks that stopped apart would wait for each other forever.
    """
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def ddp_wrap(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """The module in torch's DDP (the module itself on one process). Wrap after freezing: DDP reduces
    the gradients of the parameters that require them at wrapping time, so wrap again when that changes.

    find_unused_parameters: some trainable parameter may be left out of a rank's forward (a projector
    on a shard of text-only rows); DDP then has to look for it in the autograd graph each step.
    """
    if world_size() == 1:
        return module
    device = next(p.device for p in module.parameters() if p.requires_grad)
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def grad_sync(model: nn.Module, last: bool):
    """Around a micro-batch's forward and backward: gradients are all-reduced only after the last one
    of a step; the ones before accumulate locally."""
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def launch(nproc: int, argv: list[str]) -> int:
    """Start nproc local processes through torch's elastic launcher, as
    `torchrun --standalone --nproc-per-node NPROC ARGV...` does; ARGV is a script and its arguments,
    or `-m module` and its arguments. Returns an exit status (the first failed process's)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", *argv]))
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        log.error("rank %d of %d failed with exit code %d", failed_rank, nproc, failure.exitcode)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0

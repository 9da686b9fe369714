"""Data-parallel training over several processes (``torchrun``), on GPUs (NCCL) or CPUs (gloo).

``torchrun --nproc_per_node=K run.py finetune ...`` starts K processes; each reads its place
from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK: torchrun's interface, nothing
of ours). Every global batch is cut into K equal shards, one per process; the model is wrapped
in DistributedDataParallel, so gradients are averaged over the processes and every process holds
the same weights. What makes K processes equal to one (tested, augmentation off):

- a loss that is a mean over samples, averaged over K equal shards, is the global mean;
- the contrastive losses see every process's embeddings (:func:`gather_with_grad`), whose
  gradient flows back to the process that made them;
- DINO's centre averages the teacher outputs of all processes (:func:`mean_over_processes`);
- optional synchronised batch norm makes BN statistics global (:func:`sync_batch_norm`; torch's
  ``SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` with gloo, which torch lacks).

Only rank 0 writes files and shows progress; checkpoints hold no per-process state, so a run
resumes with any number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: Tensor) -> Tensor:
        """This process's contiguous share of a global batch of ``indices`` (length divisible by
        the number of processes)."""
        if not self.enabled:
            return indices
        size = len(indices) // self.world_size
        return indices[self.rank * size : (self.rank + 1) * size]


SINGLE = Processes()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str = "auto") -> tuple[Processes, str]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); return this process's
    place and its device name ("cuda:<local rank>" on GPUs). A single process returns SINGLE."""
    if not launched_by_torchrun():
        return SINGLE, device_name
    processes = Processes(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        device_name = f"cuda:{processes.local_rank}"
        torch.cuda.set_device(processes.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return processes, ("cpu" if not use_cuda else device_name)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(processes: Processes) -> None:
    if processes.enabled:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward sums every process's gradient for this process's rows."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank = dist.get_rank()
        return grad[rank * ctx.rows : (rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor, processes: Processes) -> Tensor:
    """(W·B, ...) the rows of every process in rank order, differentiable.

    Each process then computes the same global loss; the backward hands each process the summed
    gradient of its own rows, W times the gradient of that loss, and DDP's mean over processes
    divides it back: the parameters get exactly the single-process gradient of the global batch.
    """
    return _GatherWithGrad.apply(x) if processes.enabled else x


class _SumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


@torch.no_grad()
def mean_over_processes(x: Tensor, processes: Processes) -> Tensor:
    """The mean of ``x`` over processes (no gradient): DINO's centre, logged losses."""
    if not processes.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / processes.world_size


def any_over_processes(flag: Tensor, processes: Processes) -> Tensor:
    """True on every process when ``flag`` (a bool tensor) is true on any."""
    if not processes.enabled:
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.bool()


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, for gloo (torch's
    ``SyncBatchNorm`` runs on GPUs only). Statistics are sums reduced over processes with a
    differentiable all-reduce; eval mode uses the running statistics as plain BN."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = _SumWithGrad.apply(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm made global over processes (keys and values unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        converted = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        converted.to(next(iter(module.state_dict().values())).device) if module.state_dict() else None
        if module.affine:
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        converted.add_module(name, _convert_cpu(child))
    return converted


def wrap(model: nn.Module, processes: Processes, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train it."""
    if not processes.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)

"""Device choice, mixed precision, and torchrun (DDP) set-up; on the CPU the gloo backend is used."""
import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup(device: str = "auto") -> Runtime:
    """Pick the device; under torchrun (RANK/WORLD_SIZE set) also join the process group."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        from common.errors import UserError
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        if want_cuda:
            torch.cuda.set_device(local_rank)
            dev = torch.device("cuda", local_rank)
        else:
            dev = torch.device("cpu")
        return Runtime(dev, rank, world, local_rank)
    return Runtime(torch.device("cuda" if want_cuda else "cpu"))


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def native_bf16(device=None) -> bool:
    """Whether the GPU computes bf16 in hardware (compute capability 8.0+). torch.cuda.is_bf16_supported()
    alone also says yes on V100/T4, where bf16 is emulated and slow."""
    if torch.version.hip:
        return True
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch without the argument
        return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(rt: Runtime) -> torch.dtype:
    """The autocast dtype on CUDA: bf16 where native, else fp16 (with the loss scaler of grad_scaler)."""
    return torch.bfloat16 if native_bf16(rt.device) else torch.float16


def fp16_scaler_needed(rt: Runtime, amp: bool) -> bool:
    return bool(amp and rt.cuda and amp_dtype(rt) == torch.float16)


def grad_scaler(rt: Runtime, amp: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only when autocast runs in fp16 (a pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=fp16_scaler_needed(rt, amp))


def autocast(rt: Runtime, enabled: bool):
    """bf16 (native) or fp16 autocast on CUDA when enabled; a no-op on the CPU."""
    if enabled and rt.cuda:
        return torch.autocast("cuda", dtype=amp_dtype(rt))
    return contextlib.nullcontext()


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Concatenate a 1-D tensor of possibly different lengths from every rank (in rank order)."""
    if not rt.distributed:
        return t
    n = torch.tensor([t.numel()], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(rt.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    parts = [torch.zeros_like(padded) for _ in range(rt.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def peak_memory(rt: Runtime) -> tuple:
    """(peak GiB, what was measured, where): the CUDA allocator's peak on a GPU, else the process's max
    RSS."""
    if rt.cuda:
        return torch.cuda.max_memory_allocated() / 2 ** 30, "CUDA allocator", torch.cuda.get_device_name()
    import resource
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "max RSS",
            f"CPU, {torch.get_num_threads()} threads")

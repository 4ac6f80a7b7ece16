"""Where CDTG's training time goes: a randomly initialised trainer at a chosen scale, a synchronising
per-phase timer for CDTGTrainer.step, the cost of each kind of iteration (plain, with path length, with R1 and
path length), the FIR operations' forward + backward and forward + double backward, and torch.profiler's top
kernels.

Used by benchmarks/cdtg_step.py (--profile) and benchmarks/gpu_cdtg.py; nothing is downloaded.
"""
import contextlib
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from CDTG import ops
from CDTG.conditioning import FeatureProjection, TailClassifier
from CDTG.model import Discriminator, Generator
from CDTG.trainer import CDTGTrainer, StepConfig
from common.backbones import build_feature_resnet
from common.clip import encode_text_prompts, load_clip
from common.distributed import Runtime, autocast


@dataclass
class Scale:
    """The models of one benchmark configuration (defaults: the paper's, DIOR's 12 tail classes)."""
    size: int = 256
    batch: int = 8
    classes: int = 12
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    max_channels: int | None = None
    label_dim: int = 512
    tail_arch: str = "resnet50"
    tail_size: int = 224
    feature_pool: int = 0
    clip_model: str | None = "ViT-B-32"
    clip_pretrained: str | None = None


SMOKE = Scale(size=32, batch=4, classes=3, style_dim=32, n_mlp=2, max_channels=16, label_dim=16,
              tail_arch="resnet18", tail_size=32, feature_pool=2, clip_model=None)


def build_trainer(scale: Scale, rt: Runtime, cfg: StepConfig, seed: int = 0):
    """(trainer, real images, labels): random weights throughout, random images in [-1, 1]."""
    torch.manual_seed(seed)
    k = scale.classes
    tail = TailClassifier(build_feature_resnet(scale.tail_arch, k, "none", verbose=False),
                          {"img_size": scale.tail_size, "norm": "half"}).to(rt.device)
    g = Generator(scale.size, scale.style_dim, scale.n_mlp, num_classes=k,
                  channel_multiplier=scale.channel_multiplier, max_channels=scale.max_channels).to(rt.device)
    d = Discriminator(scale.size, num_classes=k, channel_multiplier=scale.channel_multiplier,
                      label_dim=scale.label_dim, max_channels=scale.max_channels).to(rt.device)
    proj = FeatureProjection(tail.feature_shape(), scale.style_dim, scale.feature_pool).to(rt.device)
    clip = text = None
    if scale.clip_model and cfg.lambda_clip > 0:
        clip = load_clip(scale.clip_model, scale.clip_pretrained, rt.device)
        text = encode_text_prompts(clip, [f"a photo of a class {i}" for i in range(k)])
    trainer = CDTGTrainer(g, d, proj, tail, rt, cfg, clip, text)
    real = torch.rand(scale.batch, 3, scale.size, scale.size, device=rt.device) * 2 - 1
    labels = torch.arange(scale.batch, device=rt.device) % k
    return trainer, real, labels


def synchronize(rt: Runtime) -> None:
    if rt.cuda:
        torch.cuda.synchronize(rt.device)


class PhaseTimer:
    """CDTGTrainer.timer: wall time of each named phase, synchronised with the GPU at both ends."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.times = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str):
        synchronize(self.rt)
        start = time.perf_counter()
        with torch.profiler.record_function(name):
            yield
        synchronize(self.rt)
        self.times[name].append(time.perf_counter() - start)


def iteration_kind(i: int, cfg: StepConfig) -> str:
    r1 = cfg.r1 > 0 and cfg.d_reg_every > 0 and i % cfg.d_reg_every == 0
    path = cfg.path_regularize > 0 and cfg.g_reg_every > 0 and i % cfg.g_reg_every == 0
    return "R1 + path length" if r1 and path else "R1" if r1 else "path length" if path else "plain"


def cycle_length(cfg: StepConfig) -> int:
    """Iterations after which the pattern of regularised iterations repeats."""
    return math.lcm(max(1, cfg.d_reg_every), max(1, cfg.g_reg_every))


def profile_step(trainer: CDTGTrainer, real, labels, cycles: int = 1, warmup: int = 2) -> dict:
    """Per phase: ms per iteration averaged over whole regularisation cycles (amortised) and ms per occurrence
    (median); per kind of iteration: median ms. Every phase is synchronised, so the figures add up to the
    step but the sum is slightly above an unsynchronised loop's."""
    rt, cfg = trainer.rt, trainer.cfg
    n = cycle_length(cfg) * cycles
    for i in range(warmup):
        trainer.step(real, labels, i + 1)
    synchronize(rt)
    timer = PhaseTimer(rt)
    trainer.timer = timer
    kinds = defaultdict(list)
    try:
        for i in range(n):
            synchronize(rt)
            start = time.perf_counter()
            trainer.step(real, labels, i)
            synchronize(rt)
            kinds[iteration_kind(i, cfg)].append(time.perf_counter() - start)
    finally:
        trainer.timer = None
    phases = {name: {"ms_per_iteration": 1000 * sum(t) / n, "ms_per_call": 1000 * statistics.median(t),
                     "calls": len(t)} for name, t in timer.times.items()}
    return {"iterations": n, "phases": phases,
            "kinds": {k: {"ms": 1000 * statistics.median(t), "count": len(t)} for k, t in kinds.items()}}


def time_loop(trainer: CDTGTrainer, real, labels, iterations: int, warmup: int = 2) -> dict:
    """Unsynchronised steps 0..iterations-1 (regularisers amortised as in training): s per iteration, peak
    CUDA memory."""
    rt = trainer.rt
    for i in range(warmup):
        trainer.step(real, labels, i + 1)
    synchronize(rt)
    if rt.cuda:
        torch.cuda.reset_peak_memory_stats(rt.device)
    start = time.perf_counter()
    for i in range(iterations):
        trainer.step(real, labels, i)
    synchronize(rt)
    seconds = (time.perf_counter() - start) / iterations
    peak = torch.cuda.max_memory_allocated(rt.device) / 2 ** 30 if rt.cuda else None
    return {"sec_per_it": seconds, "hours_200k": seconds * 200_000 / 3600, "peak_gib": peak}


def top_kernels(trainer: CDTGTrainer, real, labels, iterations: int, rows: int = 12) -> str:
    """torch.profiler over `iterations` steps: the top operators by device time (CUDA) and by CPU time."""
    rt = trainer.rt
    activities = [torch.profiler.ProfilerActivity.CPU]
    if rt.cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(iterations):
            trainer.step(real, labels, i)
        synchronize(rt)
    events = prof.key_averages()
    tables = []
    if rt.cuda:
        tables.append("top by GPU time\n" + events.table(sort_by="self_cuda_time_total", row_limit=rows,
                                                          max_name_column_width=60))
    tables.append("top by CPU time\n" + events.table(sort_by="self_cpu_time_total", row_limit=rows,
                                                      max_name_column_width=60))
    return "\n".join(tables)


# ------------------------------------------------------------------------------------------------------ ops

FIR_CASES = {  # name: (input shape, up, down, pad), StyleGAN2's [1, 3, 3, 1] kernel
    "up=2": ((8, 512, 64, 64), 2, 1, (2, 1)),
    "down=2": ((8, 256, 128, 128), 1, 2, (1, 1)),
    "blur pad 1": ((8, 512, 66, 66), 1, 1, (1, 1)),
}


def _median_ms(fn, rt: Runtime, repeats: int, cap_seconds: float = 2.0) -> float:
    """Median ms of `repeats` synchronised calls after one untimed call (fewer once they pass cap_seconds)."""
    fn()
    synchronize(rt)
    times = []
    while len(times) < repeats and sum(times) < cap_seconds:
        start = time.perf_counter()
        fn()
        synchronize(rt)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_fir(impl: str, case: str, rt: Runtime, repeats: int = 10, shrink: int = 1,
             channels_last: bool = False) -> dict:
    """ms of forward + backward and of forward + double backward (the gradient of a function of the input
    gradient, as R1 and path length take it) of one upfirdn2d call."""
    shape, up, down, pad = FIR_CASES[case]
    shape = (shape[0], shape[1] // shrink, shape[2] // shrink, shape[3] // shrink)
    kernel = ops.make_kernel(ops.BLUR_KERNEL).to(rt.device) * (up * up)
    x = torch.randn(shape, device=rt.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = ops.upfirdn2d(x, kernel, up, down, pad, impl=impl)
    grad_out = torch.randn_like(out).requires_grad_(True)
    weights = torch.randn_like(x)

    def forward_backward():
        y = ops.upfirdn2d(x, kernel, up, down, pad, impl=impl)
        y.backward(grad_out.detach())

    def forward_double_backward():
        y = ops.upfirdn2d(x, kernel, up, down, pad, impl=impl)
        gx, = torch.autograd.grad((y * grad_out).sum(), x, create_graph=True)
        (gx * weights).sum().backward()

    return {"op": case, "impl": impl + (" (channels_last)" if channels_last else ""), "shape": list(shape),
            "fwd_bwd_ms": _median_ms(forward_backward, rt, repeats),
            "fwd_double_bwd_ms": _median_ms(forward_double_backward, rt, repeats)}


def time_g_d(scale: Scale, rt: Runtime, batch: int, repeats: int = 5, amp: bool = True,
             channels_last: bool = False) -> float:
    """ms of G forward + D forward on the fakes + backward through both (no regularisers, no tail model)."""
    torch.manual_seed(0)
    g = Generator(scale.size, scale.style_dim, scale.n_mlp, num_classes=scale.classes,
                  channel_multiplier=scale.channel_multiplier, max_channels=scale.max_channels).to(rt.device)
    d = Discriminator(scale.size, num_classes=scale.classes, channel_multiplier=scale.channel_multiplier,
                      label_dim=scale.label_dim, max_channels=scale.max_channels).to(rt.device)
    if channels_last:  # the 4-D parameters (ModulatedConv2d's weights are 5-D and stay as they are)
        for p in [*g.parameters(), *d.parameters()]:
            if p.ndim == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    z = torch.randn(batch, scale.style_dim, device=rt.device)
    labels = torch.arange(batch, device=rt.device) % scale.classes

    def step():
        with autocast(rt, amp):
            fake, _ = g([z, z], labels, inject_index=3)
            loss = d(fake, labels).float().mean()
        loss.backward()

    return _median_ms(step, rt, repeats)

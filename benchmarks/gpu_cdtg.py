"""CDTG's training speed on one GPU, in one table: the FIR operations in every implementation, the G + D step
at batch 8 and 32 for every combination of operation implementations, and the paper configuration's iteration
(per phase, per kind of iteration, amortised, projected hours for 200,000 iterations, peak memory) with the
reference operations and with the defaults; then torch.profiler's top kernels.

    bash benchmarks/gpu_cdtg.sh                         (CUDA, about 3 minutes on an H200; nothing downloaded)
    bash benchmarks/gpu_cdtg.sh --device cpu --smoke    (tiny sizes on the CPU: checks that it runs)

Models are randomly initialised (no download); CLIP is open_clip's ViT-B-32 architecture without weights.
"""
import argparse
import json
import platform
import time

import torch

from CDTG import ops
from CDTG.profiling import (
    FIR_CASES,
    SMOKE,
    Scale,
    build_trainer,
    cycle_length,
    profile_step,
    time_fir,
    time_g_d,
    time_loop,
    top_kernels,
)
from CDTG.trainer import StepConfig
from common.distributed import setup
from common.options import add_device_arg

# (label, FIR implementation, modulated-convolution implementation, channels_last)
G_D_VARIANTS = [("reference ops (upstream's formulation)", "reference", "grouped", False),
                ("depthwise FIR, shared modconv", "depthwise", "shared", False),
                ("adjoint FIR, grouped modconv", "adjoint", "grouped", False),
                ("adjoint FIR, shared modconv", "adjoint", "shared", False),
                ("adjoint FIR, shared modconv, channels_last", "adjoint", "shared", True),
                ("triton FIR, shared modconv", "triton", "shared", False)]
FIR_VARIANTS = [("reference", False), ("depthwise", False), ("separable", False), ("adjoint", False),
                ("adjoint", True), ("triton", False)]


def get_args_parser():
    p = argparse.ArgumentParser("CDTG GPU speed table")
    add_device_arg(p)
    p.add_argument("--smoke", action="store_true", help="tiny models and tensors (a CPU dry run)")
    p.add_argument("--no-clip", action="store_true", help="the paper configuration without the CLIP term")
    p.add_argument("--cycles", type=int, default=1, help="regularisation cycles (16 iterations) per timed "
                                                         "setting")
    p.add_argument("--budget", type=float, default=240, help="seconds; parts that would not fit are skipped")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return p


class Operations:
    """Sets the operation implementations (and cuDNN's autotuner) for one measurement, then restores them."""

    def __init__(self, device_type: str, fir: str, modconv: str, benchmark: bool = True):
        self.device_type, self.fir, self.modconv, self.benchmark = device_type, fir, modconv, benchmark

    def __enter__(self):
        self.saved = (ops.set_fir_impl(self.fir, self.device_type),
                      ops.set_modconv_impl(self.modconv, self.device_type), torch.backends.cudnn.benchmark)
        torch.backends.cudnn.benchmark = self.benchmark
        return self

    def __exit__(self, *exc):
        ops.set_fir_impl(self.saved[0], self.device_type)
        ops.set_modconv_impl(self.saved[1], self.device_type)
        torch.backends.cudnn.benchmark = self.saved[2]


def main(args):
    started = time.monotonic()
    rt = setup(args.device)
    kind = rt.device.type
    scale = SMOKE if args.smoke else Scale()
    if args.no_clip:
        scale.clip_model = None
    where = torch.cuda.get_device_name(rt.device) if rt.cuda else f"CPU ({platform.processor() or 'unknown'})"
    print(f"# CDTG speed on {where}, torch {torch.__version__}")
    out = {"device": where, "torch": torch.__version__, "smoke": args.smoke}
    defaults = (ops._fir_impl.get(kind, "reference"), ops._modconv_impl.get(kind, "grouped"))

    print("\n## FIR operations ([1, 3, 3, 1] kernel, fp32), ms (median of up to 10 calls, at most 2 s each "
          "op)\n")
    print("| op | shape | implementation | forward + backward | forward + double backward |")
    print("|---|---|---|---:|---:|")
    out["fir"] = []
    shrink = 8 if args.smoke else 1
    for case in FIR_CASES:
        for impl, cl in FIR_VARIANTS:
            if impl == "triton" and not rt.cuda:
                continue  # a CUDA kernel (tests/test_cdtg_ops.py runs it in Triton's CPU interpreter)
            with Operations(kind, "reference", "grouped"):
                r = time_fir(impl, case, rt, repeats=3 if args.smoke else 10, shrink=shrink, channels_last=cl)
            out["fir"].append(r)
            print(f"| {case} | {r['shape']} | {r['impl']} | {r['fwd_bwd_ms']:.3f} | "
                  f"{r['fwd_double_bwd_ms']:.3f} |",
                  flush=True)

    print("\n## G + D forward and backward (no regularisers), ms (median of 5)\n")
    batches = (2, 4) if args.smoke else (8, 32)
    print(f"| operations | batch {batches[0]} | batch {batches[1]} |")
    print("|---|---:|---:|")
    out["g_d"] = []
    for label, fir, modconv, cl in G_D_VARIANTS:
        if fir == "triton" and not rt.cuda:
            continue
        with Operations(kind, fir, modconv):
            ms = [time_g_d(scale, rt, b, repeats=2 if args.smoke else 5, channels_last=cl) for b in batches]
        out["g_d"].append({"operations": label, "batches": list(batches), "ms": ms})
        print(f"| {label} | {ms[0]:.1f} | {ms[1]:.1f} |", flush=True)

    print(f"\n## One CDTG iteration, {scale.size} px, batch {scale.batch}, tail model {scale.tail_arch} at "
          f"{scale.tail_size} px, P on the {'full' if not scale.feature_pool else 'pooled'} layer3 map, CLIP "
          f"{scale.clip_model or 'off'}, AMP\n")
    out["iteration"] = {}
    # (label, FIR, modconv, cuDNN autotuner, torch.compile mode of the unregularised passes, seconds it may
    # take)
    settings = [("reference ops, cuDNN autotuner off", "reference", "grouped", False, None, 60),
                (f"defaults: {defaults[0]} FIR, {defaults[1]} modconv, cuDNN autotuner", *defaults, True,
                 None, 40),
                ("triton FIR, shared modconv, cuDNN autotuner", "triton", "shared", True, None, 40),
                ("defaults + compile (default mode)", *defaults, True, "default", 120),
                ("defaults + compile (reduce-overhead: CUDA graphs)", *defaults, True, "reduce-overhead",
                 120)]
    last = None
    for label, fir, modconv, bench, mode, needs in settings:
        if args.smoke and mode or fir == "triton" and not rt.cuda:
            continue  # compiling takes minutes on a CPU (tests/test_cdtg_train.py checks the compiled step)
        if time.monotonic() - started + needs > args.budget:
            print(f"### {label}\n\nskipped: under {needs} s of the --budget left\n")
            continue
        with Operations(kind, fir, modconv, bench):
            cfg = StepConfig(lambda_clip=0.0 if scale.clip_model is None else 1.0, compile=mode,
                             **({"d_reg_every": 4, "g_reg_every": 2} if args.smoke else {}))
            trainer, real, labels = build_trainer(scale, rt, cfg)
            loop = time_loop(trainer, real, labels, cycle_length(cfg) * args.cycles,
                             warmup=1 if args.smoke else 3 + 16 * bool(mode))
            prof = profile_step(trainer, real, labels, cycles=args.cycles, warmup=1)
            if (fir, modconv, bench, mode) == (*defaults, True, None):
                last = (trainer, real, labels, fir, modconv, bench)  # the profiler's subject
        out["iteration"][label] = {"loop": loop, "profile": prof}
        kinds = prof["kinds"]
        plain = kinds.get("plain", {}).get("ms", float("nan"))
        print(f"### {label}\n")
        print(f"amortised {1000 * loop['sec_per_it']:.1f} ms/iteration -> {loop['hours_200k']:.1f} h for "
              f"200,000 iterations; peak memory " + (f"{loop['peak_gib']:.2f} GiB" if loop["peak_gib"]
                                                     else "n/a (CPU)"))
        print("\n| kind of iteration | ms (median) | x plain | count |\n|---|---:|---:|---:|")
        for k, v in kinds.items():
            print(f"| {k} | {v['ms']:.1f} | {v['ms'] / plain:.2f} | {v['count']} |")
        print("\n| phase | ms per call (median) | calls | ms per iteration (amortised) "
              "|\n|---|---:|---:|---:|")
        for name, v in prof["phases"].items():
            print(f"| {name} | {v['ms_per_call']:.1f} | {v['calls']} | {v['ms_per_iteration']:.1f} |")
        print(flush=True)

    trainer, real, labels, fir, modconv, bench = last
    trainer.step(real, labels, 1)
    with Operations(kind, fir, modconv, bench):
        table = top_kernels(trainer, real, labels, iterations=2 if args.smoke else 4)
    out["top_kernels"] = table
    print("## torch.profiler, defaults, 4 iterations (0-3: one of each kind)\n\n```\n" + table + "\n```")
    out["seconds"] = time.monotonic() - started
    print(f"\ntotal {out['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())

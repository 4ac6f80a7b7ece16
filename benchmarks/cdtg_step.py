"""Speed and peak memory of one CDTG training iteration (CDTG/trainer.py) at a given resolution and batch.

    python benchmarks/cdtg_step.py --size 256 --batch 8                       (paper scale: ResNet-50 tail
                                                                              model, P on the full layer3 map,
                                                                              ViT-B-32)
    python benchmarks/cdtg_step.py --size 256 --batch 8 --no-amp              (fp32 on CUDA)
    python benchmarks/cdtg_step.py --size 32 --batch 8 --style-dim 64 --n-mlp 2 --max-channels 32 \\
        --label-dim 64 --tail-arch resnet18 --tail-size 64 --lambda-clip 0    (the synthetic config)

Models are randomly initialised (no download); the timed loop runs iterations 0..N-1, so lazy R1 (every 16)
and path length (every 4) are amortised as in training. Peak memory: CUDA max allocated, else the process's
peak RSS. --profile: each phase's time and torch.profiler's top operators (benchmarks/gpu_cdtg.sh gives the
whole table).
"""
import argparse
import json

import torch

from CDTG import ops
from CDTG.profiling import Scale, build_trainer, cycle_length, profile_step, time_loop, top_kernels
from CDTG.trainer import MODES, StepConfig
from common.clip import add_clip_args
from common.distributed import peak_memory, setup
from common.options import add_device_arg


def get_args_parser():
    p = argparse.ArgumentParser("CDTG training-step benchmark")
    p.add_argument("--size", type=int, default=256, help="GAN resolution")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--classes", type=int, default=12, help="tail classes (DIOR: 12)")
    p.add_argument("--mode", default="paper", choices=list(MODES))
    p.add_argument("--style-dim", type=int, default=512)
    p.add_argument("--n-mlp", type=int, default=8)
    p.add_argument("--channel-multiplier", type=int, default=2)
    p.add_argument("--max-channels", type=int, default=None)
    p.add_argument("--label-dim", type=int, default=512)
    p.add_argument("--tail-arch", default="resnet50", help="tail model (a torchvision ResNet)")
    p.add_argument("--tail-size", type=int, default=224, help="the tail model's input size")
    p.add_argument("--feature-pool", type=int, default=0, help="0 = P on the full layer3 map (upstream)")
    p.add_argument("--cached-features", action="store_true", help="features precomputed (train.py's cache)")
    p.add_argument("--lambda-clip", type=float, default=1.0, help="0: no CLIP")
    add_clip_args(p, "ViT-B-32", None, model_note=" (randomly initialised unless --clip-pretrained)",
                  pretrained_note=" (e.g. checkpoints/synth_clip_all.pt)")
    p.add_argument("--consistency-every", type=int, default=1,
                   help="the tail-model and CLIP terms on every k-th step (configs/synthetic.yaml: 2)")
    p.add_argument("--path-regularize", type=float, default=2.0,
                   help="path-length weight, every 4th step; 0: off (configs/synthetic.yaml)")
    p.add_argument("--reuse-fakes", action="store_true",
                   help="G's step first, D's step on its images (CDTG/train.py --reuse-fakes)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA")
    p.add_argument("--compile", default=None, help="torch.compile mode of the unregularised passes")
    p.add_argument("--warmup", type=int, default=4, help="untimed iterations")
    p.add_argument("--iters", type=int, default=32, help="timed iterations")
    p.add_argument("--profile", action="store_true",
                   help="also print each phase's time (synchronised) and torch.profiler's top operators")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--fir-impl", default=None, choices=list(ops.FIR_IMPLS),
                   help="upfirdn2d's formulation (default: the device's, CDTG/ops.py)")
    p.add_argument("--modconv-impl", default=None, choices=list(ops.MODCONV_IMPLS),
                   help="the modulated convolution's formulation (default: the device's)")
    add_device_arg(p)
    p.add_argument("--json", default=None, help="also append the result as a JSON line to this file")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device)
    if args.fir_impl:
        ops.set_fir_impl(args.fir_impl, rt.device.type)
    if args.modconv_impl:
        ops.set_modconv_impl(args.modconv_impl, rt.device.type)
    if rt.cuda:
        torch.backends.cudnn.benchmark = True
    scale = Scale(args.size, args.batch, args.classes, args.style_dim, args.n_mlp, args.channel_multiplier,
                  args.max_channels, args.label_dim, args.tail_arch, args.tail_size, args.feature_pool,
                  args.clip_model, args.clip_pretrained)
    cfg = StepConfig(mode=args.mode, lambda_clip=args.lambda_clip, amp=args.amp, compile=args.compile,
                     consistency_every=args.consistency_every, path_regularize=args.path_regularize,
                     reuse_fakes=args.reuse_fakes)
    trainer, real, labels = build_trainer(scale, rt, cfg)
    if args.cached_features:
        feat = trainer.features(real)
        step = trainer.step
        trainer.step = lambda x, y, i, feat_=None: step(x, y, i, feat)
    loop = time_loop(trainer, real, labels, args.iters, warmup=args.warmup)
    peak, memory, device = peak_memory(rt)
    n = lambda m: sum(p.numel() for p in m.parameters())
    result = {"size": args.size, "batch": args.batch, "mode": args.mode, "amp": bool(args.amp and rt.cuda),
              "fir": ops._fir_impl.get(rt.device.type), "modconv": ops._modconv_impl.get(rt.device.type),
              "tail": f"{args.tail_arch}@{args.tail_size}",
              "clip": args.clip_model if trainer.clip is not None else None,
              "feature_pool": args.feature_pool, "cached_features": args.cached_features,
              "compile": args.compile, "device": device, "it_per_s": 1 / loop["sec_per_it"],
              "sec_per_it": loop["sec_per_it"], "peak_gib": peak,
              "memory": memory, "params_m": {"G": n(trainer.g) / 1e6, "D": n(trainer.d) / 1e6,
                                             "P": n(trainer.proj) / 1e6}}
    print(f"{args.size} px, batch {args.batch}, {args.mode} mode, amp {result['amp']}, {device}: "
          f"{result['it_per_s']:.2f} it/s ({1000 * result['sec_per_it']:.0f} ms/it), {memory} {peak:.2f} GiB")
    if args.profile:
        prof = profile_step(trainer, real, labels, cycles=max(1, args.iters // cycle_length(cfg)), warmup=0)
        result["profile"] = prof
        print("\nkind of iteration: " + ", ".join(f"{k} {v['ms']:.1f} ms" for k, v in prof["kinds"].items()))
        print("phase: ms per call (median), ms per iteration (amortised)")
        for name, v in prof["phases"].items():
            print(f"  {name:12s} {v['ms_per_call']:8.1f} {v['ms_per_iteration']:8.1f}")
        print(top_kernels(trainer, real, labels, iterations=4))
    print(json.dumps({k: v for k, v in result.items() if k != "profile"}))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

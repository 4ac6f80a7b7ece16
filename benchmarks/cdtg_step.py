"""Speed and peak memory of one CDTG training iteration (CDTG/trainer.py) at a given resolution and batch.

    python benchmarks/cdtg_step.py --size 256 --batch 8                       (paper scale: ResNet-50 tail model,
                                                                              P on the full layer3 map, ViT-B-32)
    python benchmarks/cdtg_step.py --size 256 --batch 8 --no-amp              (fp32 on CUDA)
    python benchmarks/cdtg_step.py --size 32 --batch 8 --style-dim 64 --n-mlp 2 --max-channels 32 \\
        --label-dim 64 --tail-arch resnet18 --tail-size 64 --lambda-clip 0    (the synthetic config)

Models are randomly initialised (no download); the timed loop runs iterations 0..N-1, so lazy R1 (every 16) and
path length (every 4) are amortised as in training. Peak memory: CUDA max allocated, else the process's peak RSS.
"""
import argparse
import json
import resource
import time

import torch

from common.backbones import build_feature_resnet
from common.clip import encode_text_prompts, load_clip
from common.distributed import setup
from common.options import add_device_arg
from CDTG.conditioning import FeatureProjection, TailClassifier
from CDTG.model import Discriminator, Generator
from CDTG.trainer import MODES, CDTGTrainer, StepConfig


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
    p.add_argument("--from-rgb-kernel", type=int, default=1, choices=[1, 3], help="D's FromRGB: 1 TGN, 3 rosinality")
    p.add_argument("--tail-arch", default="resnet50", help="tail model (a torchvision ResNet)")
    p.add_argument("--tail-size", type=int, default=224, help="the tail model's input size")
    p.add_argument("--feature-pool", type=int, default=0, help="0 = P on the full layer3 map (upstream)")
    p.add_argument("--cached-features", action="store_true", help="features precomputed (train.py's cache)")
    p.add_argument("--lambda-clip", type=float, default=1.0, help="0: no CLIP")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip model (randomly initialised unless "
                                                             "--clip-pretrained)")
    p.add_argument("--clip-pretrained", default=None, help="tag or file (e.g. checkpoints/synth_clip_all.pt)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="mixed precision on CUDA")
    p.add_argument("--warmup", type=int, default=4, help="untimed iterations")
    p.add_argument("--iters", type=int, default=32, help="timed iterations")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_device_arg(p)
    p.add_argument("--json", default=None, help="also append the result as a JSON line to this file")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device)
    torch.manual_seed(0)
    k = args.classes
    tail = TailClassifier(build_feature_resnet(args.tail_arch, k, "none", verbose=False),
                          {"img_size": args.tail_size, "norm": "half"}).to(rt.device)
    g = Generator(args.size, args.style_dim, args.n_mlp, num_classes=k, channel_multiplier=args.channel_multiplier,
                  max_channels=args.max_channels)
    d = Discriminator(args.size, num_classes=k, channel_multiplier=args.channel_multiplier, label_dim=args.label_dim,
                      max_channels=args.max_channels, from_rgb_kernel=args.from_rgb_kernel)
    proj = FeatureProjection(tail.feature_shape(), args.style_dim, args.feature_pool)
    g, d, proj = g.to(rt.device), d.to(rt.device), proj.to(rt.device)
    clip = text = None
    if args.lambda_clip > 0:
        clip = load_clip(args.clip_model, args.clip_pretrained, rt.device)
        text = encode_text_prompts(clip, [f"a photo of a class {i}" for i in range(k)])
    cfg = StepConfig(mode=args.mode, lambda_clip=args.lambda_clip, amp=args.amp)
    trainer = CDTGTrainer(g, d, proj, tail, rt, cfg, clip, text)
    real = torch.rand(args.batch, 3, args.size, args.size, device=rt.device) * 2 - 1
    labels = torch.arange(args.batch, device=rt.device) % k
    feat = trainer.features(real) if args.cached_features else None

    def sync():
        if rt.cuda:
            torch.cuda.synchronize()

    for i in range(args.warmup):
        trainer.step(real, labels, i + 1, feat)  # skips iteration 0's regularisers: they run in the timed loop
    sync()
    if rt.cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    cpu_start = time.process_time()
    for i in range(args.iters):
        trainer.step(real, labels, i, feat)
    sync()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    if rt.cuda:
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
        device = torch.cuda.get_device_name()
        memory = "peak CUDA memory allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
        device = f"CPU, {torch.get_num_threads()} threads"
        memory = "peak process RSS"
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result = {"size": args.size, "batch": args.batch, "mode": args.mode, "amp": bool(args.amp and rt.cuda),
              "tail": f"{args.tail_arch}@{args.tail_size}", "clip": args.clip_model if clip is not None else None,
              "feature_pool": args.feature_pool, "cached_features": args.cached_features, "device": device,
              "it_per_s": args.iters / seconds, "sec_per_it": seconds / args.iters,
              "cpu_sec_per_it": cpu_seconds / args.iters, "peak_gib": peak, "memory": memory,
              "params_m": {"G": n(g) / 1e6, "D": n(d) / 1e6, "P": n(proj) / 1e6}}
    print(f"{args.size} px, batch {args.batch}, {args.mode} mode, amp {result['amp']}, {device}: "
          f"{result['it_per_s']:.2f} it/s ({1000 * result['sec_per_it']:.0f} ms/it, CPU time "
          f"{1000 * result['cpu_sec_per_it']:.0f} ms/it), {memory} {peak:.2f} GiB")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

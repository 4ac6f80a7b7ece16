"""Training throughput (images/s) and peak memory of DSVA (CLIP ViT image tower + attribute heads).

    python benchmarks/dsva_throughput.py                 (ViT-B-32 at 224 px, batch 24 = 8 ways x 3 shots)
    python benchmarks/dsva_throughput.py --batch-size 128 --no-amp

The CLIP tower is randomly initialised (open_clip's ViT-B-32 architecture, no download); the inputs are random
tensors, the loss is DSVA's (DSVA/losses.py) with every parameter trained (the phase after --pretrain-epoch).
"""
import argparse
import json
import time

import torch

from common.clip import load_clip, register_model_config
from common.distributed import autocast, grad_scaler, peak_memory, setup
from common.options import add_device_arg
from DSVA.losses import LossWeights, dsva_loss
from DSVA.model import DSVA

TINY = "dsva-bench-tiny"  # --tiny: a 2-layer ViT at 32 px, for smoke runs
TINY_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                            "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def get_args_parser():
    p = argparse.ArgumentParser("DSVA training throughput")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip ViT (randomly initialised)")
    p.add_argument("--tiny", action="store_true", help="a tiny ViT at 32 px instead of --clip-model")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--attributes", type=int, default=100, help="attributes (the vocabulary's 100)")
    p.add_argument("--classes", type=int, default=60, help="seen classes (RSSDIVCS 60/10: 60)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="autocast on CUDA")
    p.add_argument("--threads", type=int, default=None)
    add_device_arg(p)
    p.add_argument("--json", default=None, help="also append the result as a JSON line to this file")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device)
    torch.manual_seed(0)
    if args.tiny:
        register_model_config(TINY, TINY_CFG)
    bundle = load_clip(TINY if args.tiny else args.clip_model, None)
    size = bundle.image_size
    model = DSVA(bundle.model.visual, args.attributes).to(rt.device)
    del bundle
    class_att = torch.rand(args.attributes, args.classes, device=rt.device)
    x = torch.randn(args.batch_size, 3, size, size, device=rt.device)
    target = torch.arange(args.batch_size, device=rt.device) % args.classes
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    scaler = grad_scaler(rt, args.amp)
    weights = LossWeights()
    model.train()

    def step():
        with autocast(rt, args.amp):
            out = model(x, class_att)
            loss, _ = dsva_loss(out, target, class_att.T[target], model, weights, concentrate=True)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(args.warmup):
        step()
    if rt.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if rt.cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak, memory, where = peak_memory(rt)
    name = TINY if args.tiny else args.clip_model
    result = {"model": name, "img_size": size, "batch": args.batch_size, "amp": bool(args.amp and rt.cuda),
              "device": where, "images_per_s": args.batch_size * args.steps / dt, "peak_gib": peak,
              "memory": memory}
    print(f"DSVA {name} {size}px batch {args.batch_size} | {where} | amp={result['amp']}: "
          f"{result['images_per_s']:.1f} images/s; peak memory {peak:.2f} GiB ({memory})")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

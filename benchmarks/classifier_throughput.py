"""Training throughput (images/s) and peak memory of a classifier, on in-memory tensors or on image files.

    python benchmarks/classifier_throughput.py --model resnet50 --img-size 224 --batch-size 32      (tensors)
    python benchmarks/classifier_throughput.py --source files --data-root data/synthetic/processed --workers 8
    python benchmarks/classifier_throughput.py --source files --data-root ... --loader-only   (decoding alone)

On CUDA, AMP and channels_last are on by default (the training scripts' defaults). Peak memory is the CUDA
allocator's peak on a GPU and the process's maximum resident set on the CPU.
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from common.backbones import build_classifier
from common.datasets import ImageList
from common.distributed import autocast, grad_scaler, peak_memory, setup
from common.engine import to_device
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.options import add_device_arg, add_loader_args
from common.transforms import classification


def get_args_parser():
    p = argparse.ArgumentParser("Classifier training throughput")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=20)
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--source", default="tensors", choices=["tensors", "files"])
    p.add_argument("--data-root", default=None, help="processed data root, for --source files")
    add_loader_args(p, on_corrupt=False, eval_batch_size=False)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-backend", default="inductor", help="'eager': tracing only")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode (default, reduce-overhead, max-autotune-no-cudagraphs, ...)")
    p.add_argument("--loader-only", action="store_true", help="time the data loader alone (no model)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also append the result as a JSON line to this file")
    add_device_arg(p)
    return p


def batches(args, rt):
    if args.source == "tensors":
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
        y = torch.randint(0, args.num_classes, (args.batch_size,))
        while True:
            yield x, y
    if not args.data_root:
        raise UserError("--source files needs --data-root (a processed data root)")
    n = len(read_classes(args.data_root)["names"])
    ds = ImageList(os.path.join(args.data_root, "train"), [anno_path(args.data_root, "train")],
                   classification(args.img_size, True), num_classes=n)
    # make_loader's loader, but one endless pass: a small set would otherwise restart its workers every epoch
    yield from DataLoader(ds, batch_size=args.batch_size, sampler=RandomSampler(ds, num_samples=2 ** 31 - 1),
                          num_workers=args.workers, pin_memory=rt.cuda)


def compile_report() -> dict:
    """What torch.compile did during the warm-up: graphs compiled, graph breaks and their reasons,
    recompilations (any of which keeps eager code in the timed steps)."""
    from torch._dynamo.utils import counters
    breaks = dict(counters["graph_break"])
    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": sum(breaks.values()),
            "break_reasons": list(breaks)[:5], "recompiles": int(counters["recompiles"].total()
                                                                  if hasattr(counters["recompiles"], "total")
                                                                  else sum(counters["recompiles"].values()))}


@cli
def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device)
    n_classes = len(read_classes(args.data_root)["names"]) if args.source == "files" else args.num_classes
    data = batches(args, rt)
    if args.loader_only:
        def step():
            x, y = next(data)
            x.to(rt.device, non_blocking=True)
            return len(y)
    else:
        model = build_classifier(args.model, n_classes, "none", verbose=False).to(rt.device)
        if args.channels_last and rt.cuda:
            model = model.to(memory_format=torch.channels_last)
        net = (torch.compile(model, backend=args.compile_backend, mode=args.compile_mode) if args.compile
               else model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        scaler = grad_scaler(rt, args.amp)
        model.train()

        def step():
            x, y = next(data)
            x, y = to_device(x, rt, args.channels_last), y.to(rt.device, non_blocking=True)
            with autocast(rt, args.amp):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return len(y)

    warm_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if rt.cuda:
        torch.cuda.synchronize()
    warmup_seconds = time.perf_counter() - warm_start
    compiled = compile_report() if args.compile else None
    if rt.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, seen = time.perf_counter(), 0
    for _ in range(args.steps):
        seen += step()
    if rt.cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak, memory, where = peak_memory(rt)
    what = "loader only" if args.loader_only else args.model
    print(f"{what} {args.img_size}px batch {args.batch_size} on {args.source} | {where} | "
          f"amp={args.amp and rt.cuda} channels_last={args.channels_last and rt.cuda} compile={args.compile}")
    print(f"{'loader' if args.loader_only else 'train'} throughput: {seen / dt:.1f} images/s "
          f"({args.steps} steps, {dt:.1f} s, after {args.warmup} warm-up steps in {warmup_seconds:.1f} s); "
          f"peak memory: {peak:.2f} GiB ({memory})")
    if compiled is not None:
        print(f"compile: {compiled}")
    if args.json:
        result = {"model": what, "img_size": args.img_size, "batch": args.batch_size, "source": args.source,
                  "workers": args.workers, "amp": bool(args.amp and rt.cuda),
                  "channels_last": bool(args.channels_last and rt.cuda), "compile": args.compile,
                  "device": where, "images_per_s": seen / dt, "peak_gib": peak, "memory": memory,
                  "warmup_seconds": warmup_seconds, "compile_mode": args.compile_mode, "compiled": compiled}
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

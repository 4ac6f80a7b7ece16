"""Generate tail-class images with a trained CDTG generator.

    python CDTG/generate.py --weights runs/cdtg/dior/train/generator.pt --r 0.05 --n-per-class 7000
    python CDTG/generate.py --weights ... --classes 3 storage-tank --n-per-class 100 --name try

For each requested tail class, the real training images of the class are visited in a seeded shuffled order
(again and again if needed); each gives the tail model's layer3 feature, and --per-real images are generated
from it, each with new noise: z = r * n + (1 - r) * P(feature) (two such latents, style-mixed, as upstream).
Each image's random numbers come from (--seed, class, image index), so an image does not depend on which
others are drawn with it. Writes <out>/<original class id>/<n>.jpg (each file whole: written under a temporary
name, then renamed), then sources.csv (which real image each image came from), grid.png (the first images of
each class) and, last, manifest.json (checkpoint, r, counts, class ids and names). An interrupted run is
continued by the same command: the images there are kept and the others drawn, as the uninterrupted run would
have drawn them; other settings than the folder's are refused, and a finished folder is left as it is.
CDTG/expand.py turns the folder into a training list.
"""
import argparse
import csv
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import yaml
from PIL import Image
from torchvision.utils import save_image

from CDTG import generator_file
from CDTG.conditioning import load_tail_model
from CDTG.manifest import MANIFEST_FORMAT, write_manifest
from CDTG.sampling import generate_class, real_images_by_class
from common import errors, finished, rundir
from common.config import add_config_arg, parse_args
from common.distributed import setup
from common.errors import UserError, cli
from common.layout import read_classes
from common.options import add_device_arg, add_loader_args, add_output_arg
from common.split import optional_split


def get_args_parser():
    p = argparse.ArgumentParser("CDTG generation")
    add_config_arg(p)
    p.add_argument("--weights", "--ckpt", dest="weights", default=None,
                   help="generator.pt (or ckpt_last.pt) written by CDTG/train.py, or the original authors' "
                        "200000.pt (needs --data-root and --tail-model)")
    p.add_argument("--r", type=float, default=0.05, help="noise share at generation: z = r n + (1 - r) "
                                                         "P(feature)")
    p.add_argument("--n-per-class", type=int, default=7000,
                   help="images per tail class (the README's released result: 7000; upstream's code: 2000)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="original class ids or names of tail classes to generate (default: every tail class)")
    p.add_argument("--per-real", type=int, default=5, help="images generated per visit of a real image")
    p.add_argument("--batch-size", type=int, default=64, help="images per generator forward pass")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="< 1 pulls w towards the class's mean w (over noise-only latents); upstream: 1")
    p.add_argument("--mixing", type=float, default=None, help="style mixing (default: the training run's)")
    p.add_argument("--format", default="jpg", choices=["jpg", "png"], help="image files (upstream: JPEG)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--grid-cols", type=int, default=8, help="images per class in grid.png")
    p.add_argument("--data-root", default=None, help="real images (default: the training run's data root)")
    p.add_argument("--tail-model", default=None, help="tail model file (default: the training run's)")
    add_loader_args(p, on_corrupt=False, eval_batch_size=False, workers_help="threads writing image files")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA")
    g = p.add_argument_group("run")
    add_output_arg(g, help="output folder (default: runs/cdtg_generate/<name>); an interrupted one is "
                           "continued by the same command")
    g.add_argument("--name", default="default", help="run name under runs/cdtg_generate/")
    g.add_argument("--seed", type=int, default=0)
    add_device_arg(g)
    return p


# ------------------------------------------------------------------------------------------------ loading


def check_same_generator(args) -> None:
    """An output folder is continued only with the generator file it was started with, unchanged."""
    args_path = os.path.join(args.output_dir or os.path.join("runs", args.stage, args.name), "args.yaml")
    if not os.path.isfile(args_path):
        return
    with open(args_path, encoding="utf-8") as f:
        recorded = yaml.safe_load(f) or {}
    before = recorded.get("weights_file") if isinstance(recorded, dict) else None
    if before and recorded.get("weights") == args.weights and before != args.weights_file:
        raise UserError(f"{args.weights} has changed since {os.path.dirname(args_path)} was started from it "
                        f"({before}, now {args.weights_file}); its images would mix two generators: choose "
                        f"another --name or --output-dir")


def select_classes(requested, meta: dict) -> list:
    """Tail labels (0..K-1) of the requested original ids or names, in the order given (default: all)."""
    ids, names = meta["classes"], meta["names"]
    if not requested:
        return list(range(len(ids)))
    out = []
    for item in requested:
        if item.lstrip("-").isdigit() and int(item) in ids:
            k = ids.index(int(item))
        elif item in names:
            k = names.index(item)
        else:
            raise UserError(f"--classes: '{item}' is not a tail class of this generator; tail classes are "
                            + ", ".join(f"{c} ({n})" for c, n in zip(ids, names)))
        if k not in out:
            out.append(k)
    return out


# Settings that may differ when a folder is continued: they change how fast images come, not which
MAY_CHANGE = (*rundir.MAY_CHANGE_ON_RESUME, "batch_size", "weights_file")
TMP_PREFIX = ".tmp_"


def image_name(index: int, ext: str) -> str:
    return f"{index:05d}.{ext}"


def images_done(folder: str, n: int, ext: str) -> set:
    """Indices of the whole images in `folder` (a write is renamed into place when complete); deletes the
    temporary files of writes that a killed process left."""
    if not os.path.isdir(folder):
        return set()
    names = set(os.listdir(folder))
    for name in names:
        if name.startswith(TMP_PREFIX):
            os.remove(os.path.join(folder, name))
    return {i for i in range(n) if image_name(i, ext) in names}


class ImageWriter:
    """Writes uint8 images on a few threads (PIL encoding releases the GIL), with a bounded queue; each file
    under a temporary name, renamed when complete."""

    def __init__(self, ext: str, quality: int, threads: int, max_pending: int = 512):
        self.ext, self.quality = ext, quality
        self.options = {"format": "JPEG", "quality": quality} if ext == "jpg" else {"format": "PNG"}
        self.pool = ThreadPoolExecutor(max(1, threads))
        self.pending = deque()
        self.max_pending = max_pending

    def _write(self, pixels: np.ndarray, path: str) -> None:
        tmp = os.path.join(os.path.dirname(path), TMP_PREFIX + os.path.basename(path))
        Image.fromarray(pixels).save(tmp, **self.options)
        os.replace(tmp, path)

    def save(self, folder: str, index: int, pixels: np.ndarray) -> None:
        self.pending.append(self.pool.submit(self._write, pixels,
                                             os.path.join(folder, image_name(index, self.ext))))
        while len(self.pending) > self.max_pending:
            self.pending.popleft().result()

    def close(self) -> None:
        while self.pending:
            self.pending.popleft().result()  # re-raises a failed write
        self.pool.shutdown()

    def drain(self) -> None:
        """On Ctrl-C or an error: finish the writes of the images drawn so far (a failed one is left out)."""
        while self.pending:
            self.pending.popleft().exception()
        self.pool.shutdown()


def write_sources(out: str, rows: list) -> None:
    with open(os.path.join(out, "sources.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class_id", "real_image"])
        writer.writerows(rows)


@cli
def main(args):
    if not args.weights:
        raise UserError("--weights is required: the generator.pt of a CDTG/train.py run")
    if not 0 <= args.r <= 1:
        raise UserError(f"--r must be in [0, 1], got {args.r}")
    for flag in ("n_per_class", "per_real", "batch_size"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    g_state, p_state, meta = generator_file.read(args.weights, args.data_root)
    labels = select_classes(args.classes, meta)
    root = args.data_root or meta["data_root"]
    info = read_classes(root)
    if info["dataset"] != meta["dataset"]:
        raise UserError(f"data root {root} holds {info['dataset']}, but the generator was trained on "
                        f"{meta['dataset']}; pass its --data-root")
    names = info["names"]
    for cid, name in zip(meta["classes"], meta["names"]):
        if not 0 <= cid < len(names) or names[cid] != name:
            found = f"'{names[cid]}'" if 0 <= cid < len(names) else "no such class"
            raise UserError(f"data root {root} has {found} as class {cid}, but the generator's class {cid} "
                            f"is '{name}'; pass the data root it was trained on (--data-root)")
    reals = real_images_by_class(root, {k: meta["classes"][k] for k in labels}, meta["generator"]["size"])
    rt = setup(args.device)
    tail_path = args.tail_model or meta["tail_model"]
    if not tail_path:
        raise UserError(f"{args.weights} names no tail model (the original's files do not); pass "
                        "--tail-model")
    tail = load_tail_model(tail_path, rt.device, meta["tail_input_size"], optional_split(None, root))
    if list(tail.meta["classes"]) != list(meta["classes"]):
        raise UserError(f"tail model {tail_path} is of classes {tail.meta['classes']}, the generator of "
                        f"{meta['classes']}; pass the tail model it was trained with")
    g, proj = generator_file.build(meta, g_state, p_state, rt.device, tail.feature_shape(), args.seed)
    args.resume = args.overwrite = False
    args.weights_file = "sha1 " + finished.file_stamps(args.weights).popitem()[1]
    check_same_generator(args)
    case = rundir.prepare_output(args, "manifest.json", MAY_CHANGE)
    out = args.output_dir
    if case == "done":
        print(f"{out} is finished (manifest.json): its {args.n_per_class} images per class are there; "
              "nothing to do")
        return
    errors.on_interrupt(lambda: f"interrupted; the images in {out} are kept: run the same command again to "
                                f"continue")
    mixing = meta["mixing"] if args.mixing is None else args.mixing
    print(f"{'continuing' if case == 'continue' else 'generating'} {args.n_per_class} images for each of "
          f"{len(labels)} tail classes at r = {args.r} into {out}")

    writer = ImageWriter(args.format, args.jpeg_quality, args.workers)
    grids, entries, sources = [], [], []
    started = time.time()
    try:
        for k in labels:
            cid, name = meta["classes"][k], meta["names"][k]
            folder = os.path.join(out, str(cid))
            done = images_done(folder, args.n_per_class, args.format)
            os.makedirs(folder, exist_ok=True)
            count, first, real_images = generate_class(
                k, reals[k], g, proj, tail, args, rt, mixing, meta["mixing_rule"],
                lambda i, pixels, source, folder=folder: writer.save(folder, i, pixels), done=done)
            grids.append(first)
            sources += [(os.path.join(str(cid), image_name(i, args.format)), cid, real)
                        for i, real in enumerate(real_images)]
            entries.append({"tail_label": k, "class_id": cid, "name": name, "folder": str(cid),
                            "count": count, "real_images": len(reals[k])})
            kept = f" ({len(done)} kept from before)" if done else ""
            print(f"  {cid} {name}: {count} images from {len(reals[k])} real images{kept}")
        writer.close()
    except BaseException:
        writer.drain()
        raise
    write_sources(out, sources)
    cols = args.grid_cols
    grid = torch.cat([torch.cat([f, f.new_zeros(cols - len(f), *f.shape[1:])]) for f in grids])
    save_image(grid, os.path.join(out, "grid.png"), nrow=cols, normalize=True, value_range=(-1, 1))
    manifest = {"format": MANIFEST_FORMAT, "checkpoint": args.weights, "iteration": meta.get("iteration"),
                "mode": meta.get("mode"), "dataset": meta["dataset"], "data_root": root,
                "tail_model": tail_path, "clip": meta.get("clip"), "r": args.r,
                "per_real": args.per_real, "n_per_class": args.n_per_class, "truncation": args.truncation,
                "mixing": mixing, "mixing_rule": meta["mixing_rule"], "seed": args.seed,
                "size": meta["generator"]["size"], "image_format": args.format, "classes": entries,
                "seconds": round(time.time() - started, 1)}
    write_manifest(out, manifest)  # last: it marks the folder finished
    print(f"wrote {sum(e['count'] for e in entries)} images, {os.path.join(out, 'manifest.json')} and "
          "grid.png")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "cdtg_generate"))

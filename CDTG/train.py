"""Train CDTG: the class-conditional SWAGAN on the tail classes, conditioned on the distilled tail model's
layer3 features and kept class-consistent by the tail classifier and CLIP text prompts.

    python CDTG/train.py --config configs/dior.yaml --tail-model runs/kmdn/dior/distill/tail_model.pt
    python CDTG/train.py ... --init-weights swagan_resisc45_200000.pt  (fine-tune an unconditional SWAGAN)
    python CDTG/train.py ... --resume                                (continue <run>/ckpt_last.pt exactly)
    torchrun --nproc_per_node 4 CDTG/train.py ...                    (DDP; --batch-size is per process)

--mode paper (default): L_G = adv + lambda_cls * CE(M_T(G), y) + lambda_clip * CE(CLIP logits, y), P trained.
--mode code: as released, only the adversarial loss trains G, the consistency terms are logged, P is a fixed
random projection (but saved, so generation uses the same one).
Writes <run>/ckpt_last.pt (everything needed to resume), samples/<iter>.png (one row per tail class),
metrics.jsonl, and generator.pt (g_ema, P, class ids and names, sizes: what CDTG/generate.py reads).
"""
import argparse
import copy
import os
import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm import tqdm

from CDTG import generator_file, original
from CDTG.augment import OPERATIONS, AdaptiveAugment
from CDTG.batches import BalancedBatches, ClassGroupedBatches, EndlessBatches, Indexed
from CDTG.conditioning import FeatureProjection, check_tail_classes, feature_cache, load_tail_model
from CDTG.model import build_models, check_size, model_config
from CDTG.sampling import real_images_by_class
from CDTG.tracking import QualityTracker
from CDTG.trainer import MODES, CDTGTrainer, StepConfig, round_to_half
from common import checkpoint, rundir
from common.clip import add_clip_args, encode_text_prompts, load_clip, prompts_for
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import all_reduce_sum, cleanup, setup
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.options import add_loader_args
from common.plots import quality_curves_png
from common.resume import LastCheckpoint, save_last
from common.split import label_map, load_split
from common.transforms import classification


def get_args_parser():
    p = argparse.ArgumentParser("CDTG training (conditional SWAGAN on the tail classes)")
    add_config_arg(p)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="processed data root (classes.json, anno/, train/)")
    g.add_argument("--split", default=None, help="split.json (default: <root>/split.json); its tail list "
                                                 "orders the labels")
    g.add_argument("--tail-model", default=None,
                   help="distilled KMDN tail model (runs/kmdn/<dataset>/distill/tail_model.pt)")
    g.add_argument("--tail-input", default="model", choices=["model", "gan"],
                   help="size the tail model sees: 'model' = its own img_size (images resized), 'gan' = "
                        "--size (upstream fed the 256 px GAN images to a 224 px model)")
    g.add_argument("--size", type=int, default=256, help="image size of the GAN (power of two, 16..1024)")
    g.add_argument("--class-balanced", action="store_true",
                   help="draw the real images of a batch class-balanced (with replacement) instead of an "
                        "endless shuffle (upstream: the shuffle, so a class is trained in proportion to its "
                        "images)")
    g.add_argument("--class-groups", action="store_true",
                   help="batches of class groups (uniform over classes): each group of D's minibatch-stddev "
                        "holds one class, so D sees the spread within a class (not in the paper; overrides "
                        "--class-balanced)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=False,
                   help="random horizontal flips of real images (upstream: off, the flip is commented out)")
    add_loader_args(g, eval_batch_size=False)
    g = p.add_argument_group("model")
    g.add_argument("--style-dim", type=int, default=512, help="latent size (z and w)")
    g.add_argument("--n-mlp", type=int, default=8, help="layers of the mapping network")
    g.add_argument("--channel-multiplier", type=int, default=2)
    g.add_argument("--max-channels", type=int, default=None, help="cap on feature channels (tiny models)")
    g.add_argument("--label-dim", type=int, default=512, help="D's class-embedding size")
    g.add_argument("--from-rgb-kernel", type=int, default=1, choices=[1, 3],
                   help="D's FromRGB convolution: 1 = TGN's and SatConcepts' 1x1, 3 = rosinality's current "
                        "3x3 (an --init-weights file of the other kernel is converted exactly where "
                        "possible)")
    g.add_argument("--feature-pool", type=int, default=0,
                   help="adaptive-average-pool the layer3 map to NxN before P; 0 = the full map (upstream: "
                        "1024x16x16 = 262,144 inputs, a 134M-parameter P)")
    g.add_argument("--normalise-p", action="store_true",
                   help="rescale P(feature) to the noise's expected norm, sqrt(style dim), so that r stays "
                        "the noise share however P grows (not in the paper: its P is a plain Linear)")
    g.add_argument("--freeze-p", action="store_true",
                   help="keep P at its random initialisation in --mode paper (the paper trains it)")
    g.add_argument("--init-weights", "--ckpt", dest="init_weights", default=None,
                   help="initial weights: TGN's 200000.pt, an unconditional SWAGAN checkpoint (rosinality or "
                        "SatConcepts layout: class embeddings and D's fusion conv stay at init) or a "
                        "CDTG/train.py one; every tensor of the file must land in the model; the iteration "
                        "starts at 0")
    g.add_argument("--continue-original", action="store_true",
                   help="with --init-weights of an original file: also restore its iteration (from the file "
                        "name, as the original), g_optim, d_optim and ada_aug_p")
    g = p.add_argument_group("conditioning")
    g.add_argument("--r-train", type=float, default=0.8, help="noise share: z = r n + (1 - r) P(feature)")
    g.add_argument("--mixing", type=float, default=0.9, help="style-mixing setting")
    g.add_argument("--mixing-rule", default="always", choices=["always", "probabilistic"],
                   help="'always' (TGN): two latents whenever mixing > 0; 'probabilistic' (rosinality): two "
                        "with probability --mixing")
    g = p.add_argument_group("losses")
    g.add_argument("--mode", default="paper", choices=list(MODES),
                   help="paper: consistency terms back-propagated and P trained; code: as released (terms "
                        "only logged, P fixed random, tail model in train mode, CLIP weights rounded to "
                        "float16 and its term on wrapped bytes with CE on probabilities, path-length mean "
                        "not detached)")
    g.add_argument("--lambda-cls", type=float, default=1.0, help="weight of CE(tail model(G), y)")
    g.add_argument("--lambda-clip", type=float, default=1.0,
                   help="weight of the CLIP text loss; 0 skips CLIP")
    g.add_argument("--lambda-ms", type=float, default=0.0,
                   help="weight of a mode-seeking term (MSGAN; not in the paper): half of each generator "
                        "batch is drawn twice with other noise and 1 / (image distance / latent distance) is "
                        "minimised; 0 = off")
    g.add_argument("--lambda-feat", type=float, default=0.0,
                   help="weight of a feature-reconstruction term (not in the paper): the tail model's layer3 "
                        "features of each generated image pulled towards those of the real image whose "
                        "features conditioned it (squared distance relative to the real features' size), "
                        "computed with the consistency terms; 0 = off")
    g.add_argument("--lambda-rec", type=float, default=0.0,
                   help="weight of a reconstruction term (not in the paper): mean |blur(G) - blur(x)| "
                        "between each generated image and the real image whose features conditioned it "
                        "([1, 2, 1] blur; --no-rec-blur: mean |G - x|), back-propagated in both --mode "
                        "values; 0 = off")
    g.add_argument("--rec-blur", action=argparse.BooleanOptionalAction, default=True,
                   help="--lambda-rec compares both images through the [1, 2, 1] blur (default); "
                        "--no-rec-blur compares them as generated, which also ties the frequencies the blur "
                        "removes (a 2-pixel checkerboard or a 4-pixel lattice)")
    g.add_argument("--lambda-lattice", type=float, default=0.0,
                   help="weight of a lattice penalty (not in the paper): the mean share of each generated "
                        "image's spectral power at the periods of 2 and 4 pixels (a checkerboard, the "
                        "lattice of strided up-sampling; real images hold a few per mille there), as "
                        "CDTG/evaluate.py reports it; 0 = off")
    g.add_argument("--lambda-spectrum", type=float, default=0.0,
                   help="weight of a spectrum term (not in the paper): at every frequency with a period of 8 "
                        "pixels or less, the generated batch's mean share of spectral power above twice the "
                        "real images' (a running mean over the real batches), summed: peaks the real images "
                        "lack, wherever they sit; 0 = off")
    g.add_argument("--reuse-fakes", action="store_true",
                   help="G's step first, then D's step on the images G's step generated (both updates from "
                        "the same state): one generator pass fewer per iteration (not in the paper: D's step "
                        "first, on images of its own)")
    g.add_argument("--consistency-lowpass", action="store_true",
                   help="the tail model and CLIP see G's images through a [1, 2, 1] blur, so their gradients "
                        "hold no 2-pixel checkerboard (not in the paper: they see the images as generated)")
    g.add_argument("--consistency-every", type=int, default=1,
                   help="--mode paper: the tail-model and CLIP terms on every k-th generator step only, "
                        "weighted k (lazy, as R1; saves their forward and backward on the other steps; "
                        "not in the paper: 1)")
    add_clip_args(g, "ViT-B-32", "openai", "a photo of a {name}", " (upstream: OpenAI ViT-B/32)")
    g.add_argument("--clip-classes", default="tail", choices=["tail", "all"],
                   help="the prompts L_clip's softmax runs over: the tail classes' (the paper) or every "
                        "class's, head classes too, so that a tail image that CLIP finds closer to a head "
                        "class is penalised (the released code's prompt list holds head classes too)")
    g.add_argument("--r1", type=float, default=10.0, help="R1 gamma")
    g.add_argument("--d-reg-every", type=int, default=16, help="lazy R1 interval")
    g.add_argument("--path-regularize", type=float, default=2.0, help="path-length weight")
    g.add_argument("--path-batch-shrink", type=int, default=2, help="path-length batch = batch // this")
    g.add_argument("--g-reg-every", type=int, default=4, help="lazy path-length interval")
    g = p.add_argument_group("optimisation")
    g.add_argument("--iter", type=int, default=200000, help="total iterations")
    g.add_argument("--batch-size", type=int, default=8, help="per process")
    g.add_argument("--lr", type=float, default=0.002,
                   help="base lr; G uses lr*k/(k+1) with k = --g-reg-every, D with k = --d-reg-every")
    g.add_argument("--ema-decay", type=float, default=0.5 ** (32 / 10000), help="g_ema decay per iteration")
    g = p.add_argument_group("augmentation (upstream --augment)")
    g.add_argument("--augment", action="store_true",
                   help="differentiable augmentation of D's inputs (ADA-lite)")
    g.add_argument("--augment-p", type=float, default=0.0, help="fixed probability; 0 = adapt it (ADA)")
    g.add_argument("--ada-target", type=float, default=0.6)
    g.add_argument("--ada-length", type=int, default=500000, help="images for p to move from 0 to 1")
    g.add_argument("--ada-every", type=int, default=256, help="iterations between p updates")
    g.add_argument("--augment-ops", nargs="+", default=list(OPERATIONS), choices=list(OPERATIONS))
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA (bf16, or fp16 with loss scaling); R1 and path length in "
                        "fp32")
    g.add_argument("--feature-cache-gb", type=float, default=2.0,
                   help="compute the frozen tail model's features of all real images once when they fit in "
                        "this many GB (0 = every iteration)")
    g.add_argument("--compile", default=None,
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile G and D (this mode) for the unregularised passes; R1 and path length "
                        "stay eager (benchmarks/gpu_cdtg.sh measures whether it pays)")
    g = p.add_argument_group("logging")
    g.add_argument("--log-every", type=int, default=100,
                   help="metrics.jsonl row and tqdm losses every N iterations")
    g.add_argument("--sample-every", type=int, default=1000,
                   help="fixed-latent sample grid every N iterations")
    g.add_argument("--sample-cols", type=int, default=8, help="samples per tail class in the grid")
    g.add_argument("--ckpt-every", type=int, default=5000,
                   help="ckpt_last.pt every N iterations (and at the end)")
    g.add_argument("--snapshot-every", type=int, default=0,
                   help="also keep checkpoints/<iter>.pt every N iterations (upstream: 5000); 0 = off")
    g = p.add_argument_group("quality tracking (off by default)")
    g.add_argument("--eval-every", type=int, default=0,
                   help="every N iterations (and before the first and after the last) draw --eval-per-class "
                        "images per tail class from g_ema as CDTG/generate.py would and log eval_* rows to "
                        "metrics.jsonl (tail-model and classifier shares, FID_cls) and quality.png; 0 = off")
    g.add_argument("--eval-classifier", default=None,
                   help="independent classifier for FID_cls (Classification/train.py's model_final.pt)")
    g.add_argument("--eval-per-class", type=int, default=16, help="images per tail class per evaluation")
    g.add_argument("--eval-r", type=float, default=0.05,
                   help="noise share of the drawn images (generate.py's --r)")
    g.add_argument("--eval-max-real", type=int, default=100,
                   help="real images per class FID_cls compares with (evaluate.py's --max-per-class)")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a crash
    rundir.add_run_args(p, "cdtg_train")
    return p


# ------------------------------------------------------------------------------------------------ data


def tail_dataset(args, split, num_classes: int) -> ImageList:
    transform = classification(args.size, False)
    return ImageList(os.path.join(args.data_root, "train"), [anno_path(args.data_root, "train")], transform,
                     num_classes=num_classes, label_map=label_map(split, "tail"), on_corrupt=args.on_corrupt)


def sample_bank(dataset, num_classes: int, cols: int):
    """Fixed real images for the sample grid: `cols` per class (cycling through the class's images)."""
    by_class = [[] for _ in range(num_classes)]
    for i, (_, label) in enumerate(dataset.samples):
        by_class[label].append(i)
    images, labels = [], []
    for k, idx in enumerate(by_class):
        if not idx:
            raise UserError(f"tail class {k} has no training image; check split.json and the train list")
        for j in range(cols):
            images.append(dataset[idx[j % len(idx)]][0])
            labels.append(k)
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def save_samples(trainer: CDTGTrainer, images, labels, z, r: float, path: str, cols: int) -> None:
    """g_ema on fixed noise, fixed real-image features and fixed noise images: one row per tail class."""
    feat = trainer.features(images)
    latent = r * z + (1 - r) * trainer.p_ema(feat)
    out, _ = trainer.g_ema([latent], labels, randomize_noise=False)
    save_image(out.float().cpu(), path, nrow=cols, normalize=True, value_range=(-1, 1))


# ------------------------------------------------------------------------------------------------ set-up


def check_args(args) -> None:
    if not args.data_root:
        raise UserError("--data-root is required (or set data_root in the config's cdtg_train section)")
    if not args.tail_model:
        raise UserError("--tail-model is required: the distilled KMDN tail model "
                        "(runs/kmdn/<dataset>/distill/tail_model.pt, written by scripts/03_kmdn.sh)")
    if args.continue_original and (not args.init_weights or args.resume):
        raise UserError("--continue-original needs --init-weights (an original 200000.pt) and no --resume")
    if not 0 <= args.r_train <= 1:
        raise UserError(f"--r-train must be in [0, 1], got {args.r_train}")
    if args.consistency_every < 1:
        raise UserError(f"--consistency-every must be 1 (every step) or more, got {args.consistency_every}")
    if args.reuse_fakes and args.lambda_ms > 0:
        raise UserError("--reuse-fakes cannot be combined with --lambda-ms: the mode-seeking term's "
                        "generator batch (half the batch, twice) is not the discriminator's; drop one")
    check_size(args.size)  # before the run folder, not when the models are built
    if args.eval_every < 0:
        raise UserError(f"--eval-every must be 0 (off) or positive, got {args.eval_every}")
    if args.eval_every and not args.eval_classifier:
        raise UserError("--eval-every needs --eval-classifier: the independent classifier "
                        "(Classification/train.py's model_final.pt) whose features FID_cls uses")
    for flag in ("iter", "batch_size", "log_every", "sample_every", "ckpt_every", "sample_cols"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")


# ------------------------------------------------------------------------------------------------ steps


@dataclass
class TailData:
    """The tail classes (ids in split.json's order, names) and their training images."""
    info: dict
    split: dict
    tail_ids: list
    names: list
    dataset: ImageList

    @property
    def num_classes(self) -> int:
        return len(self.tail_ids)


def load_data(args) -> TailData:
    info = read_classes(args.data_root)
    split = load_split(args.split or os.path.join(args.data_root, "split.json"), args.data_root)
    tail_ids = list(split["tail"])
    names = [split["names"][c] for c in tail_ids]
    return TailData(info, split, tail_ids, names, tail_dataset(args, split, len(info["names"])))


def load_conditioning(args, data: TailData, rt) -> tuple:
    """(the frozen tail model, CLIP or None, its text features of the tail classes' prompts or None)."""
    input_size = None if args.tail_input == "model" else args.size
    tail = load_tail_model(args.tail_model, rt.device, input_size, data.split)
    check_tail_classes(tail.meta, data.split, args.tail_model)
    clip = text_features = None
    if args.lambda_clip > 0:
        clip = load_clip(args.clip_model, args.clip_pretrained, rt.device)
        if args.mode == "code":
            round_to_half(clip.model)
        names = data.names
        if args.clip_classes == "all":  # the tail classes first, so that label k is still prompt k
            names = names + [n for c, n in enumerate(data.split["names"]) if c not in data.tail_ids]
        text_features = encode_text_prompts(clip, prompts_for(names, args.clip_prompt))
    return tail, clip, text_features


def read_resume_checkpoint(args, out: str) -> LastCheckpoint:
    """--resume: <run>/ckpt_last.pt; D is rebuilt with the run's own FromRGB kernel."""
    last = LastCheckpoint(out)
    kernel = original.from_rgb_kernel_of(last["d"])
    if kernel != args.from_rgb_kernel:
        print(f"{last.path} has a {kernel}x{kernel} FromRGB: resuming with --from-rgb-kernel {kernel}")
        args.from_rgb_kernel = kernel
    return last


def step_config(args) -> StepConfig:
    return StepConfig(mode=args.mode, r_train=args.r_train, mixing=args.mixing, mixing_rule=args.mixing_rule,
                      lambda_cls=args.lambda_cls, lambda_clip=args.lambda_clip, lr=args.lr, r1=args.r1,
                      d_reg_every=args.d_reg_every, path_regularize=args.path_regularize,
                      path_batch_shrink=args.path_batch_shrink, g_reg_every=args.g_reg_every,
                      ema_decay=args.ema_decay, amp=args.amp, train_p=not args.freeze_p,
                      lambda_ms=args.lambda_ms, lambda_feat=args.lambda_feat,
                      lambda_rec=args.lambda_rec, rec_blur=args.rec_blur,
                      lambda_lattice=args.lambda_lattice,
                      lambda_spectrum=args.lambda_spectrum,
                      reuse_fakes=args.reuse_fakes, compile=args.compile,
                      consistency_lowpass=args.consistency_lowpass, consistency_every=args.consistency_every)


def build_trainer(args, num_classes: int, rt, tail, clip, text_features, initial) -> CDTGTrainer:
    """G, D, P and their EMA copies (from the --init-weights file where one is given), on the device."""
    g, d = build_models(args, num_classes)
    proj = FeatureProjection(tail.feature_shape(), args.style_dim, args.feature_pool, args.normalise_p)
    g_ema, p_ema = copy.deepcopy(g), copy.deepcopy(proj)
    if initial is not None:
        original.load_initial_weights(initial, args.init_weights, g, d, g_ema, proj, p_ema)
    for m in (g, d, proj, g_ema, p_ema):
        m.to(rt.device)
    augment = None
    if args.augment:
        augment = AdaptiveAugment(args.ada_target, args.ada_length, args.ada_every, args.augment_p,
                                  args.augment_ops, reduce=lambda t: all_reduce_sum(t, rt))
    cfg = step_config(args)
    if rt.cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick each convolution's algorithm
    trainer = CDTGTrainer(g, d, proj, tail, rt, cfg, clip, text_features, augment, g_ema, p_ema)
    if rt.is_main:
        n = lambda m: sum(p.numel() for p in m.parameters())
        print(f"G {n(g) / 1e6:.2f}M, D {n(d) / 1e6:.2f}M, P {n(proj) / 1e6:.2f}M parameters "
              f"({'trained' if trainer.train_p else 'fixed'}); layer3 {tail.feature_shape()} at "
              f"{tail.input_size} px, pool {args.feature_pool or 'none'}")
    return trainer


def run_meta(args, data: TailData, trainer: CDTGTrainer, clip) -> dict:
    """What generation reads of the run (in ckpt_last.pt and generator.pt)."""
    return {"dataset": data.info["dataset"], "data_root": args.data_root,
            "classes": data.tail_ids, "names": data.names, "tail_model": args.tail_model,
            "tail_input_size": trainer.tail.input_size, "generator": model_config(args, data.num_classes),
            "discriminator": {"label_dim": args.label_dim, "from_rgb_kernel": args.from_rgb_kernel},
            "projection": trainer.proj.config(), "r_train": args.r_train, "mixing": args.mixing,
            "mixing_rule": args.mixing_rule, "mode": args.mode,
            "clip": {"model": args.clip_model, "pretrained": args.clip_pretrained, "prompt": args.clip_prompt,
                     "classes": args.clip_classes}
            if clip is not None else None}


def resume(trainer: CDTGTrainer, last: LastCheckpoint, meta: dict, out: str, log, rt) -> int:
    """--resume: the run's state, after checking that its flags are the run's own; returns its iteration. The
    random state comes back last, in seed_noise()."""
    for key in ("generator", "projection"):
        if last["meta"][key] != meta[key]:
            raise UserError(f"{last.path} was trained with {key} {last['meta'][key]}, not {meta[key]}; "
                            f"resume with the run's own flags (see {os.path.join(out, 'args.yaml')})")
    trainer.load_state_dict(last.state)  # G, D, P, their EMAs, optimisers, scalers, path length, ADA p
    return last.restore({}, log, rt.is_main, rng=False)


KEEP_IMAGES_BYTES = 1 << 30


def batch_loader(args, dataset, d, start: int, rt) -> DataLoader:
    """Endless batches from iteration `start`: shuffled, --class-balanced or --class-groups (of D's stddev
    groups). In-process loading (--workers 0) decodes each image once and keeps it when the images fit in
    KEEP_IMAGES_BYTES as float tensors (the embedded set's few hundred tail images)."""
    if args.class_groups:
        sampler = ClassGroupedBatches(dataset.targets, args.batch_size, args.seed, start, rt.rank,
                                      rt.world_size, d.stddev_group)
    elif args.class_balanced:
        sampler = BalancedBatches(dataset.targets, args.batch_size, args.seed, start, rt.rank, rt.world_size)
    else:
        sampler = EndlessBatches(len(dataset), args.batch_size, args.seed, start, rt.rank, rt.world_size)
    keep = args.workers == 0 and len(dataset) * 3 * args.size ** 2 * 4 <= KEEP_IMAGES_BYTES
    return DataLoader(Indexed(dataset, keep), batch_sampler=sampler,
                      num_workers=args.workers, pin_memory=rt.cuda, generator=torch.Generator())


class RunOutputs:
    """What the run writes as it trains: sample grids of fixed latents, quality evaluations (--eval-every)
    with quality.png, ckpt_last.pt and snapshots; at the end generator.pt."""

    def __init__(self, args, data: TailData, trainer: CDTGTrainer, meta: dict, out: str, log, rt):
        self.args, self.trainer, self.meta, self.out, self.log, self.rt = args, trainer, meta, out, log, rt
        images, labels = sample_bank(data.dataset, data.num_classes, args.sample_cols)
        self.bank_images, self.bank_labels = images.to(rt.device), labels.to(rt.device)
        self.bank_z = torch.randn(len(self.bank_labels), args.style_dim,
                                  generator=torch.Generator().manual_seed(args.seed)).to(rt.device)
        self.samples_dir = os.path.join(out, "samples")
        if rt.is_main:
            os.makedirs(self.samples_dir, exist_ok=True)
        self.tracker = None
        if args.eval_every and rt.is_main:
            reals = real_images_by_class(args.data_root, dict(enumerate(data.tail_ids)), args.size)
            self.tracker = QualityTracker(reals, data.tail_ids, trainer.tail, args.eval_classifier,
                                          data.info["names"], rt, args.eval_per_class, args.eval_r,
                                          args.mixing, args.mixing_rule, args.seed, args.eval_max_real)

    def before_training(self, start: int) -> None:
        if self.tracker is not None and start == 0:
            self.track(0)
        elif self.tracker is not None and any("eval_fid" in r for r in self.log.rows()):
            self.draw_quality()

    def draw_quality(self) -> None:
        args = self.args
        quality_curves_png(self.log.rows(), os.path.join(self.out, "quality.png"),
                           f"{os.path.normpath(self.out)}: {args.eval_per_class} images per tail class at "
                           f"r = {args.eval_r}")

    def track(self, done: int) -> None:
        row = self.tracker.evaluate(self.trainer.g_ema, self.trainer.p_ema)
        self.log.write(iter=done, **row)
        self.draw_quality()
        tqdm.write(f"iter {done}: tail model {100 * row['eval_tail_model']:.1f}%, classifier "
                   f"{100 * row['eval_classifier']:.1f}%, FID_cls {row['eval_fid']:.2f} (pooled "
                   f"{row['eval_pooled_fid']:.2f}) [{row['eval_seconds']:.1f} s]")

    def save_samples(self, done: int) -> None:
        save_samples(self.trainer, self.bank_images, self.bank_labels, self.bank_z, self.args.r_train,
                     os.path.join(self.samples_dir, f"{done:06d}.png"), self.args.sample_cols)

    def save_checkpoint(self, done: int) -> None:
        meta = None
        if self.rt.is_main:
            meta = generator_file.stored_meta({**self.meta, "iteration": done}, self.out)
        state = save_last(self.out, self.rt.is_main, {}, iteration=done, **self.trainer.state_dict(),
                          args=vars(self.args), meta=meta)  # a collective: called on every process
        if state is not None and self.args.snapshot_every and done % self.args.snapshot_every == 0:
            checkpoint.atomic_save(state, os.path.join(self.out, "checkpoints", f"{done:06d}.pt"))

    def export(self, start: int) -> None:
        final = os.path.join(self.out, "generator.pt")
        generator_file.write(final, self.trainer.g_ema.state_dict(), self.trainer.p_ema.state_dict(),
                             {**self.meta, "iteration": max(start, self.args.iter)})
        print(f"generator: {final}  samples: {self.samples_dir}")


def seed_noise(args, last: LastCheckpoint | None, start: int, rt) -> None:
    """The resumed run's random state of this process, or (a fresh run, or a file of before every rank's state
    was kept, which holds rank 0's) different noise per process under DDP."""
    if last is not None and last.restore_rng():
        return
    if rt.distributed:
        torch.manual_seed(args.seed + 1000 * rt.rank + start)


def real_batch(batches, cache, hflip: bool, rt) -> tuple:
    """The next real images and labels on the device (mirrored at random with --hflip), and their cached
    tail-model features (None without a cache)."""
    real, labels, index = next(batches)
    real, labels = real.to(rt.device, non_blocking=True), labels.to(rt.device, non_blocking=True)
    feat = None
    if hflip:
        flip = torch.rand(real.shape[0], device=rt.device) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
    if cache is not None:
        index = index.to(rt.device)
        feat = cache[0][index]
        if hflip:
            feat = torch.where(flip[:, None, None, None], cache[1][index], feat)
    return real, labels, feat


def train_loop(args, trainer: CDTGTrainer, loader, cache, start: int, outputs: RunOutputs, rt) -> bool:
    """Iterations start..--iter with their metrics rows, sample grids, evaluations and checkpoints; False
    where --stop-after ended the run early (tests: a crash)."""
    batches = iter(loader)
    bar = tqdm(range(start, args.iter), initial=start, total=args.iter, desc="cdtg", disable=not rt.is_main,
               dynamic_ncols=True)
    tick = time.time()
    for i in bar:
        real, labels, feat = real_batch(batches, cache, args.hflip, rt)
        losses = trainer.step(real, labels, i, feat)
        done = i + 1
        if done % args.log_every == 0 or done == args.iter:
            row = {"iter": done, **{k: float(v) for k, v in losses.items()},
                   "mean_path_length": float(trainer.mean_path_length),
                   "sec_per_iter": (time.time() - tick) / args.log_every}
            tick = time.time()
            outputs.log.write(**row)
            bar.set_postfix_str(" ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("iter",)))
        if rt.is_main and (done % args.sample_every == 0 or done == args.iter):
            outputs.save_samples(done)
        if outputs.tracker is not None and (done % args.eval_every == 0 or done == args.iter):
            outputs.track(done)
        if done % args.ckpt_every == 0 or done == args.iter:
            outputs.save_checkpoint(done)
        if args.stop_after is not None and done >= args.stop_after:
            return False
    return True


# ------------------------------------------------------------------------------------------------ main


@cli
def main(args):
    check_args(args)
    data = load_data(args)
    rt = setup(args.device)
    tail, clip, text_features = load_conditioning(args, data, rt)
    initial = original.read_initial_checkpoint(args, data.num_classes, tail.feature_shape()) \
        if args.init_weights and not args.resume else None
    out = rundir.prepare(args, rt.is_main)  # after every input check: a mistake leaves no run folder behind
    last = read_resume_checkpoint(args, out) if args.resume else None
    if rt.is_main:
        print(f"{len(data.dataset)} tail training images, {data.num_classes} tail classes "
              f"({', '.join(data.names)}); mode {args.mode}; run folder {out}")

    trainer = build_trainer(args, data.num_classes, rt, tail, clip, text_features, initial)
    meta = run_meta(args, data, trainer, clip)
    start = original.continue_original(initial, args.init_weights, trainer) if args.continue_original else 0
    log = rundir.MetricsLog(out, rt.is_main, args.report_to)
    if args.resume:
        start = resume(trainer, last, meta, out, log, rt)

    loader = batch_loader(args, data.dataset, trainer.d, start, rt)
    cache = feature_cache(trainer, data.dataset, rt, args.hflip, args.feature_cache_gb, args.batch_size * 4,
                          args.workers)
    outputs = RunOutputs(args, data, trainer, meta, out, log, rt)
    seed_noise(args, last, start, rt)  # last, so that no set-up step above draws from it
    outputs.before_training(start)
    if train_loop(args, trainer, loader, cache, start, outputs, rt) and rt.is_main:
        outputs.export(start)
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "cdtg_train"))

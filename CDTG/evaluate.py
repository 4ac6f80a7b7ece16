"""Generation quality of a CDTG/generate.py folder: class consistency, diversity, FID and KID.

    python CDTG/evaluate.py --generated runs/cdtg/dior/generated \\
        --classifier runs/classification/dior/baseline/model_final.pt [--fid-backbone inception]

Class consistency: the share of generated images that (1) the distilled tail model, (2) an independent
classifier trained on the real data (a Classification/ model_final.pt, over all classes), and (3) CLIP zero-shot
over the tail-class prompts assign to the intended class; the same shares on the real tail images are given as
the reference. Diversity: mean pairwise LPIPS within a class (when LPIPS backbone weights are available, else
"unavailable") and mean pairwise distance of the classifier's penultimate features (generated and real).
FID_cls and KID_cls in that feature space against the real training images of each tail class, and pooled;
with --fid-backbone inception also FID and KID in the standard Inception features (torch-fidelity's
InceptionV3, as GAN papers report them), of real and generated images at the generator's size.
Writes <generated>/quality.md (a markdown snippet for the results table) and, last, quality.json; run again, a
finished measurement with the same settings is left as it is, an interrupted one is done again.
"""
import argparse
import contextlib
import io
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm import tqdm

from common import checkpoint, finished
from common.clip import add_clip_args, encode_text_prompts, load_clip, prompts_for
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import setup
from common.errors import UserError, batch_loop, cli
from common.layout import anno_path, read_classes, read_list
from common.options import add_device_arg, add_loader_args
from common.split import optional_split
from common.transforms import classification
from CDTG.conditioning import load_tail_model
from CDTG.manifest import list_entries, read_manifest
from CDTG.quality import (frechet_distance, kernel_inception_distance, load_independent_classifier, load_lpips,
                          mean_pairwise_distance, mean_pairwise_lpips, share_correct)


INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def get_args_parser():
    p = argparse.ArgumentParser("CDTG generation quality")
    add_config_arg(p)
    p.add_argument("--generated", default=None, help="output folder of CDTG/generate.py")
    p.add_argument("--classifier", default=None,
                   help="independent classifier trained on the real data (Classification/train.py's "
                        "model_final.pt); without it FID, KID and feature diversity are reported unavailable")
    p.add_argument("--tail-model", default=None, help="default: the generation manifest's")
    add_clip_args(p, None, None, None, " (default: the training run's, if it used CLIP)",
                  " (default: the training run's); none skips CLIP", " (default: the training run's)")
    p.add_argument("--max-per-class", type=int, default=500, help="generated (and real) images evaluated per class")
    p.add_argument("--lpips-net", default="alex", choices=["alex", "vgg", "squeeze"])
    p.add_argument("--lpips-pairs", type=int, default=200, help="image pairs per class for LPIPS")
    p.add_argument("--feature-pairs", type=int, default=2000, help="pairs per class for the feature distance")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000, help="capped by the smaller image set")
    p.add_argument("--fid-backbone", default="cls", choices=["cls", "inception"],
                   help="cls: FID_cls and KID_cls, in the --classifier's penultimate features (comparable "
                        "between runs with the same classifier); inception: FID and KID in torch-fidelity's "
                        "InceptionV3 features as well, comparable with published GAN FIDs")
    p.add_argument("--inception-weights", default=None,
                   help=f"torch-fidelity's InceptionV3 weights file ({INCEPTION_FILE}); default: "
                        f"downloaded by torch-fidelity into the torch hub cache")
    p.add_argument("--batch-size", type=int, default=64)
    add_loader_args(p, on_corrupt=False, eval_batch_size=False)
    p.add_argument("--overwrite", action="store_true", help="measure again when quality.json is there (a finished "
                   "measurement with the same settings is otherwise left as it is)")
    add_device_arg(p)
    return p


def load_inception(weights: str | None, device):
    """(a function from uint8 images [N, 3, H, W] to torch-fidelity's 2048-d InceptionV3 pool features, None),
    or (None, why not) when the weights cannot be downloaded. A --inception-weights file that is not there or
    not those weights is a UserError."""
    if weights is not None and not os.path.isfile(weights):
        raise UserError(f"--inception-weights {weights} does not exist; pass torch-fidelity's InceptionV3 "
                        f"weights file ({INCEPTION_FILE}), or leave the flag out to download it")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError:
        return None, "the torch-fidelity package is not installed (pip install -r requirements.txt)"
    if weights is not None:
        try:
            model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], weights, verbose=False)
        except Exception as e:  # noqa: BLE001 - any unreadable or foreign file gets the same one line
            raise UserError(f"--inception-weights {weights} is not torch-fidelity's InceptionV3 weights "
                            f"({type(e).__name__}); pass {INCEPTION_FILE}") from None
    else:
        said = io.StringIO()  # torch.hub's "Downloading ..." line: shown when the download works
        try:
            with contextlib.redirect_stderr(said):
                model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], verbose=False)
        except Exception as e:  # noqa: BLE001 - offline, or a broken download in the cache
            return None, (f"torch-fidelity's InceptionV3 weights could not be downloaded from "
                          f"{URL_INCEPTION_V3} ({type(e).__name__}); pass that file as --inception-weights")
        sys.stderr.write(said.getvalue())
    model = model.to(device)
    return (lambda images: model(images)[0]), None


def inception_transform(size: int):
    """Real images as the generator learnt them (resized to its size), and generated ones, as uint8 tensors, which
    torch-fidelity's InceptionV3 takes (it resizes them to 299 px itself)."""
    return T.Compose([T.Resize((size, size)), T.PILToTensor()])


def inception_distances(gen: np.ndarray, real: np.ndarray, subsets: int, subset_size: int) -> dict:
    """FID and KID (mean and std over subsets) of two feature sets by torch-fidelity's own functions; the KID
    subset size is capped by the smaller set; NaN under two images."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    if len(gen) < 2 or len(real) < 2:
        return {"fid": float("nan"), "kid": float("nan"), "kid_std": float("nan")}
    gen, real = torch.as_tensor(gen, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64)
    fid = fid_statistics_to_metric(fid_features_to_statistics(gen), fid_features_to_statistics(real), False)
    size = min(subset_size, len(gen), len(real))
    kid = kid_features_to_metric(gen, real, kid_subsets=subsets, kid_subset_size=size, verbose=False)
    return {"fid": fid[KEY_METRIC_FID], "kid": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD]}


def clip_settings(manifest: dict) -> dict:
    """The training run's CLIP settings (defaults of the CLIP flags): from manifest.json, or, for a folder
    generated before the manifest held them, from the training checkpoint when it is still there."""
    if "clip" in manifest:
        return manifest["clip"] or {}
    path = manifest.get("checkpoint")
    if path and os.path.isfile(path):
        print(f"note: {path} is read for the CLIP settings only: this manifest.json predates holding them")
        ck = checkpoint.load(path, "CDTG checkpoint")
        return (ck.get("meta", {}).get("clip") if isinstance(ck, dict) else None) or {}
    return {}


@batch_loop("evaluation")
@torch.no_grad()
def run_models(items, transforms, tail, classifier, clip, text, inception, rt, args, keep_images: int):
    """Predictions (and classifier and Inception features, and the first `keep_images` GAN-size images for
    LPIPS)."""
    # predictions are compared with each item's own class: a corrupt image stops the run
    images = ImageList(items=items, transform=transforms, on_corrupt="error", check_files=False)
    loader = DataLoader(images, batch_size=args.batch_size, num_workers=args.workers,
                        pin_memory=rt.cuda)
    out = {"tail": [], "cls": [], "clip": [], "feat": [], "inception": [], "images": []}
    kept = 0
    for batch, _ in tqdm(loader, desc="evaluating", leave=False, dynamic_ncols=True):
        x = batch["tail"].to(rt.device)
        out["tail"].append(tail(x)[0].argmax(1).cpu())
        if kept < keep_images:
            out["images"].append(batch["gan"][: keep_images - kept])
            kept += len(out["images"][-1])
        if classifier is not None:
            logits, feat = classifier(batch["cls"].to(rt.device))
            out["cls"].append(logits.argmax(1).cpu())
            out["feat"].append(feat.float().cpu())
        if clip is not None:
            img = torch.nn.functional.normalize(clip.model.encode_image(batch["clip"].to(rt.device)).float(), dim=-1)
            out["clip"].append((img @ text.t()).argmax(1).cpu())
        if inception is not None:
            out["inception"].append(inception(batch["inception"].to(rt.device)).double().cpu())
    return {k: torch.cat(v).numpy() if k != "images" else (torch.cat(v) if v else None)
            for k, v in out.items() if v}


COLLAPSE_SHARE = 1 / 3  # a class whose generated feature diversity is under this share of real's is flagged


def diversity_share(row: dict):
    """Generated feature diversity as a share of the real images' (None without a classifier or real pairs)."""
    gen, real = row.get("feature_diversity"), row.get("real_feature_diversity")
    if gen is None or real is None or not np.isfinite(real) or real <= 0:
        return None
    return gen / real


def class_report(row: dict) -> list:
    """The console lines of one class: its shares, its diversity as a share of real, and a warning when that
    share is under COLLAPSE_SHARE."""
    share = diversity_share(row)
    parts = [f"tail model {100 * row['tail_model_consistency']:.1f}%"]
    if "classifier_consistency" in row:
        parts.append(f"classifier {100 * row['classifier_consistency']:.1f}%")
    if "clip_consistency" in row:
        parts.append(f"CLIP {100 * row['clip_consistency']:.1f}%")
    if share is not None:
        parts.append(f"feature diversity {100 * share:.0f}% of real")
    lines = [f"  {row['class_id']} {row['name']}: {', '.join(parts)}"]
    if share is not None and share < COLLAPSE_SHARE:
        lines.append(f"  warning: {row['class_id']} {row['name']}: generated images nearly alike (feature "
                     f"diversity {100 * share:.0f}% of the real images', under a third): the generator collapsed "
                     f"on this class")
    return lines


def fmt(x, scale=1.0, digits=1):
    if x is None or isinstance(x, str) or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x * scale:.{digits}f}"


def markdown(result: dict) -> str:
    """The table: FID_cls / KID_cls in the classifier's features, and FID / KID (Inception) when measured."""
    incep = "fid_inception" in result["overall"]
    head = "| FID_cls | KID_cls x1e3 |" + (" FID (Inception) | KID (Inception) x1e3 |" if incep else "")
    lines = [f"Generation quality of {result['generated']} (r = {result['r']}, up to "
             f"{result['n_evaluated_per_class']} images per class; classifier features: {result['feature_space']}):",
             "", "| class | tail model % (real) | classifier % (real) | CLIP % (real) | LPIPS div. "
             "| feature div. gen / real (share) " + head, "|---" * (8 + 2 * incep) + "|"]
    for c in result["per_class"] + [dict(result["overall"], name="all tail classes", class_id="")]:
        def pair(key):
            return f"{fmt(c.get(key), 100)} ({fmt(c.get('real_' + key), 100)})"
        distances = [fmt(c.get("fid"), digits=2), fmt(c.get("kid"), 1000, 2)]
        if incep:
            distances += [fmt(c.get("fid_inception"), digits=2), fmt(c.get("kid_inception"), 1000, 2)]
        lines.append(f"| {c['class_id']} {c['name']} | {pair('tail_model_consistency')} | "
                     f"{pair('classifier_consistency')} | {pair('clip_consistency')} | "
                     f"{fmt(c.get('lpips_diversity'), digits=3)} | {fmt(c.get('feature_diversity'), digits=2)} / "
                     f"{fmt(c.get('real_feature_diversity'), digits=2)} ({fmt(diversity_share(c), 100, 0)} %) | "
                     + " | ".join(distances) + " |")
    o = result["overall"]
    pooled = [f"FID_cls {fmt(o.get('pooled_fid'), digits=2)}, KID_cls x1e3 "
              f"{fmt(o.get('pooled_kid'), 1000, 2)}"]
    if incep:
        pooled.append(f"FID (Inception) {fmt(o.get('pooled_fid_inception'), digits=2)}, KID (Inception) x1e3 "
                      f"{fmt(o.get('pooled_kid_inception'), 1000, 2)}")
    lines += ["", f"Pooled over the tail classes: {'; '.join(pooled)}.",
              f"FID_cls, KID_cls: in the classifier's penultimate features (comparable between runs that use "
              f"the same classifier). FID and KID (Inception): {result.get('inception', 'not measured')}.",
              f"LPIPS: {result['lpips']}. CLIP: {result['clip']}. Real = the class's training images (seen "
              f"by both classifiers, so their shares are an optimistic reference)."]
    if result["classifier"] is None:
        lines.append("Classifier consistency, feature diversity, FID_cls and KID_cls: unavailable (no "
                     "--classifier given).")
    return "\n".join(lines) + "\n"


@cli
def main(args):
    if not args.generated:
        raise UserError("--generated is required: an output folder of CDTG/generate.py")
    if args.inception_weights and args.fid_backbone != "inception":
        raise UserError("--inception-weights is for --fid-backbone inception; pass that too, or leave the "
                        "weights out")
    manifest = read_manifest(args.generated)
    out_json = os.path.join(args.generated, "quality.json")
    settings = finished.settings_of(args)
    settings["input_files"].update(finished.file_stamps(os.path.join(args.generated, "manifest.json")))
    if finished.already_finished(out_json, settings, args.overwrite):
        return
    root = manifest["data_root"]
    info = read_classes(root)
    rt = setup(args.device)
    tail_path = args.tail_model or manifest["tail_model"]
    tail = load_tail_model(tail_path, rt.device, split=optional_split(None, root))
    lpips_model, lpips_note = load_lpips(args.lpips_net, rt.device)
    tail_labels = {e["class_id"]: e["tail_label"] for e in manifest["classes"]}
    all_tail_ids = list(tail.meta["classes"])

    size, tail_size = manifest["size"], tail.input_size
    # the tail model sees real and generated images at its own input size; LPIPS compares them at the GAN size
    transforms = {"tail": classification(tail_size, False)}
    if lpips_model is not None:
        transforms["gan"] = classification(size, False)
    classifier = None
    if args.classifier:
        classifier, cls_meta = load_independent_classifier(args.classifier, info["names"], rt.device)
        transforms["cls"] = classification(cls_meta["img_size"], False, cls_meta["norm"])
    inception = None
    inception_note = "not measured (--fid-backbone cls)"
    if args.fid_backbone == "inception":
        inception, why = load_inception(args.inception_weights, rt.device)
        if inception is None:
            inception_note = f"unavailable: {why}"
            print(f"note: FID and KID (Inception) unavailable: {why}; FID_cls is reported instead"
                  + ("" if classifier else " (it needs --classifier)"))
        else:
            transforms["inception"] = inception_transform(size)
            weights = args.inception_weights or "downloaded by torch-fidelity"
            inception_note = (f"torch-fidelity InceptionV3 pool features (2048-d; weights {weights}), real "
                              f"and generated images at {size} px")
    clip_cfg = clip_settings(manifest)
    clip_model = args.clip_model or clip_cfg.get("model")
    clip_pretrained = args.clip_pretrained or clip_cfg.get("pretrained")
    clip = text = None
    clip_note = "unavailable: no CLIP model given (the generator was trained without CLIP guidance)"
    if clip_pretrained and clip_pretrained != "none":
        clip = load_clip(clip_model, clip_pretrained, rt.device)
        prompt = args.clip_prompt or clip_cfg.get("prompt") or "a photo of a {name}"
        text = encode_text_prompts(clip, prompts_for(tail.meta["names"], prompt))
        transforms["clip"] = clip.preprocess
        clip_note = f"{clip_model} ({clip_pretrained}), prompt '{prompt}', over the {len(all_tail_ids)} tail classes"
    generated = {}
    for path, cid in list_entries(args.generated, manifest):
        generated.setdefault(cid, []).append(path)
    real = {}
    for rel, cid in read_list(anno_path(root, "train"), len(info["names"])):
        if cid in generated:
            real.setdefault(cid, []).append(os.path.join(root, "train", rel))

    per_class, pooled = [], {"gen": [], "real": [], "gen_inception": [], "real_inception": []}
    keep = 0 if lpips_model is None else min(args.max_per_class, 2 * args.lpips_pairs)
    for cid, paths in generated.items():
        k = tail_labels[cid]
        name = info["names"][cid]
        gen_items = [(p, k) for p in paths[: args.max_per_class]]
        real_items = [(p, k) for p in real.get(cid, [])[: args.max_per_class]]
        g = run_models(gen_items, transforms, tail, classifier, clip, text, inception, rt, args, keep)
        r = run_models(real_items, transforms, tail, classifier, clip, text, inception, rt, args, keep)
        row = {"class_id": cid, "name": name, "tail_label": k, "n_generated": len(gen_items), "n_real": len(real_items),
               "tail_model_consistency": share_correct(g["tail"], k), "real_tail_model_consistency":
               share_correct(r["tail"], k)}
        if clip is not None:
            row.update(clip_consistency=share_correct(g["clip"], k), real_clip_consistency=share_correct(r["clip"], k))
        if classifier is not None:
            row.update(classifier_consistency=share_correct(g["cls"], cid),
                       real_classifier_consistency=share_correct(r["cls"], cid),
                       feature_diversity=mean_pairwise_distance(g["feat"], args.feature_pairs),
                       real_feature_diversity=mean_pairwise_distance(r["feat"], args.feature_pairs),
                       fid=frechet_distance(g["feat"], r["feat"]))
            row["kid"], row["kid_std"] = kernel_inception_distance(g["feat"], r["feat"], args.kid_subsets,
                                                                   args.kid_subset_size)
            pooled["gen"].append(g["feat"])
            pooled["real"].append(r["feat"])
        if inception is not None:
            d = inception_distances(g["inception"], r["inception"], args.kid_subsets, args.kid_subset_size)
            row.update(fid_inception=d["fid"], kid_inception=d["kid"], kid_inception_std=d["kid_std"])
            pooled["gen_inception"].append(g["inception"])
            pooled["real_inception"].append(r["inception"])
        if lpips_model is not None:
            row["lpips_diversity"] = mean_pairwise_lpips(lpips_model, g["images"], args.lpips_pairs)
            row["real_lpips_diversity"] = mean_pairwise_lpips(lpips_model, r["images"], args.lpips_pairs)
        per_class.append(row)
        print("\n".join(class_report(row)))

    overall = {}
    for key in per_class[0]:
        if key not in ("class_id", "name", "tail_label") and not key.startswith("n_"):
            overall[key] = float(np.nanmean([c[key] for c in per_class]))  # class-balanced means
    if classifier is not None:
        gen_all, real_all = np.concatenate(pooled["gen"]), np.concatenate(pooled["real"])
        overall["pooled_fid"] = frechet_distance(gen_all, real_all)
        overall["pooled_kid"], overall["pooled_kid_std"] = kernel_inception_distance(
            gen_all, real_all, args.kid_subsets, args.kid_subset_size)
    if inception is not None:
        gen_all, real_all = np.concatenate(pooled["gen_inception"]), np.concatenate(pooled["real_inception"])
        d = inception_distances(gen_all, real_all, args.kid_subsets, args.kid_subset_size)
        overall.update(pooled_fid_inception=d["fid"], pooled_kid_inception=d["kid"],
                       pooled_kid_inception_std=d["kid_std"])
    result = {"generated": os.path.abspath(args.generated), "checkpoint": manifest["checkpoint"], "r": manifest["r"],
              "n_evaluated_per_class": args.max_per_class,
              "feature_space": f"{cls_meta['arch']} penultimate ({args.classifier})" if classifier else "unavailable",
              "classifier": os.path.abspath(args.classifier) if args.classifier else None,
              "tail_model": os.path.abspath(tail_path), "clip": clip_note, "inception": inception_note,
              "lpips": lpips_note if lpips_model is None else f"LPIPS {args.lpips_net}",
              "per_class": per_class, "overall": overall, "settings": settings}
    text_md = markdown(result)
    with open(os.path.join(args.generated, "quality.md"), "w") as f:
        f.write(text_md)
    finished.write_json_last(out_json, result)  # last: the measurement is finished
    print(text_md)


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "cdtg_evaluate"))

"""Generation quality of a CDTG/generate.py folder: class consistency, diversity, FID and KID.

    python CDTG/evaluate.py --generated runs/cdtg/dior/generated \\
        --classifier runs/classification/dior/baseline/model_final.pt [--fid-backbone inception]

Class consistency: the share of generated images that (1) the distilled tail model, (2) an independent
classifier trained on the real data (a Classification/ model_final.pt, over all classes), and (3) CLIP
zero-shot over the tail-class prompts assign to the intended class; the same shares on the real tail images
are given as the reference. Diversity: mean pairwise LPIPS within a class (when LPIPS backbone weights are
available, else "unavailable") and mean pairwise distance of the classifier's penultimate features (generated
and real). FID_cls and KID_cls in that feature space against the real training images of each tail class,
and pooled; with --fid-backbone inception also FID and KID in the standard Inception features
(torch-fidelity's InceptionV3, as GAN papers report them), of real and generated images at the generator's
size. The measurement is CDTG.quality's Measurer, the one train.py's quality tracking uses.
Writes <generated>/quality.md (a markdown snippet for the results table) and, last, quality.json; run again, a
finished measurement with the same settings is left as it is, an interrupted one is done again.
"""
import argparse
import os

import numpy as np

from CDTG.conditioning import load_tail_model
from CDTG.manifest import list_entries, read_manifest
from CDTG.quality import INCEPTION_FILE, Measurer, load_inception, load_independent_classifier, load_lpips
from common import checkpoint, finished
from common.clip import add_clip_args, encode_text_prompts, load_clip, prompts_for
from common.config import add_config_arg, parse_args
from common.distributed import setup
from common.errors import UserError, cli
from common.layout import anno_path, read_classes, read_list
from common.options import add_device_arg, add_loader_args
from common.split import optional_split


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
    p.add_argument("--max-per-class", type=int, default=500,
                   help="generated (and real) images evaluated per class")
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
    p.add_argument("--overwrite", action="store_true", help="measure again when quality.json is there (a "
                   "finished measurement with the same settings is otherwise left as it is)")
    add_device_arg(p)
    return p


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


def check_args(args) -> None:
    if not args.generated:
        raise UserError("--generated is required: an output folder of CDTG/generate.py")
    if args.inception_weights and args.fid_backbone != "inception":
        raise UserError("--inception-weights is for --fid-backbone inception; pass that too, or leave the "
                        "weights out")


def inception_judge(args, size: int, has_classifier: bool, device) -> tuple:
    """(torch-fidelity's InceptionV3 features or None, the report's line on them)."""
    if args.fid_backbone != "inception":
        return None, "not measured (--fid-backbone cls)"
    inception, why = load_inception(args.inception_weights, device)
    if inception is None:
        print(f"note: FID and KID (Inception) unavailable: {why}; FID_cls is reported instead"
              + ("" if has_classifier else " (it needs --classifier)"))
        return None, f"unavailable: {why}"
    weights = args.inception_weights or "downloaded by torch-fidelity"
    return inception, (f"torch-fidelity InceptionV3 pool features (2048-d; weights {weights}), real and "
                       f"generated images at {size} px")


def clip_judge(args, manifest: dict, tail, device) -> tuple:
    """(CLIP or None, its unit text features over the tail-class prompts, the report's line on it)."""
    cfg = clip_settings(manifest)
    model, pretrained = args.clip_model or cfg.get("model"), args.clip_pretrained or cfg.get("pretrained")
    if not pretrained or pretrained == "none":
        return None, None, ("unavailable: no CLIP model given (the generator was trained without CLIP "
                            "guidance)")
    clip = load_clip(model, pretrained, device)
    prompt = args.clip_prompt or cfg.get("prompt") or "a photo of a {name}"
    text = encode_text_prompts(clip, prompts_for(tail.meta["names"], prompt))
    classes = len(tail.meta["classes"])
    return clip, text, f"{model} ({pretrained}), prompt '{prompt}', over the {classes} tail classes"


def load_measurer(args, manifest: dict, names: list, rt) -> tuple:
    """The Measurer of the flags and the generation's manifest, and the report's fields that say what it
    measures with."""
    tail_path = args.tail_model or manifest["tail_model"]
    tail = load_tail_model(tail_path, rt.device, split=optional_split(None, manifest["data_root"]))
    lpips, lpips_note = load_lpips(args.lpips_net, rt.device)
    classifier = cls_meta = None
    if args.classifier:
        classifier, cls_meta = load_independent_classifier(args.classifier, names, rt.device)
    inception, inception_note = inception_judge(args, manifest["size"], classifier is not None, rt.device)
    clip, text, clip_note = clip_judge(args, manifest, tail, rt.device)
    measurer = Measurer(tail, rt, classifier, cls_meta, clip, text, inception, lpips, manifest["size"],
                        args.batch_size, args.workers, args.feature_pairs, args.lpips_pairs, args.kid_subsets,
                        args.kid_subset_size, progress=True)
    space = f"{cls_meta['arch']} penultimate ({args.classifier})" if classifier else "unavailable"
    notes = {"feature_space": space,
             "classifier": os.path.abspath(args.classifier) if args.classifier else None,
             "tail_model": os.path.abspath(tail_path), "clip": clip_note, "inception": inception_note,
             "lpips": lpips_note if lpips is None else f"LPIPS {args.lpips_net}"}
    return measurer, notes


def image_paths(folder: str, manifest: dict, num_classes: int) -> tuple:
    """({class id: its generated images}, {class id: its real training images}) of the generated classes."""
    generated, real = {}, {}
    for path, cid in list_entries(folder, manifest):
        generated.setdefault(cid, []).append(path)
    root = manifest["data_root"]
    for rel, cid in read_list(anno_path(root, "train"), num_classes):
        if cid in generated:
            real.setdefault(cid, []).append(os.path.join(root, "train", rel))
    return generated, real


def measure_classes(measurer: Measurer, generated: dict, real: dict, manifest: dict, names: list,
                    max_per_class: int) -> tuple:
    """(a row per generated class, its generated and its real images' judge outputs); prints each class."""
    tail_labels = {e["class_id"]: e["tail_label"] for e in manifest["classes"]}
    rows, gens, reals = [], [], []
    for cid, paths in generated.items():
        k, theirs = tail_labels[cid], real.get(cid, [])
        gens.append(measurer.of_files(paths, k, max_per_class))
        reals.append(measurer.of_files(theirs, k, max_per_class))
        rows.append({"class_id": cid, "name": names[cid], "tail_label": k,
                     "n_generated": len(paths[:max_per_class]), "n_real": len(theirs[:max_per_class]),
                     **measurer.class_row(gens[-1], reals[-1], k, cid)})
        print("\n".join(class_report(rows[-1])))
    return rows, gens, reals


COLLAPSE_SHARE = 1 / 3  # a class whose generated feature diversity is under this share of real's is flagged


def diversity_share(row: dict):
    """Generated feature diversity as a share of the real images' (None without a classifier or real
    pairs)."""
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
    if np.isfinite(row.get("lattice_share", np.nan)):
        parts.append(f"lattice share {1000 * row['lattice_share']:.0f}\u2030 (real "
                     f"{1000 * row['real_lattice_share']:.0f}\u2030)")
    lines = [f"  {row['class_id']} {row['name']}: {', '.join(parts)}"]
    if share is not None and share < COLLAPSE_SHARE:
        lines.append(f"  warning: {row['class_id']} {row['name']}: generated images nearly alike (feature "
                     f"diversity {100 * share:.0f}% of the real images', under a third): the generator "
                     f"collapsed on this class")
    return lines


def fmt(x, scale=1.0, digits=1):
    if x is None or isinstance(x, str) or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x * scale:.{digits}f}"


def markdown(result: dict) -> str:
    """The table: FID_cls / KID_cls in the classifier's features, and FID / KID (Inception) when measured."""
    incep = "fid_inception" in result["overall"]
    head = "| FID_cls | KID_cls x1e3 |" + (" FID (Inception) | KID (Inception) x1e3 |" if incep else "")
    lines = [(f"Generation quality of {result['generated']} (r = {result['r']}, up to "
              f"{result['n_evaluated_per_class']} images per class; classifier features: "
              f"{result['feature_space']}):"),
             "", "| class | tail model % (real) | classifier % (real) | CLIP % (real) | LPIPS div. "
             "| feature div. gen / real (share) " + head, "|---" * (8 + 2 * incep) + "|"]
    for c in result["per_class"] + [dict(result["overall"], name="all tail classes", class_id="")]:
        def pair(key, c=c):
            return f"{fmt(c.get(key), 100)} ({fmt(c.get('real_' + key), 100)})"
        distances = [fmt(c.get("fid"), digits=2), fmt(c.get("kid"), 1000, 2)]
        if incep:
            distances += [fmt(c.get("fid_inception"), digits=2), fmt(c.get("kid_inception"), 1000, 2)]
        lines.append(f"| {c['class_id']} {c['name']} | {pair('tail_model_consistency')} | "
                     f"{pair('classifier_consistency')} | {pair('clip_consistency')} | "
                     f"{fmt(c.get('lpips_diversity'), digits=3)} | "
                     f"{fmt(c.get('feature_diversity'), digits=2)} / "
                     f"{fmt(c.get('real_feature_diversity'), digits=2)} "
                     f"({fmt(diversity_share(c), 100, 0)} %) | " + " | ".join(distances) + " |")
    o = result["overall"]
    pooled = [(f"FID_cls {fmt(o.get('pooled_fid'), digits=2)}, KID_cls x1e3 "
               f"{fmt(o.get('pooled_kid'), 1000, 2)}")]
    if incep:
        pooled.append(f"FID (Inception) {fmt(o.get('pooled_fid_inception'), digits=2)}, KID (Inception) x1e3 "
                      f"{fmt(o.get('pooled_kid_inception'), 1000, 2)}")
    lines += ["", f"Pooled over the tail classes: {'; '.join(pooled)}."]
    if np.isfinite(o.get("lattice_share", np.nan)):
        lines.append(f"Lattice share (spectral power at 2- and 4-pixel periods, grey, at the generator's "
                     f"size; checkerboard and lattice artefacts sit there), mean over the classes: generated "
                     f"{1000 * o['lattice_share']:.1f}\u2030, "
                     f"real {1000 * o['real_lattice_share']:.1f}\u2030.")
    lines += [(f"FID_cls, KID_cls: in the classifier's penultimate features (comparable between runs that "
               "use the same classifier). FID and KID (Inception): "
               f"{result.get('inception', 'not measured')}."),
              (f"LPIPS: {result['lpips']}. CLIP: {result['clip']}. Real = the class's training images (seen "
               f"by both classifiers, so their shares are an optimistic reference).")]
    if result["classifier"] is None:
        lines.append("Classifier consistency, feature diversity, FID_cls and KID_cls: unavailable (no "
                     "--classifier given).")
    return "\n".join(lines) + "\n"


def write_report(result: dict, folder: str) -> None:
    """quality.md, then quality.json (last: the measurement is finished); the table to the console."""
    text = markdown(result)
    with open(os.path.join(folder, "quality.md"), "w") as f:
        f.write(text)
    finished.write_json_last(os.path.join(folder, "quality.json"), result)
    print(text)


@cli
def main(args):
    check_args(args)
    manifest = read_manifest(args.generated)
    settings = finished.settings_of(args)
    settings["input_files"].update(finished.file_stamps(os.path.join(args.generated, "manifest.json")))
    if finished.already_finished(os.path.join(args.generated, "quality.json"), settings, args.overwrite):
        return
    names = read_classes(manifest["data_root"])["names"]
    rt = setup(args.device)
    measurer, notes = load_measurer(args, manifest, names, rt)
    generated, real = image_paths(args.generated, manifest, len(names))
    per_class, gens, reals = measure_classes(measurer, generated, real, manifest, names, args.max_per_class)
    write_report({"generated": os.path.abspath(args.generated), "checkpoint": manifest["checkpoint"],
                  "r": manifest["r"], "n_evaluated_per_class": args.max_per_class, **notes,
                  "per_class": per_class, "overall": measurer.overall(per_class, gens, reals),
                  "settings": settings}, args.generated)


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "cdtg_evaluate"))

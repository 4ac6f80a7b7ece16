"""How far apart KMDN's models' layer3 features are on one part's test images: what distillation's MSE pulls
on.

    python benchmarks/kmdn_feature_gap.py --data-root data/synthetic/processed \\
        --reference runs/kmdn/x/head/model_final.pt --models tail=runs/kmdn/x/tail/model_final.pt \\
        distilled=runs/kmdn/x/distill/head_model.pt

Prints, for the reference model and each other model: the mean square of its layer3 map, the mean squared
difference from the reference's (KMDN's feature MSE), their mean cosine similarity, the MSE of the two models'
image-to-image cosine matrices over batches of --batch-size shuffled images (distill.py --feature-loss
similarity; blind to scale and channel order), each model's accuracy where it has the reference's classes, and
how well its features alone separate these classes: the nearest-class-mean accuracy (cosine, class means of
these same images) of its flattened layer3 maps, which a model trained on the other part's classes has too.
"""
import argparse

import torch
import torch.nn.functional as F

from common.errors import UserError, cli
from common.part_model import load_part_model
from common.split import load_data_split
from KMDN.model import part_dataset, similarity_mse


def get_args_parser():
    p = argparse.ArgumentParser("KMDN layer3 feature gap")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default=None, help="default: <root>/split.json")
    p.add_argument("--reference", required=True, help="a part-model file (KMDN head or tail model)")
    p.add_argument("--models", nargs="+", default=[], metavar="NAME=FILE", help="part-model files to compare")
    p.add_argument("--part", default=None, choices=["head", "tail"],
                   help="whose test images (default: the reference's part)")
    p.add_argument("--batch-size", type=int, default=100)
    return p


@cli
def main(args):
    split = load_data_split(args)
    ref, meta = load_part_model(args.reference)
    models = {"reference": (ref, meta)}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise UserError(f"--models takes NAME=FILE, got '{spec}'")
        models[name] = load_part_model(path)
    part = args.part or meta["part"]
    data = part_dataset(args.data_root, split, part, "test", img_size=meta["img_size"], norm=meta["norm"])
    # shuffled (fixed order) so that a batch mixes classes, as a distillation batch does
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    # f^2, mse, cos, correct, similarity
    sums = {name: torch.zeros(5, dtype=torch.float64) for name in models}
    n, feats, labels = 0, {name: [] for name in models}, []
    with torch.no_grad():
        for x, y in loader:
            out = {name: m(x) for name, (m, _) in models.items()}
            f_ref = out["reference"][1].float()
            labels.append(y)
            for name, (logits, f) in out.items():
                f = f.float()
                feats[name].append(f.flatten(1))
                same_classes = models[name][1]["classes"] == meta["classes"]
                sums[name] += torch.tensor([
                    f.pow(2).mean(dim=(1, 2, 3)).sum(), (f - f_ref).pow(2).mean(dim=(1, 2, 3)).sum(),
                    F.cosine_similarity(f.flatten(1), f_ref.flatten(1)).sum(),
                    (logits.argmax(1) == y).sum() if same_classes else float("nan"),
                    similarity_mse(f, f_ref) * len(y)], dtype=torch.float64)
            n += len(y)
    print(f"{n} {part} test images; layer3 features against the reference {args.reference}")
    print("| model | mean square | MSE to reference | cosine to reference | accuracy | similarity MSE | "
          "nearest class mean |")
    print("|---|---|---|---|---|---|---|")
    y = torch.cat(labels)
    for name, s in sums.items():
        v = (s / n).tolist()
        acc = "-" if v[3] != v[3] else f"{100 * v[3]:.1f}"
        ncm = nearest_class_mean_accuracy(torch.cat(feats[name]), y)
        print(f"| {name} | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.3f} | {acc} | {v[4]:.4f} | {100 * ncm:.1f} |")


def nearest_class_mean_accuracy(f: torch.Tensor, y: torch.Tensor) -> float:
    f = F.normalize(f, dim=1)
    classes = y.unique()
    means = F.normalize(torch.stack([f[y == c].mean(0) for c in classes]), dim=1)
    return (classes[(f @ means.t()).argmax(1)] == y).double().mean().item()


if __name__ == "__main__":
    main(get_args_parser().parse_args())

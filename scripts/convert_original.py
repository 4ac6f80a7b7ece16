"""Convert a file of the original authors' code into this repository's self-describing format.

    python scripts/convert_original.py classifier Classification/save_model/result.pth \
        runs/original/classifier.pt --data-root data/dior/processed
    python scripts/convert_original.py kmdn RModel_epoch_0.pth runs/original/tail_model.pt \
        --data-root data/dior/processed
    python scripts/convert_original.py cdtg 200000.pt runs/original/generator.pt \
        --data-root data/dior/processed

classifier: result.pth -> {'model', 'arch', 'names', 'img_size', 'norm', 'dataset'} (what
Classification/train.py exports as model_final.pt). kmdn: UModel/RModel_epoch_<e>.pth -> a KMDN part-model
file (what KMDN/train.py and KMDN/distill.py write); its part and class order come from split.json (--part
where the class count fits both). cdtg: 200000.pt -> a generator file of CDTG/train.py. Every later stage
reads the output as one of its own. The output is written atomically and never replaces an existing file
unless --overwrite.
"""
import argparse
import os

from common import checkpoint, original_weights
from common.backbones import load_classifier
from common.config import parse_args
from common.errors import UserError, cli
from common.layout import read_classes
from common.part_model import model_from_file, read_part_file, save_part_model
from common.split import load_split

KINDS = ("classifier", "kmdn", "cdtg")


def get_args_parser():
    p = argparse.ArgumentParser("Convert the original authors' files into this repository's format")
    p.add_argument("kind", choices=KINDS, help="classifier (result.pth), kmdn (UModel/RModel_epoch_<e>.pth) "
                                               "or cdtg (200000.pt)")
    p.add_argument("input", help="the original file")
    p.add_argument("output", help="the file to write")
    p.add_argument("--data-root", required=True, help="processed data root (classes.json, split.json)")
    p.add_argument("--split", default=None, help="split.json (default: <root>/split.json)")
    p.add_argument("--model", default=None, help="classifier: architecture (default: inferred from the keys, "
                                                 "else resnet50)")
    p.add_argument("--part", default=None, choices=["head", "tail"],
                   help="kmdn: the part, where the file's class count fits both parts of split.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def convert_classifier(args) -> None:
    info = read_classes(args.data_root)
    model, ck = load_classifier(args.input, len(info["names"]), args.model)
    checkpoint.export_weights(model, args.output, arch=ck["arch"], names=info["names"],
                              img_size=ck.get("img_size", original_weights.INPUT_SIZE),
                              norm=ck.get("norm", original_weights.NORM),
                              dataset=info["dataset"])


def convert_kmdn(args) -> None:
    split = load_split(args.split or os.path.join(args.data_root, "split.json"), args.data_root)
    ck = read_part_file(args.input, "KMDN file", split=split, part=args.part)
    save_part_model(model_from_file(ck, args.input), args.output, ck)


def convert_cdtg(args) -> None:
    try:
        from CDTG.original import convert_to_project
    except ModuleNotFoundError as e:
        if e.name != "CDTG.original":
            raise
        raise UserError("this checkout has no CDTG/original.py, which converts CDTG files; update the "
                        "repository to a version that has it") from None
    convert_to_project(args.input, args.output, args.data_root)


@cli
def main(args):
    if os.path.exists(args.output) and not args.overwrite:
        raise UserError(f"{args.output} exists; pass --overwrite to replace it or choose another output file")
    {"classifier": convert_classifier, "kmdn": convert_kmdn, "cdtg": convert_cdtg}[args.kind](args)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "convert_original"))

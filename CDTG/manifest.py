"""The folder format written by CDTG/generate.py and read by CDTG/expand.py and CDTG/evaluate.py.

    <folder>/manifest.json         {"format": MANIFEST_FORMAT, "dataset", "data_root", "checkpoint", "r", ...,
                                    "classes": [{"tail_label", "class_id", "name", "folder", "count", ...}]}
    <folder>/<class folder>/<n>.jpg

The paths in manifest.json (checkpoint, data_root, tail_model) are relative to the folder (common.paths).
"""
import json
import os

from common.errors import UserError
from common.jsonfile import read_json
from common.paths import relative, resolve

MANIFEST_FORMAT = "cdtg-generated-v1"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
PATH_KEYS = ("checkpoint", "data_root", "tail_model")


def write_manifest(folder: str, manifest: dict) -> None:
    manifest = {**manifest, **{k: relative(manifest.get(k), folder) for k in PATH_KEYS}}
    path = os.path.join(folder, "manifest.json")
    with open(path + ".tmp", "w") as f:  # renamed when complete: a manifest marks a finished folder
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path) and os.path.isfile(os.path.join(folder, "args.yaml")):
        raise UserError(f"the generation into {folder} has not finished (no manifest.json, written last): "
                        f"run the same CDTG/generate.py command again to finish it")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; --generated takes folders written by CDTG/generate.py")
    manifest = read_json(path, "generation manifest", "generate again into a new folder")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get('format') if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{path} is not a CDTG generation manifest (format {found!r})")
    return {**manifest, **{k: resolve(manifest.get(k), folder) for k in PATH_KEYS}}


def list_entries(folder: str, manifest: dict) -> list:
    """[(absolute path, original class id)] of one generated folder, in class then file order."""
    rows = []
    for entry in manifest["classes"]:
        sub = os.path.join(folder, entry["folder"])
        if not os.path.isdir(sub):
            raise UserError(f"{sub} is missing (listed in {folder}/manifest.json)")
        files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS))
        if len(files) != entry["count"]:
            raise UserError(f"{sub} holds {len(files)} images but the manifest says {entry['count']}: files "
                            "were removed or added after the generation finished; generate again into a new "
                            "folder")
        rows += [(os.path.abspath(os.path.join(sub, f)), entry["class_id"]) for f in files]
    return rows

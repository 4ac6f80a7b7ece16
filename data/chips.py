"""Shared by the converters of the real data sets (data/{dior,dota,fgsc23}/prepare.py): raw images and boxes
to JPEG chips in the processed layout of common/layout.py.

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates, the convention of PIL's Image.crop: the box covers
columns x0 .. x1-1, so its width is x1 - x0. Fractional coordinates (DOTA) are widened to whole pixels: floor
of the minimum, ceiling of the maximum. A box with zero or negative width or height as annotated is
"degenerate" and skipped; a box that does not overlap the image is skipped; a box partly outside the image is
clipped and kept.
"""
import math
import os
import shutil
import tempfile
from collections import Counter

from PIL import Image

from common.errors import UserError
from common.layout import SPLITS, write_layout

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
RAW_HINT = "--raw must be the unpacked official release"

DEGENERATE = "degenerate box"
OUTSIDE = "box outside the image"
CLIPPED = "clipped"

# DOTA's aerial images reach 20,000 x 20,000 px, past PIL's decompression-bomb guard; the inputs are trusted.
Image.MAX_IMAGE_PIXELS = None


def require_dir(path: str, what: str, hint: str = RAW_HINT) -> str:
    if not os.path.isdir(path):
        raise UserError(f"{what} {path} does not exist; {hint}")
    return path


def require_file(path: str, what: str, hint: str = RAW_HINT) -> str:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; {hint}")
    return path


def scan_folder(folder: str) -> tuple[list, list]:
    """(sorted names of the image files directly in `folder`, sorted names of every other entry there)."""
    images, others = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        is_image = entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()
        (images if is_image else others).append(entry.name)
    return images, others


def prepare_out(out: str, overwrite: bool) -> None:
    """Refuse a non-empty --out unless --overwrite (nothing is written or deleted until the data set is
    done)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file; pass a folder")
    if os.path.isdir(out) and any(os.scandir(out)) and not overwrite:
        raise UserError(f"output folder {out} is not empty; pass --overwrite to replace its data set "
                        f"or choose another --out")


def install(staging: str, out: str) -> None:
    """Move a finished data set from `staging` to `out`; in an existing --out, the converter's own entries
    (split folders, anno/, classes.json) are replaced and anything else there is kept."""
    if not os.path.exists(out):
        os.replace(staging, out)
        return
    for name in SPLITS + ("anno", "classes.json"):
        old = os.path.join(out, name)
        if os.path.isdir(old):
            shutil.rmtree(old)
        elif os.path.exists(old):
            os.remove(old)
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    os.rmdir(staging)


def polygon_box(xs, ys) -> tuple:
    """The axis-aligned bounding rectangle of a polygon."""
    return min(xs), min(ys), max(xs), max(ys)


def clip_box(box, width: int, height: int) -> tuple:
    """(integer box inside a width x height image, or None, and whether it was clipped or why it is None)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return None, DEGENERATE
    whole = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    clipped = (max(whole[0], 0), max(whole[1], 0), min(whole[2], width), min(whole[3], height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, OUTSIDE
    return clipped, (CLIPPED if clipped != whole else None)


def open_image(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except OSError as e:  # PIL's message repeats the path
        reason = str(e).replace(f" '{path}'", "").replace(f" {path}", "")
        raise UserError(f"{path} is not a readable image ({reason}); re-download or remove it") from None
    return image


def save_jpeg(image: Image.Image, path: str, quality: int) -> None:
    image.convert("RGB").save(path, "JPEG", quality=quality)


class ChipSet:
    """The chips of one data set being written: image files, annotation entries, per-class and skip counts.

    A context manager: the chips go to a hidden folder beside `out`, which finish() moves into place; an error
    before that (a corrupt source image, Ctrl-C) removes the folder, so --out is left as it was.
    """

    def __init__(self, out: str, dataset: str, names: list, quality: int):
        self.final, self.dataset, self.names, self.quality = out, dataset, list(names), quality
        self.entries = {split: [] for split in SPLITS}
        self.counts = {split: [0] * len(names) for split in SPLITS}
        self.skipped = Counter()
        self.ignored = Counter()  # source entries that are no input: reason -> count
        self.ignored_example = {}
        self.empty_folders = []
        self.clipped = 0
        self._written = set()
        self.out = None

    def __enter__(self):
        parent = os.path.dirname(os.path.abspath(self.final))
        os.makedirs(parent, exist_ok=True)
        self.out = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(self.final))}.tmp-",
                                    dir=parent)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.out is not None and os.path.isdir(self.out):
            shutil.rmtree(self.out, ignore_errors=True)
        return False

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def ignore(self, reason: str, path: str) -> None:
        """Count a source entry that is not an input (a non-image file, a folder that is no class folder)."""
        self.ignored[reason] += 1
        self.ignored_example.setdefault(reason, path)

    def empty_folder(self, path: str) -> None:
        self.empty_folders.append(path)

    def crop_objects(self, split: str, image_path: str, stem: str, objects: list) -> None:
        """Save one chip `<stem>_<k>.jpg` per object (k, class_id, box) of the image at image_path."""
        if not objects:
            return
        with open_image(image_path) as image:
            for k, class_id, box in objects:
                clipped, note = clip_box(box, *image.size)
                if clipped is None:
                    self.skip(note)
                    continue
                if note == CLIPPED:
                    self.clipped += 1
                save_jpeg(image.crop(clipped), self._claim(split, class_id, f"{stem}_{k}.jpg"), self.quality)

    def add_image_file(self, split: str, class_id: int, src: str) -> None:
        """Save a whole image file as `<stem>.jpg`: JPEG copied byte for byte, other formats re-encoded."""
        target = self._claim(split, class_id, os.path.splitext(os.path.basename(src))[0] + ".jpg")
        with open_image(src) as image:
            if image.format == "JPEG":
                shutil.copyfile(src, target)
            else:
                save_jpeg(image, target, self.quality)

    def _claim(self, split: str, class_id: int, file_name: str) -> str:
        """Record a new chip and return its path; two inputs that map to one chip are an error."""
        rel = f"{split}/{class_id}/{file_name}"
        if rel in self._written:
            raise UserError(f"two inputs would both be written to {rel}; rename one of them in the raw data")
        self._written.add(rel)
        self.entries[split].append((class_id, file_name))
        self.counts[split][class_id] += 1
        folder = os.path.join(self.out, split, str(class_id))
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, file_name)

    def finish(self, extra: dict | None = None) -> None:
        """Write classes.json and the annotation files, move the data set to --out, then print the summary."""
        write_layout(self.out, self.dataset, self.names, self.entries, extra)
        install(self.out, self.final)
        self.out = None
        print(self.summary())

    def summary(self) -> str:
        width = max(len(n) for n in self.names + ["class"])
        totals = {split: sum(self.counts[split]) for split in SPLITS}
        lines = [f"{self.dataset}: {totals['train']} train / {totals['test']} test images in {self.final}",
                 f"{'id':>4}  {'class':<{width}}  {'train':>7}  {'test':>7}"]
        for class_id, name in enumerate(self.names):
            lines.append(f"{class_id:>4}  {name:<{width}}  {self.counts['train'][class_id]:>7}  "
                         f"{self.counts['test'][class_id]:>7}")
        lines.append(f"{'':>4}  {'total':<{width}}  {totals['train']:>7}  {totals['test']:>7}")
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
        lines.append(f"skipped objects: {skipped or 'none'}")
        if self.clipped:
            lines.append(f"boxes clipped to the image (kept): {self.clipped}")
        ignored = ", ".join(f"{reason}: {n} (e.g. {self.ignored_example[reason]})"
                            for reason, n in sorted(self.ignored.items()))
        lines.append(f"ignored source entries: {ignored or 'none'}")
        if self.empty_folders:
            lines.append(f"empty class folders (no image): {len(self.empty_folders)}: "
                         + ", ".join(self.empty_folders[:10]) + (", ..." if len(self.empty_folders) > 10
                                                                 else ""))
        return "\n".join(lines)

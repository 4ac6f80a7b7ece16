"""Image-list data sets over the processed layout, with the checks a user's data needs."""
import os
import sys

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from common.errors import UserError
from common.layout import read_list


class CorruptImage(UserError):
    pass


class ImageList(Dataset):
    """Images named by one or more annotation lists, or by an item list [(path, label)].

    A relative path in a list is resolved against `image_dir` (e.g. <root>/train); an absolute path is used as
    it is, so generated images can be added by a list of their own without copying them. `label_map` remaps
    original class ids (e.g. the tail classes of split.json to 0..K-1) and drops ids it does not hold.
    `transform` is one transform, or {name: transform}: then each image is read once and an item is
    ({name: transformed image}, label).
    """

    def __init__(self, image_dir: str | None = None, lists: list = (), transform=None,
                 num_classes: int | None = None, label_map: dict | None = None, on_corrupt: str = "skip",
                 check_files: bool = True, items: list | None = None):
        if on_corrupt not in ("skip", "error"):
            raise ValueError(on_corrupt)
        self.transform, self.on_corrupt, self.skipped = transform, on_corrupt, 0
        self.samples = [(str(path), int(label)) for path, label in items or []]
        if check_files:
            missing = [path for path, _ in self.samples if not os.path.isfile(path)]
            if missing:
                raise UserError(f"{len(missing)} of {len(self.samples)} images do not exist (e.g. "
                                f"{missing[0]}); fix the list or the data root")
        for lst in lists:
            for n, (rel, label) in enumerate(read_list(lst, num_classes), 1):
                if label_map is not None:
                    if label not in label_map:
                        continue
                    label = label_map[label]
                path = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(image_dir, rel))
                if check_files and not os.path.isfile(path):
                    raise UserError(f"{lst} line {n}: image {path} does not exist; fix the list or the data "
                                    "root")
                self.samples.append((path, label))
        if lists and not self.samples:
            raise UserError(f"no images selected from {', '.join(lists)}")
        self.targets = [label for _, label in self.samples]

    def __len__(self):
        return len(self.samples)

    def load(self, path: str) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB")

    def __getitem__(self, i):
        for k in range(len(self.samples)):
            path, label = self.samples[(i + k) % len(self.samples)]
            try:
                img = self.load(path)
                break
            except (OSError, UnidentifiedImageError, SyntaxError):
                if self.on_corrupt == "error":
                    raise CorruptImage(f"image {path} is corrupt; replace it, or pass --on-corrupt "
                                       "skip") from None
                self.skipped += 1
                print(f"warning: skipped corrupt image {path} ({self.skipped} so far in this process)",
                      file=sys.stderr)
        else:
            raise CorruptImage("every image of the list is unreadable")
        if isinstance(self.transform, dict):
            img = {name: t(img) for name, t in self.transform.items()}
        elif self.transform is not None:
            img = self.transform(img)
        return img, torch.tensor(label)

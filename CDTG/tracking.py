"""Generation quality while CDTG trains (train.py --eval-every): every few iterations, g_ema draws a fixed set
of images per tail class exactly as CDTG/generate.py would (same seed, same visit order of the class's real
images, the same fused latents), and CDTG.quality's Measurer measures them as CDTG/evaluate.py measures a
generated folder: the share the tail model assigns to the intended class, the share the independent classifier
assigns, feature diversity, and FID in the classifier's penultimate features against the class's first real
training images. Images go through uint8 and PIL as the saved files do (only the JPEG step is left out).
"""
import time
from types import SimpleNamespace

import torch

from CDTG.quality import Measurer, load_independent_classifier
from CDTG.sampling import generate_class
from common.errors import UserError


class QualityTracker:
    """reals: {tail label: ImageList of the class's training images at the GAN size} (CDTG.sampling's
    real_images_by_class); class_ids: each tail label's original class id (the classifier's label)."""

    def __init__(self, reals: dict, class_ids: list, tail, classifier_path: str, all_names: list, rt,
                 per_class: int, r: float, mixing: float, mixing_rule: str, seed: int = 0,
                 max_real: int = 100, batch_size: int = 64):
        if per_class < 2:
            raise UserError(f"--eval-per-class must be at least 2 (FID needs two images), got {per_class}")
        self.reals, self.class_ids, self.tail, self.rt = reals, class_ids, tail, rt
        self.mixing, self.mixing_rule, self.seed = mixing, mixing_rule, seed
        classifier, meta = load_independent_classifier(classifier_path, all_names, rt.device)
        self.measurer = Measurer(tail, rt, classifier, meta, batch_size=batch_size, kid_subsets=None)
        self.draw = SimpleNamespace(n_per_class=per_class, per_real=5, batch_size=batch_size, seed=seed,
                                    truncation=1.0, r=r, amp=True, grid_cols=1)
        self.real = {k: self.measurer.of_files([p for p, _ in images.samples], k, max_real)
                     for k, images in reals.items()}
        self.real_set = {k: self.measurer.image_set(out, k, class_ids[k]) for k, out in self.real.items()}

    def measure(self, g, proj) -> tuple:
        """(a Measurer row per tail class, the overall row) of generator g with projection P (both in eval
        mode); the global RNG is left untouched."""
        rows, gens = [], []
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.rt.cuda else []):
            torch.manual_seed(self.seed)  # as generate.py: seeded once, then the classes in order
            for k, images in self.reals.items():
                pixels = []
                generate_class(k, images, g, proj, self.tail, self.draw, self.rt, self.mixing,
                               self.mixing_rule, lambda i, p, source, pixels=pixels: pixels.append(p),
                               progress=False)
                gens.append(self.measurer.of_pixels(pixels, k))
                rows.append(self.measurer.class_row(gens[-1], self.real[k], k, self.class_ids[k],
                                                    self.real_set[k]))
        return rows, self.measurer.overall(rows, gens, list(self.real.values()))

    def evaluate(self, g, proj) -> dict:
        """The metrics.jsonl fields of measure()."""
        started = time.time()
        rows, overall = self.measure(g, proj)
        return {"eval_tail_model": overall["tail_model_consistency"],
                "eval_classifier": overall["classifier_consistency"], "eval_fid": overall["fid"],
                "eval_pooled_fid": overall["pooled_fid"],
                "eval_feature_diversity": overall["feature_diversity"],
                "eval_tail_model_per_class": [row["tail_model_consistency"] for row in rows],
                "eval_seconds": time.time() - started}

"""Generation quality while CDTG trains (train.py --eval-every): every few iterations, g_ema draws a fixed set of
images per tail class exactly as CDTG/generate.py would (same seed, same visit order of the class's real images,
the same fused latents), and they are measured as CDTG/evaluate.py measures a generated folder: the share the tail
model assigns to the intended class, the share the independent classifier assigns, and FID in the classifier's
penultimate features against the class's real training images. Images go through uint8 and PIL as the saved files
do (only the JPEG step is left out).
"""
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common.datasets import ImageList
from common.errors import UserError
from common.transforms import classification
from CDTG.quality import frechet_distance, load_independent_classifier, mean_pairwise_distance, share_correct
from CDTG.sampling import generate_class

KEYS = ("eval_tail_model", "eval_classifier", "eval_fid", "eval_pooled_fid", "eval_feature_diversity")


class QualityTracker:
    """reals: {tail label: ImageList of the class's training images at the GAN size} (CDTG.sampling's
    real_images_by_class); class_ids: each tail label's original class id (the classifier's label)."""

    def __init__(self, reals: dict, class_ids: list, tail, classifier_path: str, all_names: list, rt,
                 per_class: int, r: float, mixing: float, mixing_rule: str, seed: int = 0, max_real: int = 100,
                 batch_size: int = 64):
        if per_class < 2:
            raise UserError(f"--eval-per-class must be at least 2 (FID needs two images), got {per_class}")
        self.reals, self.class_ids, self.tail, self.rt = reals, class_ids, tail, rt
        self.mixing, self.mixing_rule, self.seed = mixing, mixing_rule, seed
        self.classifier, meta = load_independent_classifier(classifier_path, all_names, rt.device)
        self.cls_transform = classification(meta["img_size"], False, meta["norm"])
        self.tail_transform = classification(tail.input_size, False)  # evaluate.py's
        self.draw = SimpleNamespace(n_per_class=per_class, per_real=5, batch_size=batch_size, seed=seed,
                                    truncation=1.0, r=r, amp=True, grid_cols=1)
        self.batch_size = batch_size
        self.real_features = {k: self._real_features(images, max_real) for k, images in reals.items()}

    @torch.no_grad()
    def _real_features(self, images: ImageList, limit: int) -> np.ndarray:
        items = ImageList(items=images.samples[:limit], transform=self.cls_transform, on_corrupt="error",
                          check_files=False)
        feats = [self.classifier(x.to(self.rt.device))[1].float().cpu()
                 for x, _ in DataLoader(items, batch_size=self.batch_size, generator=torch.Generator())]
        return torch.cat(feats).numpy()

    @torch.no_grad()
    def _measure(self, pixels: list):
        pil = [Image.fromarray(p) for p in pixels]
        tail_pred, cls_pred, feats = [], [], []
        for s in range(0, len(pil), self.batch_size):
            chunk = pil[s: s + self.batch_size]
            tail_pred.append(self.tail(torch.stack([self.tail_transform(im) for im in chunk]).to(self.rt.device))[0]
                             .argmax(1).cpu())
            logits, feat = self.classifier(torch.stack([self.cls_transform(im) for im in chunk]).to(self.rt.device))
            cls_pred.append(logits.argmax(1).cpu())
            feats.append(feat.float().cpu())
        return torch.cat(tail_pred).numpy(), torch.cat(cls_pred).numpy(), torch.cat(feats).numpy()

    def evaluate(self, g, proj) -> dict:
        """The quality of generator g with projection P (both in eval mode); the global RNG is left untouched."""
        started = time.time()
        rows, gen_all, real_all = [], [], []
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.rt.cuda else []):
            torch.manual_seed(self.seed)  # as generate.py: seeded once, then the classes in order
            for k, images in self.reals.items():
                pixels = []
                generate_class(k, images, g, proj, self.tail, self.draw, self.rt, self.mixing, self.mixing_rule,
                               lambda i, p, source: pixels.append(p), progress=False)
                tail_pred, cls_pred, feat = self._measure(pixels)
                rows.append((share_correct(tail_pred, k), share_correct(cls_pred, self.class_ids[k]),
                             frechet_distance(feat, self.real_features[k]), mean_pairwise_distance(feat)))
                gen_all.append(feat)
                real_all.append(self.real_features[k])
        tail_share, cls_share, fid, diversity = (float(np.nanmean(col)) for col in zip(*rows))
        return {"eval_tail_model": tail_share, "eval_classifier": cls_share, "eval_fid": fid,
                "eval_pooled_fid": frechet_distance(np.concatenate(gen_all), np.concatenate(real_all)),
                "eval_feature_diversity": diversity, "eval_tail_model_per_class": [row[0] for row in rows],
                "eval_seconds": time.time() - started}

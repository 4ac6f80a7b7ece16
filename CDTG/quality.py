"""Generation-quality measures of CDTG, the one measurer of CDTG/evaluate.py (a generated folder) and of
train.py's quality tracking (CDTG/tracking.py): class consistency, diversity, and FID / KID in a classifier's
feature space and, optionally, in torch-fidelity's InceptionV3 features.

FID_cls and KID_cls use the penultimate features of an independent classifier trained on the real data (not
Inception: its ImageNet features say little about 64 px remote-sensing chips, and cannot be downloaded
offline). Those values are comparable between runs that use the same classifier, not with published FIDs.
"""
import contextlib
import io
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from CDTG.losses import lattice_shares
from common import checkpoint
from common.backbones import build_classifier
from common.datasets import ImageList
from common.errors import UserError, batch_loop
from common.transforms import classification

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def share_correct(predicted, intended) -> float:
    """Share of images assigned to their intended class."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    return float((predicted == intended).mean()) if len(predicted) else float("nan")


def _sqrtm_trace(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(A B) for symmetric PSD A, B, via the symmetric form sqrt(A)^T B sqrt(A) (stable, no
    complex)."""
    w, v = np.linalg.eigh(a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FID between two feature sets [N, D], [M, D]: |mu_x - mu_y|^2 + tr(Sx + Sy - 2 sqrt(Sx Sy))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    mu_x, mu_y = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sx, sy = np.atleast_2d(sx), np.atleast_2d(sy)
    value = ((mu_x - mu_y) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * _sqrtm_trace(sx, sy)
    return float(max(value, 0.0))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple:
    """KID (unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3) averaged over random subsets.

    Returns (mean, std over subsets); the subset size is capped by the smaller set."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def pair_indices(n: int, max_pairs: int, seed: int = 0) -> list:
    """All unordered pairs of range(n) when there are at most max_pairs, else max_pairs random distinct
    pairs."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < max_pairs:
        i, j = rng.choice(n, 2, replace=False)
        pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def mean_pairwise_distance(features: np.ndarray, max_pairs: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance between pairs of feature vectors (a diversity measure; 0 = all identical)."""
    features = np.asarray(features, np.float64)
    pairs = pair_indices(len(features), max_pairs, seed)
    if not pairs:
        return float("nan")
    i, j = np.array(pairs).T
    return float(np.linalg.norm(features[i] - features[j], axis=1).mean())


class PenultimateFeatures:
    """Wraps a classifier so that a call returns (logits, the input of its last Linear layer)."""

    def __init__(self, model: nn.Module):
        self.model = model
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ValueError(f"{type(model).__name__} has no Linear layer")
        self._feat = None
        last[-1].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self._feat = inputs[0]

    def __call__(self, x):
        logits = self.model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits, self._feat.flatten(1)


def load_independent_classifier(path: str, names: list, device):
    """A Classification/train.py model_final.pt as PenultimateFeatures, and the file's dict."""
    ck = checkpoint.load(path, "classifier")
    if not isinstance(ck, dict) or not all(k in ck for k in ("model", "arch", "names", "img_size", "norm")):
        raise UserError(f"{path} is not a Classification/train.py model_final.pt (needs model, arch, names, "
                        f"img_size, norm)")
    if list(ck["names"]) != list(names):
        raise UserError(f"classifier {path} was trained on other classes than the data set's; pass one "
                        f"trained on this data root")
    model = build_classifier(ck["arch"], len(names), "none", verbose=False)
    model.load_state_dict(ck["model"])
    return PenultimateFeatures(model.to(device).eval()), ck


def load_lpips(net: str = "alex", device="cpu", random_trunk: bool = False):
    """(LPIPS model, None), or (None, reason) when it or its backbone weights cannot be had (offline).
    `random_trunk` leaves the backbone randomly initialised (no download; for tests)."""
    try:
        import lpips
    except ImportError:
        return None, "unavailable: the lpips package is not installed"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=net, pnet_rand=random_trunk, verbose=False).to(device).eval()
    # torchvision backbone weights are downloaded on first use: whatever fails there (no network, a damaged
    # cache, a proxy's error) leaves LPIPS unavailable instead of ending the evaluation
    except Exception as e:  # noqa: BLE001
        return None, f"unavailable: LPIPS {net} backbone weights could not be loaded ({type(e).__name__})"
    return model, None


@torch.no_grad()
def mean_pairwise_lpips(model, images: torch.Tensor, max_pairs: int = 200, batch: int = 50,
                        seed: int = 0) -> float:
    """Mean LPIPS over pairs of images in [-1, 1] [N, 3, H, W]."""
    pairs = pair_indices(len(images), max_pairs, seed)
    if not pairs:
        return float("nan")
    device = next(model.parameters()).device
    values = []
    for s in range(0, len(pairs), batch):
        i, j = np.array(pairs[s: s + batch]).T
        values.append(model(images[i].to(device), images[j].to(device)).flatten().cpu())
    return float(torch.cat(values).mean())


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
    """Real images as the generator learnt them (resized to its size), and generated ones, as uint8 tensors,
    which torch-fidelity's InceptionV3 takes (it resizes them to 299 px itself)."""
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


# ----------------------------------------------------------------------------------------------- the measurer

class Pictures(Dataset):
    """Images held in memory (PIL) as ImageList gives files: ({name: transformed image}, label)."""

    def __init__(self, images: list, label: int, transforms: dict):
        self.images, self.label, self.transforms = images, label, transforms

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {name: t(self.images[i]) for name, t in self.transforms.items()}, torch.tensor(self.label)


class Measurer:
    """The one measurement of tail-class images, for evaluate.py (files) and quality tracking (images in
    memory).

    The judges, each with the transform of its input: the tail model (always); the independent classifier
    (its predictions, and its penultimate features for feature diversity, FID_cls and KID_cls); CLIP
    zero-shot over the tail-class prompts (`text`: their unit features); torch-fidelity's InceptionV3 (FID
    and KID); LPIPS on the images at the generator's `size`. kid_subsets None leaves KID_cls out."""

    def __init__(self, tail, rt, classifier=None, classifier_meta: dict | None = None, clip=None, text=None,
                 inception=None, lpips=None, size: int | None = None, batch_size: int = 64, workers: int = 0,
                 feature_pairs: int = 2000, lpips_pairs: int = 200, kid_subsets: int | None = 100,
                 kid_subset_size: int = 1000, progress: bool = False):
        self.tail, self.rt, self.classifier, self.clip, self.text = tail, rt, classifier, clip, text
        self.inception, self.lpips = inception, lpips
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.feature_pairs, self.lpips_pairs = feature_pairs, lpips_pairs
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        # the tail model sees real and generated images at its own input size; LPIPS compares them at G's size
        self.transforms = {"tail": classification(tail.input_size, False)}
        if size is not None:  # LPIPS and the lattice share see the images at G's size
            self.transforms["gan"] = classification(size, False)
        if classifier is not None:
            self.transforms["cls"] = classification(classifier_meta["img_size"], False,
                                                    classifier_meta["norm"])
        if clip is not None:
            self.transforms["clip"] = clip.preprocess
        if inception is not None:
            self.transforms["inception"] = inception_transform(size)

    def of_files(self, paths: list, label: int, limit: int | None = None) -> dict:
        """The judges' outputs on the first `limit` image files (a corrupt one stops the run: predictions are
        compared with each item's own class)."""
        items = ImageList(items=[(p, label) for p in paths[:limit]], transform=self.transforms,
                          on_corrupt="error", check_files=False)
        return self.outputs(items)

    def of_pixels(self, pixels: list, label: int) -> dict:
        """The judges' outputs on uint8 HWC images (through PIL, as a saved file would be read)."""
        return self.outputs(Pictures([Image.fromarray(p) for p in pixels], label, self.transforms))

    @batch_loop("evaluation")
    @torch.no_grad()
    def outputs(self, images: Dataset) -> dict:
        """{"tail", "cls", "clip": predictions; "feat": classifier features; "inception": Inception features;
        "images": the first 2 x lpips_pairs GAN-size images, for LPIPS}, for those judges that are there."""
        keep = 0 if self.lpips is None else 2 * self.lpips_pairs
        loader = DataLoader(images, batch_size=self.batch_size, num_workers=self.workers,
                            pin_memory=self.rt.cuda, generator=torch.Generator())  # global RNG left alone
        out = {"tail": [], "cls": [], "clip": [], "feat": [], "inception": [], "images": [], "lattice": []}
        kept, device = 0, self.rt.device
        batches = tqdm(loader, desc="evaluating", leave=False, dynamic_ncols=True, disable=not self.progress)
        for batch, _ in batches:
            out["tail"].append(self.tail(batch["tail"].to(device))[0].argmax(1).cpu())
            if "gan" in batch:
                out["lattice"].append(lattice_shares(batch["gan"]))
            if kept < keep:
                out["images"].append(batch["gan"][: keep - kept])
                kept += len(out["images"][-1])
            if self.classifier is not None:
                logits, feat = self.classifier(batch["cls"].to(device))
                out["cls"].append(logits.argmax(1).cpu())
                out["feat"].append(feat.float().cpu())
            if self.clip is not None:
                img = self.clip.model.encode_image(batch["clip"].to(device)).float()
                img = nn.functional.normalize(img, dim=-1)
                out["clip"].append((img @ self.text.t()).argmax(1).cpu())
            if self.inception is not None:
                out["inception"].append(self.inception(batch["inception"].to(device)).double().cpu())
        return {k: torch.cat(v) if k == "images" else torch.cat(v).numpy() for k, v in out.items() if v}

    def image_set(self, out: dict, tail_label: int, class_id: int) -> dict:
        """Class consistency and diversity of one set of images (generated or real) of a tail class."""
        row = {"tail_model_consistency": share_correct(out["tail"], tail_label)}
        if "clip" in out:
            row["clip_consistency"] = share_correct(out["clip"], tail_label)
        if "cls" in out:
            row["classifier_consistency"] = share_correct(out["cls"], class_id)
            row["feature_diversity"] = mean_pairwise_distance(out["feat"], self.feature_pairs)
        if self.lpips is not None:
            row["lpips_diversity"] = mean_pairwise_lpips(self.lpips, out["images"], self.lpips_pairs)
        if "lattice" in out:
            row["lattice_share"] = float(np.mean(out["lattice"]))
        return row

    def distances(self, gen: dict, real: dict) -> dict:
        """FID_cls (and KID_cls) in the classifier's features, FID and KID in Inception's: generated vs
        real."""
        row = {}
        if "feat" in gen:
            row["fid"] = frechet_distance(gen["feat"], real["feat"])
            if self.kid_subsets is not None:
                row["kid"], row["kid_std"] = kernel_inception_distance(gen["feat"], real["feat"],
                                                                       self.kid_subsets, self.kid_subset_size)
        if "inception" in gen:
            d = inception_distances(gen["inception"], real["inception"], self.kid_subsets,
                                    self.kid_subset_size)
            row.update(fid_inception=d["fid"], kid_inception=d["kid"], kid_inception_std=d["kid_std"])
        return row

    def class_row(self, gen: dict, real: dict, tail_label: int, class_id: int,
                  real_set: dict | None = None) -> dict:
        """A tail class's measures: each of image_set's for the generated images and (real_...) the real ones
        (`real_set`: already measured), then the distances."""
        mine = self.image_set(gen, tail_label, class_id)
        theirs = real_set if real_set is not None else self.image_set(real, tail_label, class_id)
        row = {}
        for key, value in mine.items():
            row[key], row["real_" + key] = value, theirs[key]
        return {**row, **self.distances(gen, real)}

    def overall(self, rows: list, gens: list, reals: list) -> dict:
        """Class-balanced means of the rows' measures, and the distances of the classes pooled
        (pooled_...)."""
        overall = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]
                   if key not in ("class_id", "name", "tail_label") and not key.startswith("n_")}
        pooled = {k: np.concatenate([o[k] for o in gens]) for k in ("feat", "inception") if k in gens[0]}
        pooled_real = {k: np.concatenate([o[k] for o in reals]) for k in pooled}
        overall.update({"pooled_" + k: v for k, v in self.distances(pooled, pooled_real).items()})
        return overall

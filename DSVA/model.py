"""DSVA's network: a CLIP ViT image tower returning every token, a global attribute head and local
attribute prototypes, and the optional proposal branch.

Tokens: open_clip's `VisionTransformer.forward_intermediates(indices=1, output_fmt='NLC',
output_extra_tokens=True, intermediates_only=True)` gives the class token and the patch tokens after the last
transformer block, before `ln_post`: the same tensor as Hugging Face's `last_hidden_state`, which upstream
used (`post_layernorm` there touches only the pooled class token). `ln_post=True` applies the final LayerNorm
to all tokens instead. Sizes follow the tower: width W, a g x g patch grid (ViT-B/32 at 224 px: W 768, g 7, 50
tokens).

Class scores are returned as logits a . A (A: attributes x classes); the softmax belongs to the loss
(DSVA/losses.py) and to the evaluation (DSVA/evaluate.py).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

PAPER_CLIP = "flax-community/clip-rsicd"  # the CLIP the DSVA paper fine-tunes from, by its Hugging Face id
PAPER_CLIP_NOTE = (f" (default: the paper's {PAPER_CLIP}, from checkpoints/{PAPER_CLIP.split('/')[1]} or the "
                   f"Hub); none = a randomly initialised CLIP, only when asked for")


class TokenEncoder(nn.Module):
    """An open_clip VisionTransformer -> tokens [B, 1 + g*g, W] (class token first)."""

    def __init__(self, visual: nn.Module, ln_post: bool = False):
        super().__init__()
        if not all(hasattr(visual, a) for a in ("conv1", "grid_size", "forward_intermediates")):
            raise UserError(f"DSVA needs an open_clip ViT image tower, got {type(visual).__name__}; pick a "
                            f"ViT CLIP model (e.g. ViT-B-32)")
        gh, gw = visual.grid_size
        if gh != gw:
            raise UserError(f"DSVA needs a square patch grid, the CLIP tower has {gh} x {gw}")
        self.visual, self.ln_post = visual, ln_post
        self.width, self.grid = visual.conv1.out_channels, gh
        self.image_size = int(visual.image_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(x, indices=1, output_fmt="NLC", output_extra_tokens=True,
                                                intermediates_only=True, normalize_intermediates=self.ln_post)
        return torch.cat([out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1)


class DSVA(nn.Module):
    """Global branch: mean of all tokens -> LayerNorm -> Linear to attributes ("ALE").
    Local branch: prototypes P [attributes, W]; attention M = P . tokens^T; attributes = max over tokens
    (class token included); attention maps = M over the patch tokens as g x g grids.
    """

    def __init__(self, visual: nn.Module, num_attributes: int, groups: dict | None = None,
                 ln_post: bool = False, proposal_threshold: float = 1.0, proposal_weight: float = 1.0):
        super().__init__()
        self.encoder = TokenEncoder(visual, ln_post)
        width = self.encoder.width
        self.norm = nn.LayerNorm(width)
        self.ale = nn.Linear(width, num_attributes)
        self.prototypes = nn.Parameter(2e-4 * torch.rand(num_attributes, width))
        self.groups = [list(ids) for ids in (groups or {"all": list(range(num_attributes))}).values()]
        self.proposal_threshold, self.proposal_weight = proposal_threshold, proposal_weight

    @property
    def grid(self) -> int:
        return self.encoder.grid

    def head_parameters(self) -> list:
        """What upstream trains in the prototype-only epochs: prototypes and the ALE linear layer."""
        return [self.prototypes, self.ale.weight, self.ale.bias]

    def attributes(self, tokens: torch.Tensor) -> tuple:
        """(global attributes [B, K], local attributes [B, K], attention maps [B, K, g, g]) from tokens."""
        global_attr = self.ale(self.norm(tokens.mean(1)))
        m = torch.einsum("kd,bnd->bkn", self.prototypes.to(tokens.dtype), tokens)
        local_attr = m.max(2).values
        attention = m[:, :, 1:].reshape(m.shape[0], m.shape[1], self.grid, self.grid)
        return global_attr, local_attr, attention

    def forward(self, x: torch.Tensor, class_attributes: torch.Tensor, proposal: bool = False) -> dict:
        """class_attributes: [K, C] (attributes x candidate classes). Returns logits 'global', 'local' (and
        'proposal') [B, C], the attribute predictions 'global_attr', 'local_attr' [B, K] and the attention
        maps 'attention' [B, K, g, g]. With the proposal branch on, 'global' = a_g . A + w * a_p . A, as
        upstream."""
        global_attr, local_attr, attention = self.attributes(self.encoder(x))
        a = class_attributes.to(global_attr.dtype)
        out = {"global_attr": global_attr, "local_attr": local_attr, "attention": attention,
               "global": global_attr @ a, "local": local_attr @ a}
        if proposal:
            with torch.no_grad():
                crops = proposal_crops(x, attention.detach().float(), local_attr.detach(), self.groups,
                                       self.proposal_threshold)
            proposal_attr = self.ale(self.norm(self.encoder(crops).max(1).values))
            out["proposal_attr"] = proposal_attr
            out["proposal"] = proposal_attr @ a
            out["global"] = out["global"] + self.proposal_weight * out["proposal"]
        return out


def largest_component_box(mask: np.ndarray) -> tuple | None:
    """(row0, col0, row1, col1) (end exclusive) of the largest 8-connected True region, or None."""
    from scipy import ndimage
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return None
    biggest = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    rows, cols = np.nonzero(labels == biggest)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def proposal_crops(images: torch.Tensor, attention: torch.Tensor, local_attr: torch.Tensor, groups: list,
                   threshold: float) -> torch.Tensor:
    """Upstream's proposal: per group the attribute with the highest local score; its map up-sampled
    to the image, min-max normalised, averaged over groups, thresholded at mean * threshold; the bounding box
    of the largest connected region is cropped and resized back to the input size."""
    b, _, h, w = images.shape
    g = attention.shape[-1]
    picks = torch.stack([torch.tensor(ids, device=local_attr.device)[local_attr[:, ids].argmax(1)]
                         for ids in groups], 1)  # [B, groups]
    maps = attention.gather(1, picks[:, :, None, None].expand(-1, -1, g, g))
    maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=True)
    maps = maps - maps.amin((2, 3), keepdim=True)
    maps = maps / maps.amax((2, 3), keepdim=True).clamp_min(1e-12)
    mean_map = maps.mean(1)
    masks = (mean_map > mean_map.mean((1, 2), keepdim=True) * threshold).cpu().numpy()
    crops = torch.empty_like(images)
    for i in range(b):
        box = largest_component_box(masks[i]) or (0, 0, h, w)
        r0, c0, r1, c1 = box
        crops[i:i + 1] = F.interpolate(images[i:i + 1, :, r0:r1, c0:c1], size=(h, w), mode="bilinear",
                                       align_corners=True)
    return crops


# --------------------------------------------------------------------------------------------- backbone files

def describe_visual(clip_name: str, visual: nn.Module) -> dict:
    """What rebuilds this image tower without its original weights file: the open_clip model name, its config
    and the activation (Hugging Face / OpenAI CLIPs use QuickGELU)."""
    import open_clip
    from open_clip.transformer import QuickGELU
    return {"clip_model": clip_name, "clip_cfg": open_clip.get_model_config(clip_name),
            "quick_gelu": any(isinstance(m, QuickGELU) for m in visual.modules())}


def build_visual(clip_model: str, clip_cfg: dict | None, quick_gelu: bool) -> nn.Module:
    """A randomly initialised image tower of the architecture `describe_visual` recorded."""
    import open_clip

    from common.clip import quiet_open_clip, register_model_config
    if clip_cfg:
        register_model_config(clip_model, clip_cfg)
    if open_clip.get_model_config(clip_model) is None:
        raise UserError(f"unknown CLIP model '{clip_model}' and no config stored with the weights")
    with quiet_open_clip():
        return open_clip.create_model(clip_model, force_quick_gelu=quick_gelu).visual


# --------------------------------------------------------------------------------------------- original names

ORIGINAL_HEAD = (("prototype_vectors.layer4", "prototypes"), ("ALE_vector.0.", "norm."),
                 ("ALE_vector.1.", "ale."))


def original_visual_state(head: dict, clip: dict | None, source: str) -> dict:
    """open_clip VisionTransformer keys from the original's image tower: `embedding_module.*` of a whole
    CLIP_proto state dict (Hugging Face CLIPVisionTransformer names), else the `vision_model.*` of `clip`, a
    Hugging Face CLIPModel state dict."""
    from common.clip import hf_to_open_clip
    hf = {"vision_model." + k[len("embedding_module."):]: v for k, v in head.items()
          if k.startswith("embedding_module.")}
    if not hf and clip is not None:
        hf = {k: v for k, v in clip.items() if k.startswith("vision_model.")}
    if not hf:
        raise UserError(f"{source} holds no image tower (no embedding_module.* keys) and no Hugging Face "
                        f"CLIPModel state dict with vision_model.* keys was given")
    return {k[len("visual."):]: v for k, v in hf_to_open_clip(hf, source).items()}


def from_original(head: dict, clip: dict | None = None, clip_model: str = "ViT-B-32", quick_gelu: bool = True,
                  groups: dict | None = None, ln_post: bool = False, proposal_threshold: float = 1.0,
                  proposal_weight: float = 1.0, source: str = "the original DSVA weights") -> DSVA:
    """A DSVA model with the original's weights: `head` in its names (`prototype_vectors.layer4` [A, W, 1] ->
    prototypes, `ALE_vector.0.*` -> norm (LayerNorm), `ALE_vector.1.*` -> ale (Linear)), with or without its
    `embedding_module.*`; otherwise the image tower comes from `clip`, a Hugging Face CLIPModel state dict
    (ViT-B/32 and QuickGELU, as the original's). The projection `proj`, which DSVA does not use, stays at
    init."""
    ours = {}
    for key, value in head.items():
        new = next((o + key[len(u):] for u, o in ORIGINAL_HEAD if key.startswith(u)), None)
        if new is not None:
            ours[new] = value.squeeze(-1) if new == "prototypes" else value
        elif not key.startswith("embedding_module."):
            raise UserError(f"{source}: unexpected key '{key}'; the original DSVA head holds "
                            f"prototype_vectors.layer4 and ALE_vector.0/1.*")
    wanted = ["prototypes", "norm.weight", "norm.bias", "ale.weight", "ale.bias"]
    missing = [k for k in wanted if k not in ours]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)} (in the original's names: "
                        f"prototype_vectors.layer4, ALE_vector.0.weight/bias, ALE_vector.1.weight/bias)")
    visual = build_visual(clip_model, None, quick_gelu)
    state = original_visual_state(head, clip, source)
    own = visual.state_dict()
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
             if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and k != "proj"]
    if unexpected or wrong or missing:
        first = (unexpected or wrong or missing)[0]
        raise UserError(f"{source}: the image tower does not fit open_clip {clip_model} ({len(missing)} "
                        f"missing, {len(unexpected)} unexpected, {len(wrong)} of other shape keys, e.g. "
                        f"{first})")
    visual.load_state_dict(state, strict=False)
    model = DSVA(visual, ours["prototypes"].shape[0], groups, ln_post, proposal_threshold, proposal_weight)
    try:
        model.load_state_dict(ours, strict=False)
    except RuntimeError:
        raise UserError(f"{source}: the head's shapes (prototypes {tuple(ours['prototypes'].shape)}) do not "
                        f"fit {clip_model}'s width {model.encoder.width}") from None
    return model

"""One CDTG training iteration: D step, lazy R1, G step with the consistency terms, lazy
path-length regularisation, EMA; and the state that an exact resume needs.

Used by CDTG/train.py and benchmarks/cdtg_step.py. Under torchrun, gradients are averaged across processes by
one all-reduce per optimiser step (`sync_grads`); this works with the double backward of R1 and path length.
"""
import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from CDTG.augment import AdaptiveAugment
from CDTG.conditioning import FeatureProjection, TailClassifier, fused_latents
from CDTG.conv_shortcuts import use_conv_shortcuts
from CDTG.losses import (
    classifier_consistency_loss,
    clip_consistency_loss,
    d_logistic_loss,
    feature_match_loss,
    g_nonsaturating_loss,
    lattice_shares,
    lowpass,
    mode_seeking_loss,
    path_length_penalty,
    r1_penalty,
    reconstruction_loss,
    released_clip_input,
    spectral_excess,
    spectral_shares,
)
from CDTG.ops import stddev_group
from common.clip import image_features
from common.distributed import Runtime, autocast, grad_scaler

MODES = ("paper", "code")


@dataclass
class StepConfig:
    mode: str = "paper"  # 'paper': consistency terms back-propagated, P trained; 'code': as released
    r_train: float = 0.8
    mixing: float = 0.9
    mixing_rule: str = "always"
    lambda_cls: float = 1.0
    lambda_clip: float = 1.0
    lr: float = 0.002
    r1: float = 10.0
    d_reg_every: int = 16
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    g_reg_every: int = 4
    ema_decay: float = 0.5 ** (32 / 10_000)
    amp: bool = True
    compile: str | None = None  # torch.compile mode for G and D in the unregularised passes; None: eager
    train_p: bool = True  # --mode paper trains P unless this is off (--freeze-p)
    lambda_ms: float = 0.0  # mode-seeking term (not in the paper; CDTG.losses.mode_seeking_loss)
    consistency_lowpass: bool = False  # the tail model and CLIP see G's images through CDTG.losses.lowpass
    consistency_every: int = 1  # --mode paper: the consistency terms on every k-th G step, weighted k
    lambda_feat: float = 0.0  # the tail model's features of G(x's feature) pulled towards x's (not in paper)
    lambda_rec: float = 0.0  # G(x's feature) pulled towards x in pixels, both low-passed (not in the paper)
    rec_blur: bool = True  # False: the reconstruction term on the images as generated, every frequency tied
    lambda_lattice: float = 0.0  # G's spectral power at 2- and 4-pixel periods penalised (not in the paper)
    lambda_spectrum: float = 0.0  # G's high-frequency power above twice the real images' (not in the paper)
    reuse_fakes: bool = False  # G's step first; D's step on G's images of that step (one G pass fewer)


def paired_forward(d: nn.Module, first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor,
                   group_size: int | None) -> tuple:
    """d(first, labels) and d(second, labels) in one call of twice the batch, each minibatch-stddev group
    holding the samples it holds in its own call (the same outputs within float rounding, fewer and larger
    convolutions); two calls where the doubled batch would group differently or `group_size` is None."""
    b = first.shape[0]
    group = stddev_group(group_size, b) if group_size else 0
    if not group or stddev_group(group_size, 2 * b) != group:
        return d(first, labels), d(second, labels)
    m = b // group  # sample n's group holds n, n + m, n + 2m, ...: keep that stride within each half
    both = torch.cat([first.unflatten(0, (group, m)), second.unflatten(0, (group, m))], 1).flatten(0, 1)
    out = d(both, labels.view(group, m).repeat(1, 2).flatten()).unflatten(0, (group, 2 * m))
    return out[:, :m].flatten(0, 1), out[:, m:].flatten(0, 1)


def lazy_adam(params, lr: float, reg_every: int) -> torch.optim.Adam:
    """StyleGAN2's lazy-regularisation correction: lr and beta exponents scaled by k / (k + 1). PyTorch's
    fused Adam (one kernel for all parameters, on CUDA and on the CPU; the same update within float rounding;
    on the CPU 2.6x faster than the default for-each form for CDTG's many small tensors)."""
    params = list(params)
    ratio = reg_every / (reg_every + 1) if reg_every > 0 else 1.0
    fused = bool(params) and all(p.device.type in ("cuda", "cpu") for p in params)
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0 ** ratio, 0.99 ** ratio), fused=fused or None)


class Draws:
    """Where a step gets its random numbers, per stage ('d', 'g', 'path'): None means "draw it as usual" (the
    fused latents' n, the generator's crossover index and per-layer noise, the path-length perturbation).
    Tests substitute recorded draws; production uses this class as is."""

    def latent_noise(self, stage: str):
        return None

    def inject_index(self, stage: str):
        return None

    def layer_noise(self, stage: str):
        return None

    def path_noise(self):
        return None


@torch.no_grad()
def round_to_half(module: nn.Module) -> nn.Module:
    """Round CLIP's weights to float16 and back as OpenAI's loader leaves them on the CPU: the weights and
    biases of convolutions, linear layers and attention input projections, and the two projection matrices
    (`proj`, `text_projection`); LayerNorms, embeddings and the temperature keep float32."""
    tensors = []
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            tensors += [m.weight, m.bias]
        if isinstance(m, nn.MultiheadAttention):
            tensors += [getattr(m, a)
                        for a in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                                  "in_proj_bias", "bias_k", "bias_v")]
        tensors += [getattr(m, a) for a in ("proj", "text_projection")
                    if isinstance(getattr(m, a, None), torch.Tensor)]
    for t in tensors:
        if t is not None:
            t.copy_(t.half().float())
    return module


class CDTGTrainer:
    """Holds G, D, P (and their EMA copies), the frozen tail classifier and CLIP, and both optimisers."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, projection: FeatureProjection,
                 tail: TailClassifier, rt: Runtime, cfg: StepConfig, clip=None, text_features=None,
                 augment: AdaptiveAugment | None = None, g_ema: nn.Module | None = None,
                 p_ema: nn.Module | None = None, draws: Draws | None = None):
        if cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.reuse_fakes and cfg.lambda_ms > 0:
            raise ValueError("reuse_fakes needs lambda_ms 0: the mode-seeking batch is not D's batch")
        self.cfg, self.rt = cfg, rt
        self.g, self.d, self.proj, self.tail = generator, discriminator, projection, tail
        self.draws = draws or Draws()
        self.paper = cfg.mode == "paper"  # the mode's one spelling below; False: --mode code, as released
        self.tail.requires_grad_(False)
        self.tail.use_batch_statistics(not self.paper)
        self.clip, self.text_features = clip, text_features
        if self.paper:  # --mode code keeps the release's float path: its train-mode tail model is chaotic
            self.tail.use_shortcuts()
            if clip is not None:
                use_conv_shortcuts(clip.model)
        self.clip_scale = float(clip.model.logit_scale.exp()) if clip is not None else None
        self.augment = augment
        # torch.compile does not differentiate twice: R1 and path length always run the eager modules
        self.g_plain, self.d_plain = self.g, self.d
        if cfg.compile:
            mode = None if cfg.compile == "default" else cfg.compile
            self.g_plain, self.d_plain = torch.compile(self.g, mode=mode), torch.compile(self.d, mode=mode)
        self.g_ema = (g_ema if g_ema is not None else copy.deepcopy(generator)).eval().requires_grad_(False)
        self.p_ema = (p_ema if p_ema is not None else copy.deepcopy(projection)).eval().requires_grad_(False)
        # every process starts from rank 0's weights: only the gradients are averaged after
        if rt.distributed:
            for module in (self.g, self.d, self.proj, self.g_ema, self.p_ema):
                for tensor in [*module.parameters(), *module.buffers()]:
                    torch.distributed.broadcast(tensor.data, src=0)
        self.train_p = self.paper and cfg.train_p  # P is trained (not under --freeze-p)
        self.proj.requires_grad_(self.train_p)
        g_params = list(self.g.parameters()) + (list(self.proj.parameters()) if self.train_p else [])
        self.g_params, self.d_params = g_params, list(self.d.parameters())
        self.g_optim = lazy_adam(g_params, cfg.lr, cfg.g_reg_every)
        self.d_optim = lazy_adam(self.d_params, cfg.lr, cfg.d_reg_every)
        self.g_scaler = grad_scaler(rt, cfg.amp)
        self.d_scaler = grad_scaler(rt, cfg.amp)
        self.mean_path_length = torch.zeros((), device=rt.device)
        self.real_spectrum = None  # --lambda-spectrum: running mean of the real batches' spectral shares
        self.timer = None  # phase name -> context manager (benchmarks/cdtg_step.py --profile)

    # ------------------------------------------------------------------------------------------ helpers

    def phase(self, name: str):
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()

    def _aug(self, x):
        return self.augment(x) if self.augment is not None else x

    def sync_grads(self, params) -> None:
        """Average gradients over processes (a no-op in a single process)."""
        if not self.rt.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.rt.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone()
            offset += n

    def _consistency(self, fake, labels, feat, train: bool) -> dict:
        """L_cls and L_clip of generated images (and, with lambda_feat, their features' distance to `feat`,
        the conditioning images'); with gradient when `train`, else under no_grad (logged only).
        --mode code computes L_clip as released: wrapped bytes through PIL, cross-entropy on probabilities."""
        cfg, out = self.cfg, {}
        if cfg.consistency_lowpass:
            fake = lowpass(fake)
        with torch.set_grad_enabled(train and (cfg.lambda_cls > 0 or cfg.lambda_feat > 0)):
            logits, fake_feat = self.tail(fake)
            out["cls"] = classifier_consistency_loss(logits, labels)
            if cfg.lambda_feat > 0:
                out["feat"] = feature_match_loss(self.proj.reduce(fake_feat.float()), feat)
        if self.clip is not None:
            with torch.set_grad_enabled(train and cfg.lambda_clip > 0):
                if not self.paper:
                    pixels = released_clip_input(self.clip.preprocess, fake)
                    feats = F.normalize(self.clip.model.encode_image(pixels).float(), dim=-1)
                else:
                    feats = image_features(self.clip, fake)
                out["clip"] = clip_consistency_loss(feats, self.text_features, labels, self.clip_scale,
                                                    double_softmax=not self.paper)
        return out

    def _styles(self, stage: str, feat: torch.Tensor) -> list:
        cfg = self.cfg
        return fused_latents(self.proj(feat), cfg.r_train, cfg.mixing, cfg.mixing_rule,
                             self.draws.latent_noise(stage))

    def _generate(self, stage: str, feat, labels, **kw):
        g = self.g if stage == "path" else self.g_plain
        return g(self._styles(stage, feat), labels, inject_index=self.draws.inject_index(stage),
                 noise=self.draws.layer_noise(stage), **kw)

    @torch.no_grad()
    def _real_spectrum(self, real: torch.Tensor, decay: float = 0.99) -> torch.Tensor:
        """The real images' mean spectral shares, a running mean over the batches (at first: the first's)."""
        batch = spectral_shares(real).mean(0)
        if self.real_spectrum is None or self.real_spectrum.shape != batch.shape:
            self.real_spectrum = batch
        else:
            self.real_spectrum.lerp_(batch, 1 - decay)
        return self.real_spectrum

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.cfg.ema_decay
        torch._foreach_lerp_(list(self.g_ema.parameters()), list(self.g.parameters()), 1 - decay)
        if self.train_p:
            torch._foreach_lerp_(list(self.p_ema.parameters()), list(self.proj.parameters()), 1 - decay)

    # ------------------------------------------------------------------------------------------ one iteration

    def _d_step(self, real, labels, feat, iteration: int, log: dict, fake=None) -> None:
        """D's logistic step (on `fake`, or on images drawn here when None) and, every d_reg_every
        iterations, lazy R1."""
        cfg, rt = self.cfg, self.rt
        self.d.requires_grad_(True)
        with self.phase("d_step"):
            if fake is None:
                with torch.no_grad(), autocast(rt, cfg.amp):
                    fake, _ = self._generate("d", feat, labels)
            with autocast(rt, cfg.amp):
                fake_pred, real_pred = paired_forward(self.d_plain, self._aug(fake), self._aug(real), labels,
                                                      getattr(self.d, "stddev_group", None))
                fake_pred, real_pred = fake_pred.float(), real_pred.float()
                d_loss = d_logistic_loss(real_pred, fake_pred)
            self.d_optim.zero_grad(set_to_none=True)
            self.d_scaler.scale(d_loss).backward()
            self.sync_grads(self.d_params)
            self.d_scaler.step(self.d_optim)
            self.d_scaler.update()
            if self.augment is not None:
                self.augment.observe(real_pred)
        log.update(d=d_loss.detach(), real_score=real_pred.detach().mean(),
                   fake_score=fake_pred.detach().mean())

        if cfg.r1 > 0 and cfg.d_reg_every > 0 and iteration % cfg.d_reg_every == 0:
            with self.phase("r1"):
                real_in = real.detach().requires_grad_(True)
                real_pred = self.d(self._aug(real_in), labels)  # fp32: second-order gradients
                r1 = r1_penalty(real_pred, real_in)
                self.d_optim.zero_grad(set_to_none=True)
                # the 0 * term keeps D's output layer in the graph, so that every process all-reduces the
                # same parameter list under torchrun
                (cfg.r1 / 2 * r1 * cfg.d_reg_every + 0 * real_pred[0, 0]).backward()
                self.sync_grads(self.d_params)
                self.d_optim.step()
            log["r1"] = r1.detach()

    def _g_step(self, real, labels, feat, iteration: int, log: dict) -> torch.Tensor:
        """G's step: the adversarial term, the consistency terms and the optional ones; returns G's images
        (before the update)."""
        cfg, rt = self.cfg, self.rt
        self.d.requires_grad_(False)
        g_feat, g_labels, g_real = feat, labels, real
        if cfg.lambda_ms > 0:  # the batch's first half twice: pairs of one feature and label, other noise
            h = max(1, real.shape[0] // 2)
            g_feat, g_labels, g_real = (torch.cat([t[:h], t[:h]]) for t in (feat, labels, real))
        with autocast(rt, cfg.amp):
            with self.phase("g_forward"):
                styles = self._styles("g", g_feat)
                fake, _ = self.g_plain(styles, g_labels, inject_index=self.draws.inject_index("g"),
                                       noise=self.draws.layer_noise("g"))
                fake_pred = self.d_plain(self._aug(fake), g_labels).float()
                adv = g_nonsaturating_loss(fake_pred)
            lazy = max(1, cfg.consistency_every) if self.paper else 1
            terms = {}
            if iteration % lazy == 0:
                with self.phase("consistency"):  # the tail model and CLIP on the generated images
                    terms = self._consistency(fake if self.paper else fake.detach(), g_labels, g_feat,
                                              train=self.paper)
            g_loss = adv
            if self.paper and terms:
                g_loss = g_loss + lazy * cfg.lambda_cls * terms["cls"]
                if "clip" in terms:
                    g_loss = g_loss + lazy * cfg.lambda_clip * terms["clip"]
                if "feat" in terms:
                    g_loss = g_loss + lazy * cfg.lambda_feat * terms["feat"]
            if cfg.lambda_rec > 0:
                terms["rec"] = reconstruction_loss(fake, g_real, cfg.rec_blur)
                g_loss = g_loss + cfg.lambda_rec * terms["rec"]
            if cfg.lambda_spectrum > 0:
                terms["spectrum"] = spectral_excess(spectral_shares(fake), self._real_spectrum(g_real))
                g_loss = g_loss + cfg.lambda_spectrum * terms["spectrum"]
            if cfg.lambda_lattice > 0:
                terms["lattice"] = lattice_shares(fake).mean()
                g_loss = g_loss + cfg.lambda_lattice * terms["lattice"]
            if cfg.lambda_ms > 0:
                terms["ms"] = mode_seeking_loss(fake, styles)
                g_loss = g_loss + cfg.lambda_ms * terms["ms"]
        with self.phase("g_backward"):
            self.g_optim.zero_grad(set_to_none=True)
            self.g_scaler.scale(g_loss).backward()
            self.sync_grads(self.g_params)
        with self.phase("g_optim"):
            self.g_scaler.step(self.g_optim)
            self.g_scaler.update()
        log.update(g=g_loss.detach(), adv=adv.detach(), **{k: v.detach() for k, v in terms.items()})
        return fake

    @torch.no_grad()
    def features(self, real: torch.Tensor) -> torch.Tensor:
        """The tail model's layer3 features of real images, reduced as P reads them (pooled if it pools)."""
        with autocast(self.rt, self.cfg.amp):
            _, feat = self.tail(real)
        return self.proj.reduce(feat.float())

    def step(self, real: torch.Tensor, labels: torch.Tensor, iteration: int,
             feat: torch.Tensor | None = None) -> dict:
        """One iteration on a batch of real tail images in [-1, 1] with labels 0..K-1; returns detached
        losses.

        feat: the real images' features from `features()` (e.g. cached); computed here when None."""
        cfg, rt = self.cfg, self.rt
        log = {}
        if feat is None:
            with self.phase("features"):
                feat = self.features(real)

        if cfg.reuse_fakes:
            fake = self._g_step(real, labels, feat, iteration, log)
            self._d_step(real, labels, feat, iteration, log, fake=fake.detach())
        else:
            self._d_step(real, labels, feat, iteration, log)
            self._g_step(real, labels, feat, iteration, log)

        if cfg.path_regularize > 0 and cfg.g_reg_every > 0 and iteration % cfg.g_reg_every == 0:
            with self.phase("path_length"):
                n = max(1, real.shape[0] // max(1, cfg.path_batch_shrink))
                fake, latents = self._generate("path", feat[:n], labels[:n],
                                               return_latents=True)  # fp32: second-order gradients
                penalty, mean_length, lengths = path_length_penalty(fake, latents, self.mean_path_length,
                                                                    cfg.path_decay, self.draws.path_noise(),
                                                                    detach_mean=self.paper)
                self.g_optim.zero_grad(set_to_none=True)
                # 0 * term: every process all-reduces the same parameter list (see R1)
                (cfg.path_regularize * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]).backward()
                self.sync_grads(self.g_params)
                self.g_optim.step()
                if rt.distributed:
                    torch.distributed.all_reduce(mean_length)
                    mean_length = mean_length / rt.world_size
                self.mean_path_length = mean_length
            log.update(path=penalty.detach(), path_length=lengths.mean())
        self.d.requires_grad_(True)

        with self.phase("ema"):
            self.update_ema()
        if self.augment is not None:
            self.augment.step()
            log["ada_p"] = torch.tensor(self.augment.p)
        return log

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {"g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict(),
                "P": self.proj.state_dict(), "P_ema": self.p_ema.state_dict(),
                "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict(),
                "g_scaler": self.g_scaler.state_dict(), "d_scaler": self.d_scaler.state_dict(),
                "mean_path_length": self.mean_path_length.cpu(),
                "real_spectrum": self.real_spectrum.cpu() if self.real_spectrum is not None else None,
                "augment": self.augment.state_dict() if self.augment is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.proj.load_state_dict(state["P"])
        self.p_ema.load_state_dict(state["P_ema"])
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        for name in ("g_scaler", "d_scaler"):  # a run saved without loss scaling (CPU, bf16) stores {}
            if state.get(name):
                getattr(self, name).load_state_dict(state[name])
        self.mean_path_length = state["mean_path_length"].to(self.rt.device)
        spectrum = state.get("real_spectrum")
        self.real_spectrum = spectrum.to(self.rt.device) if spectrum is not None else None
        if self.augment is not None and state.get("augment"):
            self.augment.load_state_dict(state["augment"])


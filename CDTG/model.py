"""CDTG's class-conditional SWAGAN (StyleGAN2 in the Haar-wavelet domain).

Generator: w = Mapping(z + label_emb[y]); synthesis on the wavelet grid (size/2) with 12-channel ToRGB outputs
(4 Haar bands x RGB) summed along an IWT -> upsample -> DWT skip path; a final inverse Haar gives the image.
Discriminator: DWT input, wavelet-residual FromRGB + ConvBlock pairs down to 4x4, then the class embedding
broadcast to 4x4 and concatenated with the features, fused by `fusion_conv`, minibatch stddev, final conv and
two linear layers.
Module names follow the unconditional SWAGAN, so its checkpoints load by name (CDTG/original.py); only
`label_emb` (G and D) and `fusion_conv` (D) are new.
"""
import functools
import math

import torch
from torch import nn

from CDTG.ops import (
    BLUR_KERNEL,
    Blur,
    ConstantInput,
    Downsample,
    EqualConv2d,
    EqualLinear,
    FusedLeakyReLU,
    HaarTransform,
    InverseHaarTransform,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    Upsample,
    apply_resampling,
    composed_resampling,
    minibatch_stddev,
    resample_impl,
)
from common.errors import UserError

WAVELET_CHANNELS = 3 * 4  # 4 Haar bands x RGB


def stylegan2_channels(channel_multiplier: int = 2, max_channels: int | None = None) -> dict[int, int]:
    """Feature channels per resolution as in StyleGAN2, optionally capped at max_channels (tiny models)."""
    cm = channel_multiplier
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
                1024: 16 * cm}
    if max_channels is not None:
        channels = {res: min(c, max_channels) for res, c in channels.items()}
    return channels


def check_size(size: int) -> int:
    if size < 16 or size > 1024 or size & (size - 1):
        raise UserError(f"image size {size} is not supported; use a power of two from 16 to 1024 "
                        f"(e.g. 64 or 256)")
    return int(math.log2(size)) - 1  # log2 of the wavelet grid size


# ----------------------------------------------------------------------------------------------------------
# blocks


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + leaky ReLU]; with downsample the conv has stride 2 after the blur."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_kernel=BLUR_KERNEL, bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class StyledConv(nn.Module):
    """Modulated conv -> noise injection -> bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel=BLUR_KERNEL, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x, style, noise=None):
        return self.activate(self.noise(self.conv(x, style), noise=noise))


@functools.cache
def _wavelet_resampling(blur_kernel: tuple, up: bool) -> tuple[torch.Tensor, int]:
    def chain():
        resample = Upsample(blur_kernel) if up else Downsample(blur_kernel)
        return nn.Sequential(InverseHaarTransform(3), resample, HaarTransform(3))
    return composed_resampling(chain, WAVELET_CHANNELS, up)


def wavelet_resampling(blur_kernel: tuple, up: bool) -> tuple[torch.Tensor, int]:
    """IWT -> FIR up- or downsampling -> DWT of the 12 wavelet channels (ToRGB's skip, FromRGB's input from
    the level above) as one stride-2 convolution: (weight, padding), CDTG.ops.composed_resampling."""
    weight, padding = _wavelet_resampling(blur_kernel, up)
    return weight.clone(), padding


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to the 12 wavelet channels, plus the upsampled skip from below."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True, blur_kernel=BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.iwt = InverseHaarTransform(3)
            self.upsample = Upsample(blur_kernel)
            self.dwt = HaarTransform(3)
            weight, self.skip_padding = wavelet_resampling(tuple(blur_kernel), up=True)
            self.register_buffer("skip_weight", weight, persistent=False)
        self.conv = ModulatedConv2d(in_channels, WAVELET_CHANNELS, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, WAVELET_CHANNELS, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            if resample_impl(skip.device.type) == "composed":
                out = out + apply_resampling(skip, self.skip_weight, self.skip_padding, up=True)
            else:
                out = out + self._upsampled(skip)
        return out

    def _upsampled(self, skip):
        return self.dwt(self.upsample(self.iwt(skip)))


class FromRGB(nn.Module):
    """Wavelet input (optionally IWT -> downsample -> DWT of the level above) -> k x k ConvLayer, + skip.

    kernel_size 1 is TGN's and SatConcepts' FromRGB; 3 is rosinality's current swagan.py."""

    def __init__(self, out_channels: int, downsample: bool = True, blur_kernel=BLUR_KERNEL,
                 kernel_size: int = 1):
        super().__init__()
        self.from_level_above = downsample
        if downsample:
            self.iwt = InverseHaarTransform(3)
            self.downsample = Downsample(blur_kernel)
            self.dwt = HaarTransform(3)
            weight, self.level_padding = wavelet_resampling(tuple(blur_kernel), up=False)
            self.register_buffer("level_weight", weight, persistent=False)
        self.conv = ConvLayer(WAVELET_CHANNELS, out_channels, kernel_size)

    def forward(self, x, skip=None):
        if self.from_level_above:
            if resample_impl(x.device.type) == "composed":
                x = apply_resampling(x, self.level_weight, self.level_padding, up=False)
            else:
                x = self._downsampled(x)
        out = self.conv(x)
        if skip is not None:
            out = out + skip
        return x, out

    def _downsampled(self, x):
        return self.dwt(self.downsample(self.iwt(x)))


class ConvBlock(nn.Module):
    """3x3 ConvLayer, then 3x3 ConvLayer with blur + stride-2 downsampling."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)

    def forward(self, x):
        return self.conv2(self.conv1(x))


# ----------------------------------------------------------------------------------------------------------
# generator


class Generator(nn.Module):
    """Class-conditional SWAGAN generator; forward returns (image [B, 3, size, size], latents or None)."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, *, num_classes: int,
                 channel_multiplier: int = 2, lr_mlp: float = 0.01, blur_kernel=BLUR_KERNEL,
                 max_channels: int | None = None):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.num_classes = num_classes
        self.log_size = check_size(size)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.channels = stylegan2_channels(channel_multiplier, max_channels)

        self.label_emb = nn.Embedding(num_classes, style_dim)
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])

        ch = self.channels[4]
        self.input = ConstantInput(ch)
        self.conv1 = StyledConv(ch, ch, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, res, res))
        in_ch = ch
        for log_res in range(3, self.log_size + 1):
            out_ch = self.channels[2 ** log_res]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch
        self.iwt = InverseHaarTransform(3)

    def get_latent(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """w = Mapping(z + label_emb[labels])."""
        return self.style(z + self.label_emb(labels))

    @torch.no_grad()
    def mean_latent(self, n: int, labels=None) -> torch.Tensor:
        """Mean w over n random z, [1, style_dim]: over random classes (labels None) or one class (an int)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, device=device)
        if labels is None:
            labels = torch.randint(self.num_classes, (n,), device=device)
        elif isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long, device=device)
        return self.get_latent(z, labels.to(device)).mean(0, keepdim=True)

    def forward(self, styles, labels=None, return_latents: bool = False, inject_index: int | None = None,
                truncation: float = 1, truncation_latent=None, input_is_latent: bool = False, noise=None,
                randomize_noise: bool = True):
        """styles: list of one or two [B, style_dim] z (or w if input_is_latent; a [B, n_latent, style_dim] w+
        is also accepted). labels: [B] class ids, needed unless input_is_latent. Two styles mix at
        inject_index (random in [1, n_latent - 1] when None)."""
        if torch.is_tensor(styles):
            styles = [styles]
        if not input_is_latent:
            if labels is None:
                raise ValueError("the conditional generator needs labels unless input_is_latent=True")
            styles = [self.get_latent(s, labels) for s in styles]

        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        elif len(styles) == 2:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            latent = torch.cat([styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)], 1)
        else:
            raise ValueError(f"styles must hold one or two latents, got {len(styles)}")

        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise_up, noise_same, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                                noise[2::2], self.to_rgbs):
            out = conv_up(out, latent[:, i], noise=noise_up)
            out = conv(out, latent[:, i + 1], noise=noise_same)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        image = self.iwt(skip)
        return image, (latent if return_latents else None)


# ----------------------------------------------------------------------------------------------------------
# discriminator


class Discriminator(nn.Module):
    """Class-conditional SWAGAN discriminator; forward(image [B, 3, size, size], labels [B]) -> [B, 1]."""

    def __init__(self, size: int, *, num_classes: int, channel_multiplier: int = 2, label_dim: int = 512,
                 blur_kernel=BLUR_KERNEL, max_channels: int | None = None, from_rgb_kernel: int = 1):
        super().__init__()
        log_size = check_size(size)
        channels = stylegan2_channels(channel_multiplier, max_channels)
        if from_rgb_kernel not in (1, 3):
            raise ValueError(f"from_rgb_kernel must be 1 (TGN) or 3 (rosinality), not {from_rgb_kernel}")
        self.size = size
        self.from_rgb_kernel = from_rgb_kernel
        self.num_classes = num_classes
        self.dwt = HaarTransform(3)
        self.from_rgbs = nn.ModuleList()
        self.convs = nn.ModuleList()
        in_ch = channels[size]
        for log_res in range(log_size, 2, -1):
            out_ch = channels[2 ** (log_res - 1)]
            self.from_rgbs.append(FromRGB(in_ch, downsample=log_res != log_size, blur_kernel=blur_kernel,
                                          kernel_size=from_rgb_kernel))
            self.convs.append(ConvBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.from_rgbs.append(FromRGB(channels[4], blur_kernel=blur_kernel, kernel_size=from_rgb_kernel))

        self.label_emb = nn.Embedding(num_classes, label_dim)
        self.fusion_conv = ConvLayer(channels[4] + label_dim, channels[4], 3)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(channels[4] + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def forward(self, image, labels):
        x = self.dwt(image)
        out = None
        for from_rgb, conv in zip(self.from_rgbs, self.convs):
            x, out = from_rgb(x, out)
            out = conv(out)
        _, out = self.from_rgbs[-1](x, out)
        emb = self.label_emb(labels)[:, :, None, None].expand(-1, -1, out.shape[2], out.shape[3])
        out = self.fusion_conv(torch.cat([out, emb], 1))
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))


def model_config(args, num_classes: int) -> dict:
    return {"size": args.size, "style_dim": args.style_dim, "n_mlp": args.n_mlp, "num_classes": num_classes,
            "channel_multiplier": args.channel_multiplier, "max_channels": args.max_channels}


def build_models(args, num_classes: int):
    cfg = model_config(args, num_classes)
    g = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], num_classes=num_classes,
                  channel_multiplier=cfg["channel_multiplier"], max_channels=cfg["max_channels"])
    d = Discriminator(args.size, num_classes=num_classes, channel_multiplier=args.channel_multiplier,
                      label_dim=args.label_dim, max_channels=args.max_channels,
                      from_rgb_kernel=args.from_rgb_kernel)
    return g, d

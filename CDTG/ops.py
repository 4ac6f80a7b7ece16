"""StyleGAN2 / SWAGAN building blocks in plain PyTorch (no compiled extension; identical on CPU and GPU).

Every operation is built from conv2d / conv_transpose2d / pad / reshape, so first- and second-order gradients
(needed by R1 and path-length regularisation) come from autograd. Parameter and buffer names follow the
StyleGAN2/SWAGAN layout (weight, bias, modulation, blur.kernel, ll/lh/hl/hh, ...) so that checkpoints of the
unconditional SWAGAN map onto these modules by name.
"""
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)
BLUR_KERNEL = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------------------
# bias + leaky ReLU


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = LRELU_SLOPE,
                     scale: float = LRELU_GAIN) -> torch.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2); bias has one value per channel (dim 1)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int, bias: bool = True, negative_slope: float = LRELU_SLOPE,
                 scale: float = LRELU_GAIN):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


# ----------------------------------------------------------------------------------------------------------
# FIR resampling


FIR_IMPLS = ("reference", "depthwise", "separable", "adjoint", "triton", "taps")
# Which formulation upfirdn2d uses on each device type; chosen by measurement (CUDA: benchmarks/gpu_cdtg.sh;
# CPU: benchmarks/cdtg_step.py --fir-impl and benchmarks/ops.py). All are equal to "reference" within float
# rounding, forward, backward and double backward (tests/test_cdtg_ops.py).
_fir_impl = {"cpu": "taps", "cuda": "adjoint"}


def _select(choices: dict, allowed: tuple, what: str, name: str, device_type: str) -> str:
    if name not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {name!r}")
    previous = choices.get(device_type, allowed[0])
    choices[device_type] = name
    return previous


def set_fir_impl(name: str, device_type: str = "cuda") -> str:
    """Select upfirdn2d's formulation for tensors on `device_type`; returns the previous choice."""
    return _select(_fir_impl, FIR_IMPLS, "FIR implementation", name, device_type)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0),
              impl: str | None = None) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D FIR `kernel`, keep every `down`-th pixel.

    x: [B, C, H, W]; the same kernel is applied to every channel. The convolution is a true convolution (the
    kernel is flipped), as in StyleGAN2's upfirdn2d; this matters for the antisymmetric Haar kernels.
    pad: (p0, p1) for both axes, or (x0, x1, y0, y1); negative values crop.
    Output height: (H * up + y0 + y1 - kernel_h) // down + 1.
    up > 1 never builds the zero-inserted tensor: see _upsample_fir.
    impl: 'reference' convolves a [B*C, 1, H, W] view with a one-channel kernel; 'depthwise' convolves
    [B, C, H, W] with C groups; 'separable' makes two 1-D depthwise passes and needs a rank-1 kernel (an outer
    product, as every StyleGAN2 kernel is); autograd differentiates these three through their convolutions.
    'adjoint' computes the depthwise form in an autograd function whose backward is again upfirdn2d (the
    adjoint: the flipped kernel with up and down swapped), so a gradient of any order costs one FIR pass; the
    double backward of grouped and strided one-channel convolutions that autograd would run is slow on GPUs.
    'triton': 'adjoint' with every pass one Triton kernel (CDTG/fir_triton.py; CUDA, or TRITON_INTERPRET=1).
    'taps': 'adjoint' with every pass a sum of the kernel's taps times strided views of the input (no
    convolution call, polyphase for up > 1; on the CPU oneDNN's one-channel and grouped convolutions are
    slower, most of all their backward).
    None: the device's choice (set_fir_impl).
    """
    impl = impl or _fir_impl.get(x.device.type, "reference")
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    if impl in ("adjoint", "triton", "taps"):
        return _AdjointFIR.apply(x, kernel, up, down, tuple(pad),
                                 "depthwise" if impl == "adjoint" else impl)
    return _upfirdn2d(x, kernel, up, down, pad, impl)


def _upfirdn2d(x, kernel, up: int, down: int, pad, impl: str) -> torch.Tensor:
    if impl == "triton":
        from CDTG import fir_triton
        return fir_triton.upfirdn2d(x, kernel, up, down, pad)
    b, c, h, w = x.shape
    if impl == "taps" and up == 1:
        return _taps_fir(x, kernel, down, pad)
    groups = 1 if impl == "reference" else c
    out = x.reshape(b * c, 1, h, w) if impl == "reference" else x
    if up > 1:
        out = _upsample_fir(out, kernel, up, pad, groups, taps=impl == "taps")
        if down > 1:
            out = out[:, :, ::down, ::down]
    else:
        out = _pad_or_crop(out, pad)
        flipped = torch.flip(kernel, [0, 1]).to(out.dtype)
        if impl == "separable":
            col, row = _rank_one_factors(flipped)
            out = F.conv2d(out, col.view(1, 1, -1, 1).expand(groups, 1, -1, 1), stride=(down, 1),
                           groups=groups)
            out = F.conv2d(out, row.view(1, 1, 1, -1).expand(groups, 1, 1, -1), stride=(1, down),
                           groups=groups)
        else:
            out = F.conv2d(out, flipped.view(1, 1, *kernel.shape).expand(groups, 1, -1, -1), stride=down,
                           groups=groups)
    return out.reshape(b, c, out.shape[2], out.shape[3])


class _AdjointFIR(torch.autograd.Function):
    """upfirdn2d with an explicit backward. In 1-D, y = decimate_down(pad_p0,p1(zero_insert_up(x)) * k) has
    the adjoint x_grad = decimate_up(pad_a0,a1(zero_insert_down(y_grad)) * flip(k)) with a0 = k - 1 - p0 and
    a1 = H * up - M * down + p0 (H: input length, M: output length); it is linear, so its own backward is the
    forward again, and create_graph works to any order."""

    @staticmethod
    def forward(ctx, x, kernel, up, down, pad, raw):
        ctx.save_for_backward(kernel)
        ctx.shape = (up, down, pad, raw, x.shape[2], x.shape[3])
        return _upfirdn2d(x, kernel, up, down, pad, raw)

    @staticmethod
    def backward(ctx, grad):
        kernel, = ctx.saved_tensors
        up, down, (x0, _x1, y0, _y1), raw, h, w = ctx.shape
        kh, kw = kernel.shape
        out_h, out_w = grad.shape[2:]
        adjoint_pad = (kw - 1 - x0, w * up - out_w * down + x0, kh - 1 - y0, h * up - out_h * down + y0)
        flipped = torch.flip(kernel, [0, 1])
        return _AdjointFIR.apply(grad, flipped, down, up, adjoint_pad, raw), None, None, None, None, None


def _taps_fir(x: torch.Tensor, kernel: torch.Tensor, down: int, pad) -> torch.Tensor:
    """upfirdn2d with up = 1 as a sum over the kernel's taps: output pixel (y, x) is the sum over taps (i, j)
    of the flipped kernel's tap times input pixel (down*y + i, down*x + j) of the padded input."""
    x = _pad_or_crop(x, pad)
    kh, kw = kernel.shape
    return _sum_of_taps(x, torch.flip(kernel, [0, 1]), (x.shape[2] - kh) // down + 1,
                        (x.shape[3] - kw) // down + 1, down)


def _sum_of_taps(x: torch.Tensor, weight: torch.Tensor, out_h: int, out_w: int, stride: int = 1):
    """The correlation of every channel of x with the 2-D `weight` (no padding): one strided view per tap, or,
    for a rank-1 weight (every StyleGAN2 kernel), a pass along the rows and one down the columns (kh + kw
    views instead of kh * kw)."""
    taps = weight.tolist()  # the taps as numbers: one read instead of a tensor operation per tap
    factors = _rank_one_taps(tuple(map(tuple, taps)))
    if factors is not None:
        col, row = factors
        return _weighted_views(_weighted_views(x, row, 3, out_w, stride), col, 2, out_h, stride)
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    views = [(x[:, :, i: i + span_h: stride, j: j + span_w: stride], tap)
             for i, taps_row in enumerate(taps) for j, tap in enumerate(taps_row)]
    return _accumulate(views, (x.shape[0], x.shape[1], out_h, out_w))


def _weighted_views(x: torch.Tensor, taps: list, dim: int, size: int, stride: int) -> torch.Tensor:
    """sum_t taps[t] * x[..., t + stride * k, ...] along `dim`, k = 0..size-1."""
    span = stride * (size - 1) + 1
    views = [(x.narrow(dim, t, span)[(slice(None),) * dim + (slice(None, None, stride),)], tap)
             for t, tap in enumerate(taps)]
    shape = list(x.shape)
    shape[dim] = size
    return _accumulate(views, shape)


def _accumulate(views: list, shape) -> torch.Tensor:
    """The sum of tap * view over (view, tap) pairs (views of one tensor, of this shape), the first nonzero
    product as the accumulator; zeros when every tap is 0."""
    out = None
    for view, tap in views:
        if tap != 0:
            out = view * tap if out is None else out.add_(view, alpha=tap)
    return views[0][0].new_zeros(shape) if out is None else out


@functools.lru_cache(maxsize=256)
def _rank_one_taps(taps: tuple) -> tuple[tuple, tuple] | None:
    """_rank_one_factors of the taps (a tuple of row tuples of numbers), as numbers, when they are rank-1 with
    at least 3 rows and 3 columns (fewer: two passes save no view), else None. Cached: a model's FIR kernels
    are few and fixed, and the tensor read-off costs about 0.1 ms a call on the CPU."""
    if len(taps) < 3 or len(taps[0]) < 3 or not any(map(any, taps)):
        return None
    factors = _rank_one_factors(torch.tensor(taps, dtype=torch.float64))
    col, row = (tuple(factor.tolist()) for factor in factors)
    scale = max(abs(t) for taps_row in taps for t in taps_row)
    if any(abs(t - c * r) > 1e-6 * scale for c, taps_row in zip(col, taps) for t, r in zip(taps_row, row)):
        return None
    return col, row


def _rank_one_factors(kernel: torch.Tensor):
    """(column, row) with kernel = column[:, None] * row[None, :] for a rank-1 kernel, read off the row and
    the column of its largest tap (no host synchronisation)."""
    _kh, kw = kernel.shape
    peak = kernel.abs().flatten().argmax()
    col = kernel.index_select(1, peak % kw).squeeze(1)
    row = kernel.index_select(0, peak // kw).squeeze(0) / kernel.flatten()[peak]
    return col, row


def _pad_or_crop(x: torch.Tensor, pad) -> torch.Tensor:
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    return x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]


def _upsample_fir(x: torch.Tensor, kernel: torch.Tensor, up: int, pad, groups: int = 1,
                  taps: bool = False) -> torch.Tensor:
    """upfirdn2d's zero insertion + pad + convolution for up > 1 (down = 1), on x: [N, groups, H, W],
    polyphase.

    Output pixel up*q + r of the full convolution of the zero-inserted input only meets the kernel taps r,
    r + up, r + 2*up, ...: so each of the up*up phases is a small convolution of x itself with those taps, one
    conv2d with up*up output channels per group, and pixel_shuffle interleaves the phases. The full result
    (index 0 = the first output of the convolution with no padding) is then padded or cropped to what `pad`
    selects.
    """
    x0, x1, y0, y1 = pad
    kh, kw = kernel.shape
    mh, mw = -(-kh // up), -(-kw // up)  # taps per phase
    k = F.pad(kernel.to(x.dtype), [0, mw * up - kw, 0, mh * up - kh])
    # weight[ry * up + rx, 0, ty, tx] = k[up * (mh - 1 - ty) + ry, up * (mw - 1 - tx) + rx]
    weight = k.flip([0, 1]).view(mh, up, mw, up).flip([1, 3]).permute(1, 3, 0, 2).reshape(up * up, 1, mh, mw)
    h, w = x.shape[2:]
    if taps:  # each phase as a sum of taps over views of x (groups = channels), phases of a channel together
        padded = F.pad(x, [mw - 1, mw - 1, mh - 1, mh - 1])
        phases = [_sum_of_taps(padded, weight[p, 0], h + mh - 1, w + mw - 1) for p in range(up * up)]
        phases = torch.stack(phases, dim=2).flatten(1, 2)
    else:
        phases = F.conv2d(x, weight.repeat(groups, 1, 1, 1), padding=(mh - 1, mw - 1), groups=groups)
    full = F.pixel_shuffle(phases, up)  # [N, groups, up*(H+mh-1), up*(W+mw-1)]
    # the padded input's output i is the full convolution's i + k - 1 - p0; it ends at up*H + p1
    top, left = kh - 1 - y0, kw - 1 - x0
    bottom, right = up * h + y1, up * w + x1
    return F.pad(full, [-left, right - full.shape[3], -top, bottom - full.shape[2]])


def make_kernel(taps) -> torch.Tensor:
    """A 2-D FIR kernel summing to 1: the outer product of 1-D taps, or the given 2-D taps normalised."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    """FIR low-pass filter with padding; upsample_factor scales the kernel so upsampling keeps the gain."""

    def __init__(self, kernel=BLUR_KERNEL, pad=(0, 0), upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = tuple(pad)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 (by default) upsampling: zero insertion + blur; output size H * factor."""

    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """/2 (by default) downsampling: blur + decimation; output size H // factor."""

    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


# ----------------------------------------------------------------------------------------------------------
# equalised learning rate layers


class EqualLinear(nn.Module):
    """Linear layer with weights stored at N(0, 1/lr_mul^2) and scaled at run time by lr_mul / sqrt(in_dim).

    activation: None, or "fused_lrelu" for bias + leaky ReLU(0.2) * sqrt(2).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self):
        out_dim, in_dim = self.weight.shape
        return f"{in_dim}, {out_dim}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with N(0, 1) weights scaled at run time by 1 / sqrt(fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


RESAMPLE_IMPLS = ("chain", "composed")
# How the wavelet skips (IWT -> FIR resampling -> DWT between levels) run on each device type: as the chain of
# transforms, or as one precomputed stride-2 convolution (composed_resampling); chosen by measurement on the
# CPU (the chain is some 60 small operations per pass there); CUDA keeps the chain it was measured with.
_resample_impl = {"cpu": "composed", "cuda": "chain"}


def set_resample_impl(name: str, device_type: str = "cuda") -> str:
    """Select how the generator's and discriminator's wavelet skips are computed on `device_type`; returns the
    previous choice."""
    return _select(_resample_impl, RESAMPLE_IMPLS, "wavelet resampling implementation", name, device_type)


def resample_impl(device_type: str) -> str:
    return _resample_impl.get(device_type, "chain")


@torch.no_grad()
def composed_resampling(make_chain, channels: int, up: bool, probe: int = 8) -> tuple[torch.Tensor, int]:
    """(weight, padding) on the CPU of the one stride-2 convolution (conv_transpose2d when `up`, conv2d
    otherwise) that computes the module make_chain() builds (on the CPU, whatever the default device), a
    linear map of [N, channels, H, W] to [N, channels, 2H, 2W] (up) or [.., H/2, W/2] that commutes with
    shifts of 1 pixel (up) or 2 pixels (down) and treats the image as zero outside.

    Read off impulse responses on a probe x probe input: forward ones for up; for down, where one impulse
    meets every other tap only, the adjoint's (gradients of one output pixel). Kernel taps are padded with
    zeros where needed so that padding is symmetric and the output at least as large as the chain's;
    apply_resampling crops it. Probed in float64 (the weight stays float64: a float64 model then computes
    what the chain computes within float64 rounding).
    """
    with torch.device("cpu"):
        return _read_off_resampling(make_chain(), channels, up, probe)


def _read_off_resampling(chain, channels: int, up: bool, probe: int) -> tuple[torch.Tensor, int]:
    if up:
        x = torch.zeros(channels, channels, probe, probe, dtype=torch.float64)
        centre = probe // 2
        x[torch.arange(channels), torch.arange(channels), centre, centre] = 1
        resp = chain(x)  # [in, out, 2 probe, 2 probe]: in's impulse response
        origin = 2 * centre
    else:
        centre = probe // 4
        rows = []
        with torch.enable_grad():
            for o in range(channels):
                x = torch.zeros(1, channels, probe, probe, dtype=torch.float64, requires_grad=True)
                chain(x)[0, o, centre, centre].backward()
                rows.append(x.grad[0])
        resp = torch.stack(rows)  # [out, in, probe, probe]: the taps that output pixel reads
        origin = 2 * centre
    nonzero = resp.abs().amax(dim=(0, 1)) > 0
    ys, xs = nonzero.any(1).nonzero().flatten(), nonzero.any(0).nonzero().flatten()
    lo, hi = min(ys[0], xs[0]).item(), max(ys[-1], xs[-1]).item()
    if lo == 0 or hi == resp.shape[-1] - 1:
        raise ValueError("composed_resampling: the probe is too small for this chain's support")
    start = min(lo - origin, 0)  # the first tap's offset from the impulse (or output pixel), <= 0
    weight = resp[:, :, origin + start: hi + 1, origin + start: hi + 1]
    padding = -start
    if up:  # the output must reach 2H: 2 (H - 1) - 2 padding + k >= 2H
        grow = max(0, 2 * padding + 2 - weight.shape[-1])
        weight = F.pad(weight, [0, grow, 0, grow])
    else:  # the output must reach H/2: (H + 2 padding - k) // 2 + 1 >= H/2; a leading zero tap adds to both
        grow = max(0, weight.shape[-1] - (2 * padding + 2))
        weight = F.pad(weight, [grow, 0, grow, 0])
        padding += grow
    return weight.contiguous(), padding


def apply_resampling(x: torch.Tensor, weight: torch.Tensor, padding: int, up: bool) -> torch.Tensor:
    """composed_resampling's convolution of x, cropped to the chain's output size."""
    h, w = x.shape[2:]
    weight = weight.to(x.dtype)
    if up:
        return F.conv_transpose2d(x, weight, stride=2, padding=padding)[:, :, :2 * h, :2 * w]
    return F.conv2d(x, weight, stride=2, padding=padding)[:, :, :h // 2, :w // 2]


# ----------------------------------------------------------------------------------------------------------
# modulated convolution


MODCONV_IMPLS = ("grouped", "shared")
# How ModulatedConv2d applies its per-sample styles on each device type (set_modconv_impl), chosen by
# measurement.
_modconv_impl = {"cpu": "grouped", "cuda": "shared"}


def set_modconv_impl(name: str, device_type: str = "cuda") -> str:
    """Select ModulatedConv2d's formulation for inputs on `device_type`; returns the previous choice."""
    return _select(_modconv_impl, MODCONV_IMPLS, "modulated-convolution implementation", name, device_type)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 weight (de)modulation.

    'grouped' (StyleGAN2's and upstream's form): per-sample weights, applied as one grouped convolution over
    the batch. 'shared': the same arithmetic with one weight for the whole batch, styles applied to the input
    and demodulation to the output, as StyleGAN2-ADA trains; equal within float rounding, and its convolutions
    are ordinary batched ones, which GPUs run (and differentiate twice) far faster.
    upsample: transposed conv (stride 2) followed by a blur; downsample: blur followed by a stride-2 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel=BLUR_KERNEL):
        super().__init__()
        if upsample and downsample:
            raise ValueError("ModulatedConv2d cannot both upsample and downsample")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.downsample = downsample
        factor = 2
        taps = len(blur_kernel)
        if upsample:
            p = (taps - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (taps - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1)

    def forward(self, x, style, impl: str | None = None):
        if (impl or _modconv_impl.get(x.device.type, "grouped")) == "shared":
            return self._shared(x, style)
        batch, in_ch, height, width = x.shape
        k, out_ch = self.kernel_size, self.out_channels
        s = self.modulation(style).view(batch, 1, in_ch, 1, 1)
        weight = self.scale * self.weight * s  # [B, out, in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, out_ch, 1, 1, 1)
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = self.blur(out.view(batch, out_ch, out.shape[2], out.shape[3]))
            return out
        weight = weight.reshape(batch * out_ch, in_ch, k, k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x, weight, stride=2, groups=batch)
        else:
            out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, out_ch, out.shape[2], out.shape[3])

    def _shared(self, x, style):
        s = self.modulation(style)  # [B, in]
        weight = self.scale * self.weight[0]  # [out, in, k, k]
        x = x * s.to(x.dtype)[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:  # 1 / ||w * s|| per sample and output channel, as the grouped form computes it
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)  # [B, out]
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}, downsample={self.downsample}")


# ----------------------------------------------------------------------------------------------------------
# Haar wavelets


def haar_kernels() -> tuple[torch.Tensor, ...]:
    """The 2x2 Haar analysis kernels (ll, lh, hl, hh) in upfirdn2d's (flipped-convolution) convention."""
    low = torch.ones(1, 2) / math.sqrt(2)
    high = torch.tensor([[-1.0, 1.0]]) / math.sqrt(2)
    return low.T * low, high.T * low, low.T * high, high.T * high


class HaarTransform(nn.Module):
    """Haar DWT: [B, C, H, W] -> [B, 4C, H/2, W/2], bands stacked as (ll, lh, hl, hh) of C channels each.

    Equal to upfirdn2d(x, band_kernel, down=2) per band; computed as one stride-2 convolution.
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        ll, lh, hl, hh = haar_kernels()
        self.register_buffer("ll", ll)
        self.register_buffer("lh", lh)
        self.register_buffer("hl", hl)
        self.register_buffer("hh", hh)

    def forward(self, x):
        # upfirdn2d flips its kernel; conv2d does not, so flip here to match
        weight = torch.stack([self.ll, self.lh, self.hl, self.hh]).flip([1, 2]).to(x.dtype).unsqueeze(1)
        even = x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
        impl = _fir_impl.get(x.device.type)
        if impl == "taps" and even:
            return _haar_analysis_views(x, weight)
        if impl in ("adjoint", "triton") and even:
            return _HaarAnalysis.apply(x, weight)
        return _haar_analysis(x, weight)


class InverseHaarTransform(nn.Module):
    """Inverse Haar DWT: [B, 4C, H, W] (bands ll, lh, hl, hh) -> [B, C, 2H, 2W].

    Equal to the sum over bands of upfirdn2d(band, synthesis_kernel, up=2, pad=(1, 0, 1, 0)); computed as one
    stride-2 transposed convolution.
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        ll, lh, hl, hh = haar_kernels()
        self.register_buffer("ll", ll)
        self.register_buffer("lh", -lh)
        self.register_buffer("hl", -hl)
        self.register_buffer("hh", hh)

    def forward(self, x):
        weight = torch.stack([self.ll, self.lh, self.hl, self.hh]).to(x.dtype).unsqueeze(1)  # [4, 1, 2, 2]
        impl = _fir_impl.get(x.device.type)
        if impl == "taps":
            return _haar_synthesis_views(x, weight)
        if impl in ("adjoint", "triton"):
            return _HaarSynthesis.apply(x, weight)
        return _haar_synthesis(x, weight)


def _haar_analysis(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    out = F.conv2d(x.reshape(b * c, 1, h, w), weight.to(x.dtype), stride=2)  # [B*C, 4, H/2, W/2]
    return out.view(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


def _haar_synthesis(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    b, c4, h, w = x.shape
    c = c4 // 4
    bands = x.view(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
    return F.conv_transpose2d(bands, weight.to(x.dtype), stride=2).view(b, c, 2 * h, 2 * w)


def _haar_analysis_views(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """_haar_analysis without a convolution: band k = sum over (i, j) of weight[k, 0, i, j] times the strided
    view x[..., i::2, j::2] (one 4x4 matrix product over the four views)."""
    b, c, h, w = x.shape
    views = torch.stack([x[:, :, i::2, j::2] for i in range(2) for j in range(2)])  # [4 (i, j), B, C, h, w]
    bands = (weight.reshape(4, 4).to(x.dtype) @ views.reshape(4, -1)).view(4, b, c, h // 2, w // 2)
    return bands.transpose(0, 1).reshape(b, 4 * c, h // 2, w // 2)


def _haar_synthesis_views(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """_haar_synthesis without a convolution: output pixel (2y + i, 2x + j) = sum over bands k of
    weight[k, 0, i, j] times band k at (y, x)."""
    b, c4, h, w = x.shape
    c = c4 // 4
    bands = x.view(b, 4, c, h, w).transpose(0, 1).reshape(4, -1)
    views = (weight.reshape(4, 4).to(x.dtype).t() @ bands).view(2, 2, b, c, h, w)  # [i, j, B, C, h, w]
    return views.permute(2, 3, 4, 0, 5, 1).reshape(b, c, 2 * h, 2 * w)


class _HaarAnalysis(torch.autograd.Function):
    """The Haar DWT (a stride-2 convolution) with an explicit backward: its adjoint, the stride-2 transposed
    convolution with the same weight, which is the inverse transform (the Haar kernels are orthonormal, and
    the analysis weight as conv2d applies it equals the synthesis weight as conv_transpose2d applies it). Each
    is the other's backward, so gradients of any order cost one transform each."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        return _haar_analysis(x, weight)

    @staticmethod
    def backward(ctx, grad):
        weight, = ctx.saved_tensors
        return _HaarSynthesis.apply(grad, weight), None


class _HaarSynthesis(torch.autograd.Function):
    """The inverse Haar DWT with an explicit backward (the forward transform); see _HaarAnalysis."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        return _haar_synthesis(x, weight)

    @staticmethod
    def backward(ctx, grad):
        weight, = ctx.saved_tensors
        return _HaarAnalysis.apply(grad, weight), None


# ----------------------------------------------------------------------------------------------------------
# noise, constant input, normalisation, minibatch statistics


class NoiseInjection(nn.Module):
    """x + weight * noise, with one learned scalar weight (starts at 0) and a [B, 1, H, W] noise image."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise=None):
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """A learned [1, C, size, size] tensor repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int):
        return self.input.repeat(batch, 1, 1, 1)


class PixelNorm(nn.Module):
    """Normalise each vector to unit mean square over dim 1."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def stddev_group(group_size: int, batch: int) -> int:
    """The group minibatch_stddev uses for a batch: min(group_size, batch), lowered until it divides it."""
    group = min(group_size, batch)
    while batch % group:
        group -= 1
    return group


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_features: int = 1) -> torch.Tensor:
    """Append `num_features` channels holding the feature std over groups of samples (StyleGAN2).

    Samples n and n + B/G share a group (G = group size). G is min(group_size, B), lowered to the largest
    value that divides B (upstream fails on a batch that G does not divide).
    """
    b, c, h, w = x.shape
    group = stddev_group(group_size, b)
    y = x.view(group, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # [B/G, F, C/F, H, W]
    y = y.mean([2, 3, 4])  # [B/G, F]
    y = y.view(-1, num_features, 1, 1).repeat(group, 1, h, w)
    return torch.cat([x, y], 1)

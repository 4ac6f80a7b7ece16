"""Two exact shortcuts for the convolutions of CDTG's frozen judges (the tail model, CLIP's image tower),
which run forward and backward on every consistency step: the same outputs within float rounding, fewer
operations.

- A stride-1 convolution whose zero padding keeps the size, on a 1 x 1 map, sees its kernel's centre only:
  a matrix product (ResNet's layer4 at 32 px input holds three such 3 x 3 convolutions of 512 channels).
- A convolution whose stride equals its kernel and has no padding (a ViT's patch embedding) is a matrix
  product over the non-overlapping patches; oneDNN's gradient to the input of a 16 x 16 kernel is slow.

`use_conv_shortcuts` swaps the class of each qualifying nn.Conv2d in place: parameters, state-dict keys and
isinstance checks stay as they were, and inputs that do not qualify take nn.Conv2d's own path.
"""
import torch
import torch.nn.functional as F
from torch import nn


def _centre_tap_fits(conv: nn.Conv2d) -> bool:
    k, p = conv.kernel_size, conv.padding
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and k != (1, 1) and k[0] % 2 == 1 and k[1] % 2 == 1 and p == (k[0] // 2, k[1] // 2))


def _patch_fits(conv: nn.Conv2d) -> bool:
    return (conv.stride == conv.kernel_size and conv.kernel_size != (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1)


class CentreTapConv2d(nn.Conv2d):
    """nn.Conv2d that computes a 1 x 1 input map as a matrix product with the kernel's centre."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        if x.dim() != 4 or x.shape[-2:] != (1, 1):
            return super()._conv_forward(x, weight, bias)
        centre = weight[:, :, self.padding[0], self.padding[1]]
        if self.groups == 1:
            return F.linear(x.flatten(1), centre, bias)[..., None, None]
        return F.conv2d(x, centre[..., None, None], bias, groups=self.groups)


class PatchConv2d(nn.Conv2d):
    """nn.Conv2d with stride = kernel and no padding, computed as a matrix product over the patches."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        (kh, kw), (n, c, h, w) = self.kernel_size, x.shape
        if h % kh or w % kw:
            return super()._conv_forward(x, weight, bias)
        hh, ww = h // kh, w // kw
        patches = x.reshape(n, c, hh, kh, ww, kw).permute(0, 2, 4, 1, 3, 5).reshape(n * hh * ww, c * kh * kw)
        out = F.linear(patches, weight.reshape(weight.shape[0], -1), bias)
        return out.reshape(n, hh, ww, -1).permute(0, 3, 1, 2)


def use_conv_shortcuts(module: nn.Module) -> int:
    """Give every qualifying plain nn.Conv2d in `module` its shortcut class; returns how many changed."""
    changed = 0
    for m in module.modules():
        if type(m) is not nn.Conv2d:
            continue
        if _patch_fits(m):
            m.__class__ = PatchConv2d
        elif _centre_tap_fits(m):
            m.__class__ = CentreTapConv2d
        else:
            continue
        changed += 1
    return changed

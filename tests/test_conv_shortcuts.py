"""CDTG.conv_shortcuts: the frozen judges' convolutions computed another way give nn.Conv2d's outputs and
input gradients, and only qualifying layers and inputs take the shortcut."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from CDTG.conv_shortcuts import CentreTapConv2d, PatchConv2d, use_conv_shortcuts


def _outputs_and_input_grads(module, x):
    x = x.clone().requires_grad_(True)
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(6, 5, 3, padding=1), (4, 6, 1, 1)),                        # centre tap
    (nn.Conv2d(6, 5, 5, padding=2, bias=False), (2, 6, 1, 1)),            # centre tap, 5 x 5
    (nn.Conv2d(6, 4, 3, padding=1, groups=2), (2, 6, 1, 1)),              # centre tap, grouped
    (nn.Conv2d(6, 5, 3, padding=1), (2, 6, 5, 4)),                        # not 1 x 1: the plain path
    (nn.Conv2d(3, 8, 4, stride=4), (2, 3, 16, 12)),                       # patches
    (nn.Conv2d(3, 8, (2, 4), stride=(2, 4), bias=False), (2, 3, 6, 8)),   # patches, rectangular
    (nn.Conv2d(3, 8, 4, stride=4), (2, 3, 18, 16)),                       # 18 not a multiple: the plain path
])
def test_shortcut_equals_conv2d_forward_and_input_gradient(conv, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    conv = conv.double()
    fast = copy.deepcopy(conv)
    assert use_conv_shortcuts(fast) == 1
    want, want_grad = _outputs_and_input_grads(conv, x)
    got, got_grad = _outputs_and_input_grads(fast, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=1e-12)


def test_only_qualifying_layers_change_class_and_state_dict_stays():
    layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                           nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 2, stride=2),
                           nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    keys = {k: v.clone() for k, v in layers.state_dict().items()}
    assert use_conv_shortcuts(layers) == 2
    assert [type(m) for m in layers] == [CentreTapConv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d, PatchConv2d,
                                         nn.Conv2d]
    assert all(isinstance(m, nn.Conv2d) for m in layers)
    assert layers.state_dict().keys() == keys.keys()
    assert all(torch.equal(layers.state_dict()[k], v) for k, v in keys.items())
    assert use_conv_shortcuts(layers) == 0  # already swapped


def test_resnet18_at_32_px_gives_the_same_logits_and_input_gradient():
    """layer4 of a ResNet-18 on 32 px images sees 1 x 1 maps: three convolutions take the centre tap."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=5).eval().requires_grad_(False)
    fast = copy.deepcopy(model)
    assert use_conv_shortcuts(fast) > 0
    x = torch.randn(3, 3, 32, 32)
    want, want_grad = _outputs_and_input_grads(model, x)
    got, got_grad = _outputs_and_input_grads(fast, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)

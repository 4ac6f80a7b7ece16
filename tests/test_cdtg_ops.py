"""CDTG.ops against straightforward reference computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from CDTG.ops import (
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
    fused_leaky_relu,
    make_kernel,
    minibatch_stddev,
    upfirdn2d,
)


def reference_upfirdn2d(x, kernel, up, down, pad):
    """Zero insertion by index assignment, padding/cropping, then the convolution as a loop over taps."""
    x0, x1, y0, y1 = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    b, c, h, w = x.shape
    stuffed = x.new_zeros(b, c, h * up, w * up)
    stuffed[:, :, ::up, ::up] = x
    padded = F.pad(stuffed, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    h_pad, w_pad = padded.shape[2:]
    padded = padded[:, :, max(-y0, 0): h_pad - max(-y1, 0), max(-x0, 0): w_pad - max(-x1, 0)]
    kh, kw = kernel.shape
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = x.new_zeros(b, c, out_h, out_w)
    for a in range(kh):
        for bb in range(kw):  # true convolution: tap (a, bb) meets kernel[kh-1-a, kw-1-bb]
            out += padded[:, :, a: a + out_h, bb: bb + out_w] * kernel[kh - 1 - a, kw - 1 - bb]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [
    (2, 1, (2, 1)), (2, 1, (1, 0, 1, 0)), (1, 2, (1, 1)), (1, 2, (2, 2)), (1, 1, (1, 2)), (2, 1, (-1, 2)),
    (1, 2, (0, 0, 1, -1)),
])
def test_upfirdn2d_matches_zero_stuffing_pad_conv_slice(up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6)
    kernel = torch.randn(4, 3)  # asymmetric and non-square, so a missing flip or transposed axis shows
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    expected = reference_upfirdn2d(x, kernel, up, down, pad)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_upsample_downsample_sizes_and_unit_gain():
    ones = torch.ones(1, 2, 8, 8)
    up = Upsample()(ones)
    down = Downsample()(ones)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.ones_like(up[:, :, 2:-2, 2:-2]))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.ones_like(down[:, :, 1:-1, 1:-1]))
    torch.testing.assert_close(make_kernel([1, 3, 3, 1]), torch.tensor([1., 3, 3, 1])[:, None] * torch.tensor(
        [1., 3, 3, 1]) / 64)
    blurred = Blur(pad=(2, 1))(ones)
    assert blurred.shape == ones.shape


def test_haar_inverse_is_identity_and_preserves_energy():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10)
    bands = HaarTransform(3)(x)
    assert bands.shape == (2, 12, 4, 5)
    torch.testing.assert_close(InverseHaarTransform(3)(bands), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())  # orthonormal


def test_haar_of_constant_has_only_low_band():
    x = torch.full((1, 3, 8, 8), 0.5)
    x[:, 1] = -0.25
    bands = HaarTransform(3)(x)
    torch.testing.assert_close(bands[:, 3:], torch.zeros_like(bands[:, 3:]))
    torch.testing.assert_close(bands[:, :3], 2 * x[:, :, ::2, ::2])  # 2x2 sum / 2


def test_haar_matches_upfirdn2d_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    dwt, iwt = HaarTransform(3), InverseHaarTransform(3)
    expected = torch.cat([upfirdn2d(x, k, down=2) for k in (dwt.ll, dwt.lh, dwt.hl, dwt.hh)], 1)
    torch.testing.assert_close(dwt(x), expected)
    y = torch.randn(2, 12, 3, 3)
    expected = sum(upfirdn2d(band, k, up=2, pad=(1, 0, 1, 0))
                   for band, k in zip(y.chunk(4, 1), (iwt.ll, iwt.lh, iwt.hl, iwt.hh)))
    torch.testing.assert_close(iwt(y), expected)


def test_fused_leaky_relu():
    torch.manual_seed(0)
    x, b = torch.randn(3, 5, 4, 4), torch.randn(5)
    expected = F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, b), expected)
    act = FusedLeakyReLU(5)
    with torch.no_grad():
        act.bias.copy_(b)
    torch.testing.assert_close(act(x), expected)
    x2 = torch.randn(3, 5)
    torch.testing.assert_close(fused_leaky_relu(x2, b), F.leaky_relu(x2 + b, 0.2) * math.sqrt(2))


def test_equal_linear_is_scaled_linear():
    torch.manual_seed(0)
    layer = EqualLinear(6, 4, bias_init=0.3, lr_mul=0.01)
    x = torch.randn(5, 6)
    ref = torch.nn.Linear(6, 4)
    with torch.no_grad():
        ref.weight.copy_(layer.weight * 0.01 / math.sqrt(6))
        ref.bias.copy_(layer.bias * 0.01)
    torch.testing.assert_close(layer(x), ref(x))
    assert layer.weight.std() > 10  # stored at N(0, 1/lr_mul^2)
    act_layer = EqualLinear(6, 4, bias_init=0.3, lr_mul=0.01, activation="fused_lrelu")
    act_layer.load_state_dict(layer.state_dict())
    torch.testing.assert_close(act_layer(x), F.leaky_relu(ref(x), 0.2) * math.sqrt(2))
    with pytest.raises(ValueError):
        EqualLinear(6, 4, activation="relu")


def test_equal_conv2d_is_scaled_conv():
    torch.manual_seed(0)
    conv = EqualConv2d(3, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    expected = F.conv2d(x, conv.weight / math.sqrt(3 * 9), conv.bias, stride=2, padding=1)
    torch.testing.assert_close(conv(x), expected)


def unit_style_modconv(**kwargs):
    conv = ModulatedConv2d(3, 5, 3, style_dim=4, **kwargs)
    with torch.no_grad():
        conv.modulation.weight.zero_()  # modulation bias starts at 1: every style maps to s = 1
    return conv


def test_modulated_conv_with_unit_style_is_plain_conv():
    torch.manual_seed(0)
    conv = unit_style_modconv(demodulate=False)
    x, style = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    expected = F.conv2d(x, conv.weight[0] / math.sqrt(3 * 9), padding=1)
    torch.testing.assert_close(conv(x, style), expected, rtol=1e-5, atol=1e-5)


def test_modulated_conv_demodulation_normalises_weights():
    torch.manual_seed(0)
    conv = unit_style_modconv(demodulate=True)
    x, style = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    w = conv.weight[0]
    w = w / w.pow(2).sum([1, 2, 3], keepdim=True).sqrt()
    torch.testing.assert_close(conv(x, style), F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["same", "upsample", "downsample"])
def test_modulated_conv_grouped_equals_per_sample_loop(mode):
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, style_dim=4, upsample=mode == "upsample", downsample=mode == "downsample")
    x, style = torch.randn(3, 3, 8, 8), torch.randn(3, 4)
    out = conv(x, style)
    size = {"same": 8, "upsample": 16, "downsample": 4}[mode]
    assert out.shape == (3, 5, size, size)
    for i in range(3):
        s = conv.modulation(style[i: i + 1]).view(1, 3, 1, 1)
        w = conv.weight[0] * s / math.sqrt(27)
        w = w / (w.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xi = x[i: i + 1]
        if mode == "same":
            ref = F.conv2d(xi, w, padding=1)
        elif mode == "upsample":
            transposed = F.conv_transpose2d(xi, w.transpose(0, 1), stride=2)
            ref = upfirdn2d(transposed, make_kernel([1, 3, 3, 1]) * 4, pad=(1, 1))
        else:
            ref = F.conv2d(upfirdn2d(xi, make_kernel([1, 3, 3, 1]), pad=(2, 2)), w, stride=2)
        torch.testing.assert_close(out[i: i + 1], ref, rtol=1e-4, atol=1e-5)


def test_minibatch_stddev_values():
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0., 2., 0., 2.])  # std 1
    x[:, 1, 0, 0] = 1.0  # std 0 (sqrt(1e-8) = 1e-4)
    out = minibatch_stddev(x)
    assert out.shape == (4, 3, 1, 1)
    torch.testing.assert_close(out[:, :2], x)
    torch.testing.assert_close(out[:, 2], torch.full((4, 1, 1), (1 + 1e-4) / 2))

    # batch 8, group 4: samples n and n + 2 share a group
    y = torch.zeros(8, 1, 2, 2)
    y[0::2] = torch.tensor([0., 2., 0., 2.]).view(4, 1, 1, 1)  # group of even samples: std 1
    y[1::2] = 5.0  # odd samples: std 0
    out = minibatch_stddev(y)
    assert out.shape == (8, 2, 2, 2)
    torch.testing.assert_close(out[0::2, 1], torch.ones(4, 2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1::2, 1], torch.full((4, 2, 2), 1e-4))

    assert minibatch_stddev(torch.randn(6, 3, 4, 4)).shape == (6, 4, 4, 4)  # group lowered to 3
    assert minibatch_stddev(torch.randn(2, 3, 4, 4)).shape == (2, 4, 4, 4)


def test_pixel_norm_noise_and_constant_input():
    torch.manual_seed(0)
    z = torch.randn(5, 16) * 7
    torch.testing.assert_close(PixelNorm()(z).pow(2).mean(1), torch.ones(5))
    noise_layer = NoiseInjection()
    x, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(noise_layer(x), x)  # weight starts at 0
    with torch.no_grad():
        noise_layer.weight.fill_(0.5)
    torch.testing.assert_close(noise_layer(x, noise), x + 0.5 * noise)
    assert not torch.equal(noise_layer(x), noise_layer(x))
    const = ConstantInput(7)
    assert const(3).shape == (3, 7, 4, 4)


def test_second_order_gradients_through_the_conv_path():
    torch.manual_seed(0)
    up = ModulatedConv2d(3, 4, 3, style_dim=4, upsample=True)
    down = ModulatedConv2d(4, 4, 3, style_dim=4, downsample=True)
    act, dwt = FusedLeakyReLU(4), HaarTransform(3)
    conv = EqualConv2d(12, 3, 1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    style = torch.randn(2, 4)
    out = act(down(up(x, style), style))
    out = conv(dwt(out[:, :3] * out[:, 3:]))
    grad, = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    grad.pow(2).sum().backward()
    for module in (up, down, conv):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_gradgradcheck_of_resampling_and_modulated_conv():
    torch.manual_seed(0)
    kernel = make_kernel([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d(t, kernel, up=2, pad=(2, 1)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d(t, kernel, down=2, pad=(1, 1)), (x,))
    conv = ModulatedConv2d(2, 2, 3, style_dim=3, upsample=True).double()
    style = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t, s: conv(t, s), (x, style))


# ---------------------------------------------------------------- polyphase up-sampling vs zero insertion

def zero_inserted_upfirdn2d(x, kernel, up, down, pad):
    """The formulation upfirdn2d used before its polyphase up-sampling: zero insertion by pad + reshape."""
    x0, x1, y0, y1 = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    b, c, h, w = x.shape
    out = F.pad(x.reshape(b * c, 1, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
    out = out.reshape(b * c, 1, h * up, w * up)
    out = F.pad(out, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    out = out[:, :, max(-y0, 0): out.shape[2] - max(-y1, 0), max(-x0, 0): out.shape[3] - max(-x1, 0)]
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, *kernel.shape), stride=down)
    return out.reshape(b, c, out.shape[2], out.shape[3])


def forward_backward(fn, x, grad):
    x = x.detach().requires_grad_(True)
    out = fn(x)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("up,down,pad,kshape", [
    (2, 1, (2, 1), (4, 4)),  # Upsample [1,3,3,1]
    (2, 1, (1, 0, 1, 0), (2, 2)),  # the IWT's definition
    (2, 1, (-1, 2), (4, 3)), (3, 1, (2, 2), (4, 3)), (2, 2, (1, 1), (3, 4)), (2, 1, (5, 4), (4, 4)),
    (2, 1, (-3, -2, 1, 0), (5, 3)), (2, 1, (0, 0), (1, 1)),
])
def test_polyphase_upsampling_equals_zero_insertion_forward_and_backward(up, down, pad, kshape):
    torch.manual_seed(0)
    kernel = torch.randn(kshape, dtype=torch.float64)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    expected = zero_inserted_upfirdn2d(x, kernel, up, down, pad)
    grad = torch.randn_like(expected)
    out, gx = forward_backward(lambda t: upfirdn2d(t, kernel, up=up, down=down, pad=pad), x, grad)
    ref, gref = forward_backward(lambda t: zero_inserted_upfirdn2d(t, kernel, up, down, pad), x, grad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, gref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", ["upsample", "torgb_skip"])  # ModulatedConv2d's blur has up = 1: unchanged
def test_upsampling_layers_equal_zero_insertion_within_1e6_in_float32(layer):
    torch.manual_seed(0)
    up, dwt, iwt = Upsample(), HaarTransform(3), InverseHaarTransform(3)
    k = up.kernel
    if layer == "upsample":
        x = torch.randn(2, 8, 16, 16)
        ours, ref = up, lambda t: zero_inserted_upfirdn2d(t, k, 2, 1, up.pad)
    else:  # ToRGB's skip path
        x = torch.randn(2, 12, 8, 8)
        ours = lambda t: dwt(up(iwt(t)))

        def ref(t):
            bands = t.chunk(4, 1)
            img = sum(zero_inserted_upfirdn2d(b, kk, 2, 1, (1, 0, 1, 0))
                      for b, kk in zip(bands, (iwt.ll, iwt.lh, iwt.hl, iwt.hh)))
            img = zero_inserted_upfirdn2d(img, k, 2, 1, up.pad)
            return torch.cat([zero_inserted_upfirdn2d(img, kk, 1, 2, (0, 0)) for kk in
                              (dwt.ll, dwt.lh, dwt.hl, dwt.hh)], 1)
    with torch.no_grad():
        grad = torch.randn_like(ref(x))
    out, gx = forward_backward(ours, x, grad)
    expected, gexp = forward_backward(ref, x, grad)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, gexp, rtol=1e-6, atol=1e-6)


def test_ops_benchmark_rows_agree_with_the_reference():
    from test_gpu_check import load_benchmark
    ops_benchmark = load_benchmark("ops")
    rows = ops_benchmark.run(batch=1, channels=4, size=8, repeats=1)
    assert len(rows) == 9
    assert {"Upsample [1,3,3,1] x2", "InverseHaarTransform (IWT), 12 ch"} <= {r["op"] for r in rows}
    for r in rows:
        assert r["fwd_max_abs_diff"] <= 1e-6 * max(1.0, r["ref_fwd_max_abs"]), r
        assert r["bwd_max_abs_diff"] <= 1e-6 * max(1.0, r["ref_bwd_max_abs"]), r
        assert r["ours_fwd_ms"] > 0 and r["ref_bwd_ms"] > 0
    assert ops_benchmark.table(rows).count("\n") == len(rows) + 1


# ----------------------------------------------------------------------------------------------------------
# every FIR and modulated-convolution formulation equals the reference one, to second order


def first_and_second_order(fn, x, grad_out, weights, extra=()):
    """fn(x); g = d<fn(x), grad_out>/dx built with a graph; and the gradients of <g, weights> with respect to
    grad_out and to `extra` tensors: the double backward that R1 and path length run through every op."""
    x = x.clone().requires_grad_(True)
    grad_out = grad_out.clone().requires_grad_(True)
    out = fn(x)
    gx, = torch.autograd.grad((out * grad_out).sum(), x, create_graph=True)
    second = torch.autograd.grad((gx * weights).sum(), [grad_out, *extra])
    return (out.detach(), gx.detach(), *second)


@pytest.mark.parametrize("impl", ["depthwise", "separable", "adjoint", "taps"])
@pytest.mark.parametrize("up,down,pad", [
    (2, 1, (2, 1)), (2, 1, (1, 0, 1, 0)), (1, 2, (1, 1)), (1, 2, (2, 2)), (1, 1, (1, 2)), (2, 1, (-1, 2)),
    (1, 2, (0, 0, 1, -1)), (1, 1, (2, 1)), (2, 2, (1, 2)), (1, 1, (5, 0, -1, 3)),
])
def test_fir_implementations_equal_reference_to_second_order(impl, up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8)
    kernel = torch.tensor([1.0, -2.0, 4.0, 3.0])[:, None] * torch.tensor([2.0, 1.0, -0.5])[None, :]  # rank 1
    ref = first_and_second_order(lambda t: upfirdn2d(t, kernel, up, down, pad, impl="reference"), x,
                                 *(torch.randn_like(upfirdn2d(x, kernel, up, down, pad)),
                                   torch.randn_like(x)))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8)
    ours = first_and_second_order(lambda t: upfirdn2d(t, kernel, up, down, pad, impl=impl), x,
                                  *(torch.randn_like(upfirdn2d(x, kernel, up, down, pad)),
                                    torch.randn_like(x)))
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-5 * ref[0].abs().max().item())


@pytest.mark.slow
def test_fir_depthwise_adjoint_and_taps_match_reference_on_a_full_kernel():
    torch.manual_seed(1)
    x, kernel = torch.randn(2, 4, 7, 6, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)  # rank 2
    for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (1, 2)), (2, 2, (0, 3))]:
        for impl in ("depthwise", "adjoint", "taps"):
            torch.testing.assert_close(upfirdn2d(x, kernel, up, down, pad, impl=impl),
                                       upfirdn2d(x, kernel, up, down, pad, impl="reference"))
        small = x[:1, :1, :4, :3].clone().requires_grad_(True)
        for impl in ("adjoint", "taps"):
            def fir(t, up=up, down=down, pad=pad, impl=impl):
                return upfirdn2d(t, kernel, up, down, pad, impl=impl)
            assert torch.autograd.gradgradcheck(fir, (small,))


def test_fir_implementation_switch_is_per_device_and_checked():
    from CDTG.ops import set_fir_impl, set_modconv_impl
    previous = set_fir_impl("separable", "cpu")
    try:
        assert previous == "taps"
        assert set_fir_impl("depthwise", "cpu") == "separable"
    finally:
        set_fir_impl(previous, "cpu")
    with pytest.raises(ValueError, match="FIR implementation must be one of"):
        set_fir_impl("upfirdn2d_cuda")
    with pytest.raises(ValueError, match="modulated-convolution implementation must be one of"):
        set_modconv_impl("fused")


@pytest.mark.parametrize("mode", ["same", "upsample", "downsample", "no_demod"])
def test_modconv_shared_equals_grouped_to_second_order(mode):
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 1 if mode == "no_demod" else 3, style_dim=6, demodulate=mode != "no_demod",
                           upsample=mode == "upsample", downsample=mode == "downsample")
    x, style = torch.randn(3, 4, 8, 8), torch.randn(3, 6, requires_grad=True)
    out_shape = conv(x, style).shape
    grad_out, weights = torch.randn(out_shape), torch.randn_like(x)
    results = {}
    for impl in ("grouped", "shared"):
        results[impl] = first_and_second_order(lambda t, impl=impl: conv(t, style, impl=impl), x, grad_out,
                                               weights, extra=(conv.weight, conv.modulation.weight, style))
    for a, b in zip(results["shared"], results["grouped"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture
def cuda_operations_on_cpu():
    """The operation implementations chosen for CUDA, applied to CPU tensors for the duration of a test."""
    from CDTG import ops
    saved = (ops.set_fir_impl(ops._fir_impl["cuda"], "cpu"),
             ops.set_modconv_impl(ops._modconv_impl["cuda"], "cpu"))
    yield ops._fir_impl["cpu"], ops._modconv_impl["cpu"]
    ops.set_fir_impl(saved[0], "cpu")
    ops.set_modconv_impl(saved[1], "cpu")


@pytest.mark.parametrize("impl", ["adjoint", "taps"])
def test_haar_transforms_fast_forms(impl):
    """CUDA's 'adjoint' Haar transforms (autograd functions, each the other's backward) and the CPU's 'taps'
    (strided views, no convolution): backward and double backward against finite differences, forward equal to
    the reference's."""
    from CDTG import ops
    torch.manual_seed(0)
    dwt, iwt = HaarTransform(3).double(), InverseHaarTransform(3).double()
    x = torch.randn(2, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 12, 1, 2, dtype=torch.float64, requires_grad=True)
    previous = ops.set_fir_impl(impl, "cpu")
    try:
        assert torch.autograd.gradgradcheck(dwt, (x,)) and torch.autograd.gradgradcheck(iwt, (y,))
        fast = dwt(x), iwt(y)
        ops.set_fir_impl("reference", "cpu")
        torch.testing.assert_close(fast, (dwt(x), iwt(y)), rtol=0, atol=1e-15)
    finally:
        ops.set_fir_impl(previous, "cpu")


def r1_and_path_gradients(size=16):
    """Every parameter gradient of one R1 penalty through D and one path-length penalty through G (the double
    backward of each), with fixed draws, in float64."""
    from CDTG.losses import path_length_penalty, r1_penalty
    from CDTG.model import Discriminator, Generator
    torch.manual_seed(0)
    g = Generator(size, 16, 2, num_classes=3, max_channels=8).double()
    d = Discriminator(size, num_classes=3, max_channels=8, label_dim=4).double()
    labels = torch.tensor([0, 2, 1, 1])
    real = torch.randn(4, 3, size, size, dtype=torch.float64, requires_grad=True)
    r1_penalty(d(real, labels), real).backward()
    z = torch.randn(4, 16, dtype=torch.float64)
    noise = [torch.randn_like(getattr(g.noises, f"noise_{i}")).double().expand(4, -1, -1, -1)
             for i in range(g.num_layers)]
    fake, latents = g([z, z.flip(0)], labels, return_latents=True, inject_index=2, noise=noise)
    penalty, _, _ = path_length_penalty(fake, latents, torch.zeros((), dtype=torch.float64),
                                        noise=torch.randn_like(fake))
    penalty.backward()
    return {**{f"d.{n}": p.grad for n, p in d.named_parameters() if p.grad is not None},
            **{f"g.{n}": p.grad for n, p in g.named_parameters() if p.grad is not None}}


@pytest.mark.slow
def test_cuda_operations_give_the_reference_r1_and_path_length_gradients(cuda_operations_on_cpu):
    assert cuda_operations_on_cpu == ("adjoint", "shared")
    fast = r1_and_path_gradients()
    from CDTG import ops
    ops.set_fir_impl("reference", "cpu")
    ops.set_modconv_impl("grouped", "cpu")
    ref = r1_and_path_gradients()
    assert fast.keys() == ref.keys() and len(ref) > 40
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-9, atol=1e-11, msg=name)


def test_cuda_operations_run_under_bf16_autocast(cuda_operations_on_cpu):
    """Mixed precision hands the explicit backwards gradients of another dtype than their saved kernels."""
    from CDTG.losses import path_length_penalty, r1_penalty
    from CDTG.model import Discriminator, Generator
    torch.manual_seed(0)
    g = Generator(16, 16, 1, num_classes=2, max_channels=8)
    d = Discriminator(16, num_classes=2, max_channels=8, label_dim=4)
    labels = torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake, latents = g([torch.randn(2, 16)], labels, return_latents=True)
        loss = d(fake, labels).float().mean()
    loss.backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake, latents = g([torch.randn(2, 16)], labels, return_latents=True)
        penalty, _, _ = path_length_penalty(fake.float(), latents, torch.zeros(()))
    penalty.backward()
    real = torch.randn(2, 3, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r1 = r1_penalty(d(real, labels), real)
    r1.backward()
    assert all(torch.isfinite(p.grad).all() for p in [*g.parameters(), *d.parameters()] if p.grad is not None)


TRITON_CHECK = """
import torch
from CDTG.ops import upfirdn2d
torch.manual_seed(0)
kernel = torch.randn(4, 3)
for up, down, pad in [(2, 1, (2, 1)), (1, 2, (0, 0, 1, -1)), (1, 1, (5, 0, -1, 3)), (2, 2, (1, 2))]:
    x = torch.randn(1, 2, 5, 4, requires_grad=True)
    out = {}
    for impl in ("reference", "triton"):
        y = upfirdn2d(x, kernel, up, down, pad, impl=impl)
        g = torch.ones_like(y).mul_(0.5).requires_grad_(True)
        gx, = torch.autograd.grad((y * g).sum(), x, create_graph=True)
        ggx, = torch.autograd.grad((gx * x.detach().cos()).sum(), g)
        out[impl] = (y.detach(), gx.detach(), ggx)
    for a, b in zip(out["triton"], out["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
print("triton ok")
"""


@pytest.mark.slow
def test_triton_fir_equals_reference_to_second_order():
    """The Triton kernel (CDTG/fir_triton.py) run by Triton's interpreter on the CPU: forward, backward and
    double backward equal the reference's."""
    pytest.importorskip("triton")
    from conftest import run_script
    proc = run_script("-c", TRITON_CHECK, env={"TRITON_INTERPRET": "1"})
    assert "triton ok" in proc.stdout


@pytest.mark.parametrize("up", [True, False])
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 4, 6, 4, 1]])
def test_composed_resampling_is_the_wavelet_chain(up, taps):
    """The one stride-2 convolution read off IWT -> FIR resampling -> DWT gives the chain's output, its
    gradient and its double backward in float64, on square and non-square inputs."""
    from CDTG.ops import apply_resampling, composed_resampling

    def make_chain():
        return torch.nn.Sequential(InverseHaarTransform(3), Upsample(taps) if up else Downsample(taps),
                                   HaarTransform(3))

    chain = make_chain().double()
    weight, padding = composed_resampling(make_chain, 12, up)
    assert weight.dtype == torch.float64 and weight.device.type == "cpu"
    torch.manual_seed(0)
    for h, w in [(4, 4), (8, 6), (16, 16)]:
        x = torch.randn(2, 12, h, w, dtype=torch.float64, requires_grad=True)
        want = chain(x)
        got = apply_resampling(x, weight, padding, up)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
        g = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0],
                                   rtol=0, atol=1e-13)
    small = torch.randn(1, 12, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: apply_resampling(t, weight, padding, up), (small,))


def test_composed_resampling_is_built_on_the_cpu_under_another_default_device():
    from CDTG.model import Discriminator, Generator
    with torch.device("meta"):
        g, d = Generator(32, 16, 2, num_classes=3, max_channels=8), Discriminator(32, num_classes=3)
    assert g.to_rgbs[0].skip_weight.device.type == "cpu" and d.from_rgbs[1].level_weight.device.type == "cpu"
    assert "to_rgbs.0.skip_weight" not in g.state_dict()  # computed, never stored


def test_generator_and_discriminator_give_the_same_images_with_either_resampling():
    from CDTG.model import Discriminator, Generator
    from CDTG.ops import set_resample_impl
    torch.manual_seed(0)
    g, d = Generator(32, 16, 2, num_classes=3, max_channels=8), Discriminator(32, num_classes=3)
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    noise = [torch.randn_like(getattr(g.noises, f"noise_{i}")) for i in range(g.num_layers)]
    previous = set_resample_impl("chain", "cpu")
    try:
        assert previous == "composed"
        img = g([z], labels, noise=noise)[0]
        want = img, d(img, labels)
        set_resample_impl("composed", "cpu")
        img = g([z], labels, noise=noise)[0]
        torch.testing.assert_close((img, d(img, labels)), want, rtol=1e-5, atol=1e-6)
    finally:
        set_resample_impl(previous, "cpu")
    with pytest.raises(ValueError, match="wavelet resampling implementation must be one of"):
        set_resample_impl("fused")

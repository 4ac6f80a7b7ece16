"""Forward and backward time of each CDTG op against the straightforward formulation, with max abs diffs.

    python benchmarks/ops.py                       (CPU, the shapes of a 256 px generator's middle layers)
    python benchmarks/ops.py --batch 2 --channels 8 --size 16 --repeats 2       (seconds)

The reference is written here from the definition: FIR up-sampling by materialising the zero-inserted tensor,
pad, a full-resolution convolution with the flipped kernel, then a strided slice for down-sampling; the Haar
transforms as one upfirdn per band. Each row: median ms over --repeats (after a warm-up), ours / reference.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from CDTG.ops import (
    Blur,
    Downsample,
    HaarTransform,
    InverseHaarTransform,
    ModulatedConv2d,
    Upsample,
    fused_leaky_relu,
    upfirdn2d,
)


def zero_insertion_upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    x0, x1, y0, y1 = pad
    b, c, h, w = x.shape
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        stuffed = out.new_zeros(b * c, 1, h * up, w * up)
        stuffed[:, :, ::up, ::up] = out
        out = stuffed
    out = F.pad(out, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    out = out[:, :, max(-y0, 0): out.shape[2] - max(-y1, 0), max(-x0, 0): out.shape[3] - max(-x1, 0)]
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape))
    out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[2], out.shape[3])


def reference_modconv_up(conv: ModulatedConv2d, x, style):
    """ModulatedConv2d(upsample=True) with its blur done by the reference upfirdn2d."""
    b, cin, h, w = x.shape
    s = conv.modulation(style).view(b, 1, cin, 1, 1)
    weight = conv.scale * conv.weight * s
    weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, conv.out_channels, 1, 1, 1)
    weight = weight.transpose(1, 2).reshape(b * cin, conv.out_channels, conv.kernel_size, conv.kernel_size)
    out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), weight, stride=2, groups=b)
    out = out.view(b, conv.out_channels, out.shape[2], out.shape[3])
    return zero_insertion_upfirdn2d(out, conv.blur.kernel, pad=conv.blur.pad)


def cases(batch: int, channels: int, size: int):
    """(name, ours(x), reference(x), input shape)."""
    up, down, blur = Upsample(), Downsample(), Blur(pad=(2, 1))
    dwt, iwt = HaarTransform(3), InverseHaarTransform(3)
    conv = ModulatedConv2d(channels, channels, 3, channels, upsample=True)
    style = torch.randn(batch, channels)
    bias = torch.randn(channels)
    k = up.kernel
    c, n = (batch, channels, size, size), (batch, 12, 2 * size, 2 * size)
    dwt_bands = lambda x: torch.cat([zero_insertion_upfirdn2d(x, kk, down=2) for kk in
                                     (dwt.ll, dwt.lh, dwt.hl, dwt.hh)], 1)

    def iwt_ref(x):
        bands = x.chunk(4, 1)
        return sum(zero_insertion_upfirdn2d(band, kk, up=2, pad=(1, 0, 1, 0))
                   for band, kk in zip(bands, (iwt.ll, iwt.lh, iwt.hl, iwt.hh)))

    return [
        ("Upsample [1,3,3,1] x2", up, lambda x: zero_insertion_upfirdn2d(x, k, up=2, pad=up.pad), c),
        ("upfirdn2d up=2 pad=(2,1)", lambda x: upfirdn2d(x, k, up=2, pad=(2, 1)),
         lambda x: zero_insertion_upfirdn2d(x, k, up=2, pad=(2, 1)), c),
        ("Downsample [1,3,3,1] /2", down,
         lambda x: zero_insertion_upfirdn2d(x, down.kernel, down=2, pad=down.pad), c),
        ("Blur pad=(2,1)", blur, lambda x: zero_insertion_upfirdn2d(x, blur.kernel, pad=blur.pad), c),
        ("fused_leaky_relu (bias)", lambda x: fused_leaky_relu(x, bias),
         lambda x: F.leaky_relu(x + bias.view(1, -1, 1, 1), 0.2) * 2 ** 0.5, c),
        ("ModulatedConv2d 3x3 upsample + blur", lambda x: conv(x, style),
         lambda x: reference_modconv_up(conv, x, style), c),
        ("ToRGB skip: IWT, Upsample, DWT (12 ch)", lambda x: dwt(up(iwt(x))),
         lambda x: dwt_bands(zero_insertion_upfirdn2d(iwt_ref(x), k, up=2, pad=up.pad)), n),
        ("HaarTransform (DWT), 3 ch", dwt, dwt_bands, (batch, 3, 4 * size, 4 * size)),
        ("InverseHaarTransform (IWT), 12 ch", iwt, iwt_ref, n),
    ]


def timed_pair(fns, x, grad, repeats: int):
    """For each fn: (forward output, input gradient, median forward ms, median backward ms). The fns alternate
    within each repeat, so that both see the same machine load."""
    times = [([], []) for _ in fns]
    results = [None] * len(fns)
    for i in range(repeats + 1):  # the first round is a warm-up
        for j, fn in enumerate(fns):
            xi = x.detach().requires_grad_(True)
            t0 = time.perf_counter()
            out = fn(xi)
            t1 = time.perf_counter()
            out.backward(grad)
            t2 = time.perf_counter()
            if i:
                times[j][0].append(1000 * (t1 - t0))
                times[j][1].append(1000 * (t2 - t1))
            results[j] = (out.detach(), xi.grad)
    return [(*r, statistics.median(f), statistics.median(b)) for r, (f, b) in zip(results, times)]


def run(batch: int = 4, channels: int = 64, size: int = 64, repeats: int = 5, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    rows = []
    for name, ours, ref, shape in cases(batch, channels, size):
        x = torch.randn(shape)
        with torch.no_grad():
            grad = torch.randn_like(ref(x))
        (o_out, o_grad, o_f, o_b), (r_out, r_grad, r_f, r_b) = timed_pair([ours, ref], x, grad, repeats)
        rows.append({"op": name, "shape": list(shape),
                     "fwd_max_abs_diff": (o_out - r_out).abs().max().item(),
                     "bwd_max_abs_diff": (o_grad - r_grad).abs().max().item(),
                     "ref_fwd_max_abs": r_out.abs().max().item(),
                     "ref_bwd_max_abs": r_grad.abs().max().item(),
                     "ours_fwd_ms": o_f, "ref_fwd_ms": r_f, "ours_bwd_ms": o_b, "ref_bwd_ms": r_b,
                     "ratio_fwd": o_f / r_f, "ratio_bwd": o_b / r_b})
    return rows


def table(rows: list[dict]) -> str:
    lines = [("| op | input | fwd ms ours / ref (ratio) | bwd ms ours / ref (ratio) | max abs diff fwd / bwd "
              "(largest ref value fwd / bwd) |"), "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {'x'.join(map(str, r['shape']))} | "
                     f"{r['ours_fwd_ms']:.2f} / {r['ref_fwd_ms']:.2f} ({r['ratio_fwd']:.2f}) | "
                     f"{r['ours_bwd_ms']:.2f} / {r['ref_bwd_ms']:.2f} ({r['ratio_bwd']:.2f}) "
                     f"| {r['fwd_max_abs_diff']:.1e} / {r['bwd_max_abs_diff']:.1e} "
                     f"({r['ref_fwd_max_abs']:.3g} / {r['ref_bwd_max_abs']:.3g}) |")
    return "\n".join(lines)


def get_args_parser():
    p = argparse.ArgumentParser("CDTG ops against the zero-insertion formulation (CPU)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="input side of the up-sampling ops")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per op (median)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.batch, args.channels, args.size, args.repeats)
    print(f"CPU, {torch.get_num_threads()} threads, median of {args.repeats}; ratio = ours / reference")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())

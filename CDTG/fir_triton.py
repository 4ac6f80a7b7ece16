"""upfirdn2d's forward as one Triton kernel: each output pixel sums its kernel taps over the zero-inserted,
padded input without building it (the taps that land on inserted zeros or padding are masked off).

A candidate for CUDA (`CDTG.ops.set_fir_impl("triton")`); gradients come from CDTG.ops._AdjointFIR, whose
backward calls this again with the adjoint's parameters. With TRITON_INTERPRET=1 set before triton is
imported, the kernel also runs on CPU tensors (how the tests check it).
"""
import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _fir_kernel(x_ptr, k_ptr, y_ptr, H, W, OH, OW,
                UP: tl.constexpr, DOWN: tl.constexpr, PX0: tl.constexpr, PY0: tl.constexpr,
                KH: tl.constexpr, KW: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    image = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    inside = offs < OH * OW
    oy = offs // OW
    ox = offs % OW
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for ky in tl.static_range(KH):
        uy = oy * DOWN + ky - PY0  # row in the zero-inserted, unpadded input
        row_ok = inside & (uy >= 0) & (uy % UP == 0) & (uy // UP < H)
        for kx in tl.static_range(KW):
            ux = ox * DOWN + kx - PX0
            ok = row_ok & (ux >= 0) & (ux % UP == 0) & (ux // UP < W)
            v = tl.load(x_ptr + image * H * W + (uy // UP) * W + ux // UP, mask=ok, other=0.0)
            # a true convolution: the kernel flipped
            tap = tl.load(k_ptr + (KH - 1 - ky) * KW + (KW - 1 - kx))
            acc += v.to(tl.float32) * tap
    tl.store(y_ptr + image * OH * OW + offs, acc.to(y_ptr.dtype.element_ty), mask=inside)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int, pad) -> torch.Tensor:
    """CDTG.ops.upfirdn2d's arithmetic (pad = (x0, x1, y0, y1)) on [B, C, H, W]; not differentiable itself."""
    x0, x1, y0, y1 = pad
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out_h = (h * up + y0 + y1 - kh) // down + 1
    out_w = (w * up + x0 + x1 - kw) // down + 1
    x = x.contiguous()
    y = torch.empty(b, c, out_h, out_w, dtype=x.dtype, device=x.device)
    grid = (b * c, triton.cdiv(out_h * out_w, BLOCK))
    _fir_kernel[grid](x, kernel.float().contiguous(), y, h, w, out_h, out_w, UP=up, DOWN=down, PX0=x0, PY0=y0,
                      KH=kh, KW=kw, BLOCK_SIZE=BLOCK)
    return y

"""2-D convolution, channels first: ``conv2d`` and its two backward ops.

Layout: x [N, C, H, W], weight [F, C/groups, KH, KW], bias [F], y [N, F, OH, OW].

Ops (attributes are explicit ints; the conv2d layer resolves the spec's int / pair /
'same' / 'valid' padding with `resolve_padding`):

- ``conv2d(x, w)`` or ``conv2d(x, w, b)``: the bias is an optional third input (the op is
  registered once with ``variadic=True``; `infer` accepts exactly 2 or 3 inputs).
  Attributes ``stride=(sh, sw)``, ``padding=(pt, pb, pl, pr)``, ``dilation=(dh, dw)``,
  ``groups`` (1; C for depthwise). Pattern OUT_FUSABLE: `fuse` appends elementwise
  epilogues (bias add, activation) that keep y's type.
  OH = (H + pt + pb - (KH - 1) * dh - 1) // sh + 1, likewise OW.
- ``conv2d_grad_input(gy, w)`` -> dx [N, C, H, W]: the same attributes plus
  ``input_size=(H, W)`` (strides make H ambiguous from OH).
- ``conv2d_grad_weight(x, gy)`` -> dw [F, C/groups, KH, KW]: the same attributes plus
  ``kernel_size=(KH, KW)``.

The three are linear maps adjoint to each other, so their gradients are each other and
second-order differentiation stays inside this family. The bias gradient (bias as the
third input) is ``sum(gy, axes=(0, 2, 3))``, built as ``sum(sum(gy, (2, 3)), (0,))``: two
reductions over adjacent axes need no transposed copy.

CPU strategy, chosen by measuring (tools/bench_conv.py --candidates: im2col + BLAS per
sample or over the whole batch, direct loops with prange): per sample and group, copy the
sample into a zero-padded scratch image, unfold it into an im2col matrix (one row per
tap) and call BLAS through ``np.dot`` (forward: W @ cols; backward-input: W.T @ gy, then a
col2im scatter-add; backward-weight: gy @ cols.T, or cols @ gy.T from 16 filters per
group, accumulated). The per-sample GEMMs of small layers (LeNet's) are far below where
BLAS threading pays, so BLAS runs on one thread and the kernels use the cores themselves:
the batch is split into blocks of samples run with ``prange`` (see "Threads" below).
Scratch is allocated once per block, never inside the sample loop; inner loops copy
contiguous slices indexed by the loop variable alone (an index like ``s + q`` keeps
Numba's negative-index wraparound test, which stops LLVM's vectoriser), and they use
typed zeros and accumulate in the array dtype (BLAS sgemm for float32).
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.registry import (
    PAR_BLOCKS,
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    outer_tile,
    prange,
    register,
    vector_tile,
)

FLOATS = ("float32", "float64")

# ----------------------------------------------------------------------- attributes


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v
    ):
        return int(v[0]), int(v[1])
    raise ShapeError(f"{what} must be an int or a pair of ints, got {v!r}")


def resolve_padding(padding, kernel, stride=1, dilation=1, input_size=None) -> tuple[int, int, int, int]:
    """The spec's padding as explicit ``(top, bottom, left, right)``.

    ``padding`` is an int, a pair ``(h, w)``, an explicit 4-tuple, ``'valid'`` (none) or
    ``'same'``. 'same' gives an output of ceil(input / stride): with stride 1 the total
    padding is ``dilation * (kernel - 1)``, split as PyTorch does (the extra cell of an odd
    total goes to the bottom / right) and independent of the input size; with a stride > 1
    it is TensorFlow's rule, ``max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0)``, split
    the same way, which needs ``input_size=(H, W)``.
    """
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ShapeError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        out = []
        for i, (k, s, d) in enumerate(((kh, sh, dh), (kw, sw, dw))):
            eff = (k - 1) * d + 1
            if s == 1:
                total = eff - 1
            else:
                if input_size is None:
                    raise ShapeError(
                        "padding 'same' with a stride > 1 depends on the input size",
                        help="pass input_size=(H, W)",
                    )
                n = _pair(input_size, "input_size")[i]
                total = max((-(-n // s) - 1) * s + eff - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        p = tuple(int(a) for a in padding)
    else:
        ph, pw = _pair(padding, "padding")
        p = (ph, ph, pw, pw)
    if min(p) < 0:
        raise ShapeError(f"padding must not be negative, got {padding!r}")
    return p


def _quad(v, what: str) -> tuple[int, int, int, int]:
    if isinstance(v, (tuple, list)) and len(v) == 4 and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) and a >= 0 for a in v
    ):
        return tuple(int(a) for a in v)
    raise ShapeError(f"{what} must be four ints >= 0 (top, bottom, left, right), got {v!r}")


def conv_params(attrs: dict):
    """(sh, sw), (pt, pb, pl, pr), (dh, dw), groups from an op's attributes, checked."""
    sh, sw = _pair(attrs["stride"], "stride")
    dh, dw = _pair(attrs["dilation"], "dilation")
    if sh < 1 or sw < 1:
        raise ShapeError(f"stride must be >= 1, got {attrs['stride']!r}")
    if dh < 1 or dw < 1:
        raise ShapeError(f"dilation must be >= 1, got {attrs['dilation']!r}")
    groups = attrs["groups"]
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ShapeError(f"groups must be an int >= 1, got {groups!r}")
    return (sh, sw), _quad(attrs["padding"], "padding"), (dh, dw), int(groups)


def conv_out_size(n: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    """Output length of a convolution along one axis (may be <= 0: no full window)."""
    return (n + p0 + p1 - (k - 1) * d - 1) // s + 1


def conv_flops(op: str, ins: list[TensorType], out: TensorType, bindings: dict) -> int:
    """Floating-point operations of a conv2d-family op (a multiply-add counts 2): each of
    the three does 2 * N * F * C/groups * KH * KW * OH * OW; conv2d adds N*F*OH*OW for
    a bias input. For a cost model: ``conv_flops(op, input types, output type, {"N": 64})``.
    """
    if op == "conv2d":
        w, gy = ins[1], out
    elif op == "conv2d_grad_input":
        gy, w = ins
    elif op == "conv2d_grad_weight":
        gy, w = ins[1], out
    else:
        raise ValueError(f"not a conv2d op: {op}")
    n = gy.shape[0]
    n = bindings[n] if isinstance(n, str) else n
    f, cg, kh, kw = w.shape
    pix = n * f * gy.shape[2] * gy.shape[3]
    return 2 * pix * cg * kh * kw + (pix if op == "conv2d" and len(ins) == 3 else 0)


def _conv_cost(op: str):
    def cost(attrs, ins, out, bindings):
        return conv_flops(op, ins, out, bindings)

    return cost


def _fmt(shape) -> str:
    """A shape as the spec writes it: without the batch dim."""
    return str(list(shape[1:]))


# ----------------------------------------------------------------------- shapes


def _check_image(t: TensorType, what: str, op: str) -> None:
    if t.rank != 4:
        got = _fmt(t.shape) if t.rank else "a scalar"
        if t.rank == 3:
            hint = f"add a channel axis: give the {what} the shape {list((1,) + tuple(t.shape[1:]))}"
        elif t.rank == 2:
            hint = ("a feature vector cannot be convolved: give the model input the shape "
                    "[C, H, W] (e.g. [1, 8, 8]), or use a dense layer here")
        else:
            hint = "reshape the input to channels-first images [C, H, W]"
        raise ShapeError(f"{op} expects [C, H, W] images; got {got} — {hint}", help=hint)
    if t.dtype not in FLOATS:
        raise ShapeError(f"{op} expects float images, got {t.dtype}")
    for d, name in zip(t.shape[1:], ("channels", "height", "width")):
        if not isinstance(d, int):
            raise ShapeError(f"{op} needs a known number of {name}; got {_fmt(t.shape)}")


def _spatial_out(op, x_shape, k, s, d, p):
    (kh, kw), (sh, sw), (dh, dw), (pt, pb, pl, pr) = k, s, d, p
    h, w = x_shape[2], x_shape[3]
    oh = conv_out_size(h, kh, sh, dh, pt, pb)
    ow = conv_out_size(w, kw, sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        dil = f" (dilated to {eh}x{ew})" if (dh, dw) != (1, 1) else ""
        raise ShapeError(
            f"{op} kernel {kh}x{kw}{dil} is larger than its {h + pt + pb}x{w + pl + pr} "
            f"padded input {_fmt(x_shape)}",
            help="use a smaller kernel, more padding ('same'), or fewer downsampling layers before it",
        )
    return oh, ow


def _check_weight(op, x: TensorType, w: TensorType, groups: int) -> None:
    if w.rank != 4 or not w.is_concrete():
        raise ShapeError(f"{op} weight must be [filters, channels/groups, KH, KW], got {list(w.shape)}")
    if w.dtype != x.dtype:
        raise ShapeError(f"{op} weight is {w.dtype} but the input is {x.dtype}")
    c = x.shape[1]
    f, cg = w.shape[0], w.shape[1]
    if c % groups:
        raise ShapeError(
            f"{op} input channels ({c}, input {_fmt(x.shape)}) are not divisible by groups={groups}",
            help="groups must divide both the input channels and the filters",
        )
    if f % groups:
        raise ShapeError(
            f"{op} filters ({f}) are not divisible by groups={groups}",
            help="groups must divide both the input channels and the filters",
        )
    if cg * groups != c:
        per = f" with groups={groups}" if groups > 1 else ""
        each = f" ({cg} per group)" if groups > 1 else ""
        raise ShapeError(
            f"{op} weight {list(w.shape)}{per} expects {cg * groups} input channels{each} but "
            f"the input {_fmt(x.shape)} has {c}",
            help=f"a conv2d weight is [filters, channels / groups, KH, KW]; here [{w.shape[0]}, "
            f"{c // groups if c % groups == 0 else '?'}, {w.shape[2]}, {w.shape[3]}]",
        )


def _infer_conv2d(attrs, types):
    if len(types) not in (2, 3):
        raise ShapeError(f"conv2d takes (x, w) or (x, w, b), got {len(types)} inputs")
    s, p, d, groups = conv_params(attrs)
    x, w = types[0], types[1]
    _check_image(x, "input", "conv2d")
    _check_weight("conv2d", x, w, groups)
    if len(types) == 3:
        b = types[2]
        if b.shape != (w.shape[0],) or b.dtype != x.dtype:
            raise ShapeError(f"conv2d bias must be {x.dtype}[{w.shape[0]}] (one per filter), got {b}")
    oh, ow = _spatial_out("conv2d", x.shape, w.shape[2:], s, d, p)
    return [TensorType((x.shape[0], w.shape[0], oh, ow), x.dtype)]


def _check_gy(op, gy: TensorType, n, f: int, oh: int, ow: int, dtype: str) -> None:
    if gy.rank != 4 or gy.dtype != dtype:
        raise ShapeError(f"{op} expects the output gradient as {dtype}[N, F, OH, OW], got {gy}")
    want = (n, f, oh, ow)
    if tuple(gy.shape) != want:
        raise ShapeError(
            f"{op}: the output gradient {_fmt(gy.shape)} does not match the convolution's "
            f"output {list(want[1:])}"
        )


def _infer_grad_input(attrs, types):
    s, p, d, groups = conv_params(attrs)
    gy, w = types
    h, wd = _pair(attrs["input_size"], "input_size")
    if gy.rank != 4:
        raise ShapeError(f"conv2d_grad_input expects gy [N, F, OH, OW], got {gy}")
    c = (w.shape[1] * groups) if w.rank == 4 and isinstance(w.shape[1], int) else None
    x = TensorType((gy.shape[0], c, h, wd), gy.dtype)
    if c is None:
        raise ShapeError(f"conv2d_grad_input weight must be [F, C/groups, KH, KW], got {w}")
    _check_weight("conv2d_grad_input", x, w, groups)
    oh, ow = _spatial_out("conv2d_grad_input", x.shape, w.shape[2:], s, d, p)
    _check_gy("conv2d_grad_input", gy, gy.shape[0], w.shape[0], oh, ow, w.dtype)
    return [x]


def _infer_grad_weight(attrs, types):
    s, p, d, groups = conv_params(attrs)
    x, gy = types
    k = _pair(attrs["kernel_size"], "kernel_size")
    _check_image(x, "input", "conv2d_grad_weight")
    if gy.rank != 4 or not isinstance(gy.shape[1], int):
        raise ShapeError(f"conv2d_grad_weight expects gy [N, F, OH, OW], got {gy}")
    f = gy.shape[1]
    w = TensorType((f, x.shape[1] // groups, k[0], k[1]), x.dtype)
    if x.shape[1] % groups == 0:
        _check_weight("conv2d_grad_weight", x, w, groups)
    else:
        raise ShapeError(
            f"conv2d_grad_weight input channels ({x.shape[1]}) are not divisible by groups={groups}"
        )
    oh, ow = _spatial_out("conv2d_grad_weight", x.shape, k, s, d, p)
    _check_gy("conv2d_grad_weight", gy, x.shape[0], f, oh, ow, x.dtype)
    return [w]


# ----------------------------------------------------------------------- references
# Plain NumPy in float64, one tensordot per kernel tap: exact enough for gradchecks.


def _tap(kh, kw, s, d, oh, ow):
    (sh, sw), (dh, dw) = s, d
    return (slice(kh * dh, kh * dh + (oh - 1) * sh + 1, sh), slice(kw * dw, kw * dw + (ow - 1) * sw + 1, sw))


# _ref_conv2d and _ref_grad_input: a deliberate parallel (the same tap loop, gathering
# there and scattering, the adjoint, here), kept as two plain references.
def _ref_conv2d(attrs, x, w, b=None):
    s, (pt, pb, pl, pr), d, groups = conv_params(attrs)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    w64 = w.astype(np.float64)
    n = x.shape[0]
    f, cg, khs, kws = w.shape
    fg = f // groups
    oh = conv_out_size(x.shape[2], khs, s[0], d[0], pt, pb)
    ow = conv_out_size(x.shape[3], kws, s[1], d[1], pl, pr)
    out = np.zeros((n, f, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w64[g * fg:(g + 1) * fg]
        for kh in range(khs):
            for kw in range(kws):
                rs, cs = _tap(kh, kw, s, d, oh, ow)
                # [N, Cg, OH, OW] x [Fg, Cg] -> [N, OH, OW, Fg]
                t = np.tensordot(xg[:, :, rs, cs], wg[:, :, kh, kw], axes=([1], [1]))
                out[:, g * fg:(g + 1) * fg] += t.transpose(0, 3, 1, 2)
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
    return out.astype(x.dtype)


# Deliberate parallel of _ref_conv2d's tap loop: its adjoint, scattering gy back.
def _ref_grad_input(attrs, gy, w):
    s, (pt, pb, pl, pr), d, groups = conv_params(attrs)
    h, wd = _pair(attrs["input_size"], "input_size")
    n, f, oh, ow = gy.shape
    _, cg, khs, kws = w.shape
    fg = f // groups
    gy64, w64 = gy.astype(np.float64), w.astype(np.float64)
    gxp = np.zeros((n, cg * groups, h + pt + pb, wd + pl + pr))
    for g in range(groups):
        gyg = gy64[:, g * fg:(g + 1) * fg]
        wg = w64[g * fg:(g + 1) * fg]
        for kh in range(khs):
            for kw in range(kws):
                rs, cs = _tap(kh, kw, s, d, oh, ow)
                # [N, Fg, OH, OW] x [Fg, Cg] -> [N, OH, OW, Cg]
                t = np.tensordot(gyg, wg[:, :, kh, kw], axes=([1], [0]))
                gxp[:, g * cg:(g + 1) * cg, rs, cs] += t.transpose(0, 3, 1, 2)
    return gxp[:, :, pt:pt + h, pl:pl + wd].astype(gy.dtype)


def _ref_grad_weight(attrs, x, gy):
    s, (pt, pb, pl, pr), d, groups = conv_params(attrs)
    khs, kws = _pair(attrs["kernel_size"], "kernel_size")
    c = x.shape[1]
    f, oh, ow = gy.shape[1:]
    cg, fg = c // groups, f // groups
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gy64 = gy.astype(np.float64)
    gw = np.zeros((f, cg, khs, kws))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        gyg = gy64[:, g * fg:(g + 1) * fg]
        for kh in range(khs):
            for kw in range(kws):
                rs, cs = _tap(kh, kw, s, d, oh, ow)
                gw[g * fg:(g + 1) * fg, :, kh, kw] = np.tensordot(
                    gyg, xg[:, :, rs, cs], axes=([0, 2, 3], [0, 2, 3])
                )
    return gw.astype(x.dtype)


# ----------------------------------------------------------------------- gradients


def _conv_attrs(attrs) -> dict:
    return {k: attrs[k] for k in ("stride", "padding", "dilation", "groups")}


def _g_conv2d(g, attrs, ins, outs, gouts):
    x, w = ins[0], ins[1]
    gy = gouts[0]
    xt, wt = g.type_of(x), g.type_of(w)
    common = _conv_attrs(attrs)
    gx = g.op("conv2d_grad_input", gy, w, input_size=tuple(xt.shape[2:]), **common)
    gw = g.op("conv2d_grad_weight", x, gy, kernel_size=tuple(wt.shape[2:]), **common)
    grads = [gx, gw]
    if len(ins) == 3:
        # sum over (0, 2, 3) as two reductions over adjacent axes (no transposed copy)
        grads.append(g.op("sum", g.op("sum", gy, axes=(2, 3)), axes=(0,)))
    return grads


def _g_grad_input(g, attrs, ins, outs, gouts):
    # gx = A_w^T gy is linear in gy and in w: d/dgy = conv2d(G, w), d/dw = grad_weight(G, gy)
    gy, w = ins
    big_g = gouts[0]
    common = _conv_attrs(attrs)
    d_gy = g.op("conv2d", big_g, w, **common)
    d_w = g.op("conv2d_grad_weight", big_g, gy, kernel_size=tuple(g.type_of(w).shape[2:]), **common)
    return [d_gy, d_w]


def _g_grad_weight(g, attrs, ins, outs, gouts):
    # gw = <gy, conv(x, .)>: d/dx = grad_input(gy, G), d/dgy = conv2d(x, G)
    x, gy = ins
    big_g = gouts[0]
    common = _conv_attrs(attrs)
    d_x = g.op("conv2d_grad_input", gy, big_g, input_size=tuple(g.type_of(x).shape[2:]), **common)
    d_gy = g.op("conv2d", x, big_g, **common)
    return [d_x, d_gy]


# ----------------------------------------------------------------------- CPU kernels
# Shared structure. Each sample is copied into `xp`, its zero-padded image [C, Hp + 1, Wp]
# (a spare zero row at the bottom; `xpf` is the same buffer flat per channel). Hp and Wp
# cover exactly the rows / columns some window reads, so padding beyond them and input
# rows no window reaches are skipped; the borders are zeroed once per block of samples,
# as every sample writes the same interior cells. The im2col matrix `cols` has one row per
# tap (c, kh, kw) of a group.
#
# With stride 1 and few filters per group, "wide" rows: the GEMM runs over the padded
# width, output position q = oh*Wp + ow with ow in [0, Wp), and the Wp - OW extra columns
# of every row are discarded (forward) or fed zeros (backward). Then each im2col row is ONE
# contiguous slice of the flat image, xpf[c, kh*dh*Wp + kw*dw + q], instead of OH short
# segments: the unfolding becomes a memcpy per tap, for a GEMM Wp/OW times larger. That
# pays while (Wp - OW) * (filters per group + 2) <= WIDE_LIMIT (measured with
# tools/bench_conv.py --candidates: LeNet conv1 +7..18 %, conv2 even, 32->64 3x3 -10..18 %);
# otherwise each tap copies OH segments.
#
# Threads: each kernel splits the batch into at most PAR_BLOCKS (graphdl.ops.registry)
# runs of samples and runs them with `prange` (Numba's thread pool; BLAS itself stays on
# one thread, see `graphdl.backends.cpu.library.limit_blas_threads`). A block allocates
# its own scratch once and does its samples with the jitted helpers below: the per-sample
# code compiled inside a parfor body ran 1.2-1.5x slower on one thread than the same code
# in a plain function. The weight gradient sums each block's share into its own copy of
# gw (fewer blocks when gw is large, ACC_BUDGET) and adds the blocks in order, so results
# do not depend on the number of threads.
#
# Non-finite inputs: in the wide weight gradient the extra columns multiply zeros, so an
# inf in x gives NaN (rather than inf) in the weights it touches; either way training is
# already broken, and the forward pass shows it first.

WIDE_LIMIT = 64
ACC_BUDGET = 1 << 22  # elements of per-block weight-gradient buffers (16 MB float32)


@cpu_helper
def _geometry(xshape, wshape, yshape, sh, sw, pt, pl, dh, dw, groups):
    """(hp, wp, npos, r1, c1, wide, unit) for x [N, C, H, W], w [F, C/g, KH, KW], y [N, F, OH, OW]."""
    h, wd = xshape[2], xshape[3]
    khs, kws = wshape[2], wshape[3]
    oh, ow = yshape[2], yshape[3]
    fg = wshape[0] // groups
    hp = (oh - 1) * sh + (khs - 1) * dh + 1
    wp = (ow - 1) * sw + (kws - 1) * dw + 1
    wide = sh == 1 and sw == 1 and (kws - 1) * dw * (fg + 2) <= WIDE_LIMIT
    unit = sh == 1 and sw == 1 and dh == 1 and dw == 1
    npos = oh * wp if wide else oh * ow
    r1 = min(h, hp - pt)  # input rows / columns some window reads
    c1 = min(wd, wp - pl)
    return hp, wp, npos, r1, c1, wide, unit


@cpu_helper
def _pad_sample(x, n, xp, pt, pl, r1, c1):
    """Copy sample n of x into the interior of the zero-bordered scratch image xp."""
    for c in range(x.shape[1]):
        for ih in range(r1):
            src = x[n, c, ih, 0:c1]
            dst = xp[c, ih + pt, pl:pl + c1]
            for j in range(c1):
                dst[j] = src[j]


@cpu_helper
def _im2col(xp, cols, c0, khs, kws, oh, ow, sh, sw, dh, dw, wide, unit):
    """Unfold channels c0.. of the padded image into cols, one row per tap (c, kh, kw).
    `_col2im_add` is its adjoint, a deliberate parallel loop for loop: keep them in step."""
    wp = xp.shape[2]
    npos = cols.shape[1]
    xpf = xp.reshape((xp.shape[0], xp.shape[1] * wp))
    for c in range(cols.shape[0] // (khs * kws)):
        xc = xp[c0 + c]
        xcf = xpf[c0 + c]
        for kh in range(khs):
            for kw in range(kws):
                crow = cols[(c * khs + kh) * kws + kw]
                if wide:
                    s = kh * dh * wp + kw * dw
                    src = xcf[s:s + npos]
                    for q in range(npos):
                        crow[q] = src[q]
                elif unit:  # plain indices: LLVM drops Numba's negative-index checks
                    for i in range(oh):
                        src = xc[i + kh, kw:kw + ow]
                        dst = crow[i * ow:(i + 1) * ow]
                        for j in range(ow):
                            dst[j] = src[j]
                elif sw == 1:
                    for i in range(oh):
                        src = xc[i * sh + kh * dh, kw * dw:kw * dw + ow]
                        dst = crow[i * ow:(i + 1) * ow]
                        for j in range(ow):
                            dst[j] = src[j]
                else:
                    for i in range(oh):
                        srow = xc[i * sh + kh * dh]
                        dst = crow[i * ow:(i + 1) * ow]
                        for j in range(ow):
                            dst[j] = srow[j * sw + kw * dw]


@cpu_helper
def _col2im_add(cols, gxp, c0, khs, kws, oh, ow, sh, sw, dh, dw, wide, unit):
    """The adjoint of `_im2col` (a deliberate parallel, loop for loop): add each tap's row
    of cols back into the padded image."""
    wp = gxp.shape[2]
    npos = cols.shape[1]
    gxpf = gxp.reshape((gxp.shape[0], gxp.shape[1] * wp))
    for c in range(cols.shape[0] // (khs * kws)):
        gc = gxp[c0 + c]
        gcf = gxpf[c0 + c]
        for kh in range(khs):
            for kw in range(kws):
                crow = cols[(c * khs + kh) * kws + kw]
                if wide:
                    s = kh * dh * wp + kw * dw
                    dst = gcf[s:s + npos]
                    for q in range(npos):
                        dst[q] += crow[q]
                elif unit:
                    for i in range(oh):
                        src = crow[i * ow:(i + 1) * ow]
                        dst = gc[i + kh, kw:kw + ow]
                        for j in range(ow):
                            dst[j] += src[j]
                elif sw == 1:
                    for i in range(oh):
                        src = crow[i * ow:(i + 1) * ow]
                        dst = gc[i * sh + kh * dh, kw * dw:kw * dw + ow]
                        for j in range(ow):
                            dst[j] += src[j]
                else:
                    for i in range(oh):
                        src = crow[i * ow:(i + 1) * ow]
                        drow = gc[i * sh + kh * dh]
                        for j in range(ow):
                            drow[j * sw + kw * dw] += src[j]


@cpu_helper
def _fwd_block(x, w, b, out, n0, n1, sh, sw, pt, pl, dh, dw, groups, has_bias):
    """Samples n0..n1 of the forward pass, with this block's own scratch."""
    # the block helpers' common prologue (deliberate parallel of _bwd_input_block's and
    # _bwd_weight_block's): each names the sizes it uses; `_geometry` derives the rest
    n_ch = x.shape[1]
    nf, cg, khs, kws = w.shape
    oh, ow = out.shape[2], out.shape[3]
    fg = nf // groups
    nk = cg * khs * kws
    hp, wp, npos, r1, c1, wide, unit = _geometry(
        x.shape, w.shape, out.shape, sh, sw, pt, pl, dh, dw, groups
    )
    xp = np.zeros((n_ch, hp + 1, wp), x.dtype)  # +1 row: the wide tail
    cols = np.empty((nk, npos), x.dtype)
    tmp = np.empty((fg if wide else 1, npos), x.dtype)  # the wide GEMM's output
    w2 = w.reshape((nf, nk))
    out3 = out.reshape((out.shape[0], nf, oh * ow))
    zero = out.dtype.type(0)
    for n in range(n0, n1):
        _pad_sample(x, n, xp, pt, pl, r1, c1)
        for g in range(groups):
            _im2col(xp, cols, g * cg, khs, kws, oh, ow, sh, sw, dh, dw, wide, unit)
            wg = w2[g * fg:(g + 1) * fg]
            if wide:
                np.dot(wg, cols, tmp)
                for f in range(fg):
                    bv = b[g * fg + f] if has_bias else zero
                    for i in range(oh):
                        src = tmp[f, i * wp:i * wp + ow]
                        dst = out[n, g * fg + f, i]
                        for j in range(ow):
                            dst[j] = src[j] + bv
            else:
                og = out3[n][g * fg:(g + 1) * fg]
                np.dot(wg, cols, og)
                if has_bias:
                    for f in range(fg):
                        bv = b[g * fg + f]
                        row = og[f]
                        for j in range(oh * ow):
                            row[j] += bv


@cpu_kernel(parallel=True)
def conv2d_fwd(x, w, b, out, sh, sw, pt, pl, dh, dw, groups, has_bias):
    """out = conv2d(x, w) (+ b): per sample and group, im2col then BLAS (np.dot)."""
    n_img = x.shape[0]
    if n_img == 1:  # one sample (inference): no thread hand-off at all
        # samples n_img - 1 .. n_img, not the literals 0, 1: Numba compiles a callee once
        # more for literal arguments (a second _fwd_block, ~1 s of a cold start)
        _fwd_block(x, w, b, out, n_img - 1, n_img, sh, sw, pt, pl, dh, dw, groups, has_bias)
        return
    nblk = min(PAR_BLOCKS, n_img)
    for t in prange(nblk):
        _fwd_block(x, w, b, out, n_img * t // nblk, n_img * (t + 1) // nblk,
                   sh, sw, pt, pl, dh, dw, groups, has_bias)


@cpu_helper
def _bwd_weight_block(x, gy, gw, acc, n0, n1, sh, sw, pt, pl, dh, dw, groups):
    """Samples n0..n1's share of the weight gradient, added into acc: gw.T per group
    [groups, nk, fg] with 16 or more filters per group, else [1, nf, nk] (gw)."""
    # deliberate parallel of _fwd_block's prologue (see there)
    n_ch = x.shape[1]
    nf, cg, khs, kws = gw.shape
    oh, ow = gy.shape[2], gy.shape[3]
    fg = nf // groups
    nk = cg * khs * kws
    hp, wp, npos, r1, c1, wide, unit = _geometry(
        x.shape, gw.shape, gy.shape, sh, sw, pt, pl, dh, dw, groups
    )
    trans = fg >= 16
    step = wp if wide else ow  # row length of the output grid
    xp = np.zeros((n_ch, hp + 1, wp), x.dtype)  # +1 row: the wide tail
    cols = np.empty((nk, npos), x.dtype)
    # one sample's gy of a group on the output grid (wide: the extra columns stay zero, so
    # they add nothing), transposed [positions, filters] when `trans`
    gyt = np.zeros((npos, fg) if trans else (1, 1), x.dtype)
    gyw = np.zeros((1, 1) if trans else (fg, npos), x.dtype)
    part = np.empty((nk, fg) if trans else (fg, nk), x.dtype)  # one sample's share
    for n in range(n0, n1):
        _pad_sample(x, n, xp, pt, pl, r1, c1)
        for g in range(groups):
            _im2col(xp, cols, g * cg, khs, kws, oh, ow, sh, sw, dh, dw, wide, unit)
            if trans:
                for f in range(fg):
                    gf = gy[n, g * fg + f]
                    for i in range(oh):
                        src = gf[i]
                        for j in range(ow):
                            gyt[i * step + j, f] = src[j]
                np.dot(cols, gyt, part)
                ag = acc[g]
                for k in range(nk):
                    dst = ag[k]
                    src = part[k]
                    for f in range(fg):
                        dst[f] += src[f]
            else:
                for f in range(fg):
                    gf = gy[n, g * fg + f]
                    for i in range(oh):
                        src = gf[i]
                        dst = gyw[f, i * step:i * step + ow]
                        for j in range(ow):
                            dst[j] = src[j]
                np.dot(gyw, cols.T, part)
                for f in range(fg):
                    dst = acc[0, g * fg + f]
                    src = part[f]
                    for k in range(nk):
                        dst[k] += src[k]


@cpu_kernel(parallel=True)
def conv2d_bwd_weight(x, gy, gw, sh, sw, pt, pl, dh, dw, groups):
    """gw = sum over samples of gy[n] @ im2col(x[n]).T, per group (BLAS via np.dot).

    With 16 or more filters per group it runs transposed, gw.T += cols @ gy[n].T with a
    copied gy[n].T: there BLAS is up to twice as fast with both operands row-major as with
    a column-major cols.T (LeNet conv2: 110 vs 50 GFLOP/s); with fewer filters the direct
    product is as fast or faster (conv1: 100 vs 80). Each block of samples sums into its
    own slice of `acc`; the slices are added in block order.
    """
    n_img = x.shape[0]
    nf, cg, khs, kws = gw.shape
    fg = nf // groups
    nk = cg * khs * kws
    trans = fg >= 16
    # each block holds a copy of gw: fewer blocks (never fewer than 2) for big weights
    nblk = min(PAR_BLOCKS, n_img, max(2, ACC_BUDGET // (nf * nk)))
    acc = np.zeros((max(nblk, 1),) + ((groups, nk, fg) if trans else (1, nf, nk)), x.dtype)
    for t in prange(nblk):
        _bwd_weight_block(x, gy, gw, acc[t], n_img * t // nblk, n_img * (t + 1) // nblk,
                          sh, sw, pt, pl, dh, dw, groups)
    gw2 = gw.reshape((nf, nk))
    for f in range(nf):
        row = gw2[f]
        for k in range(nk):
            row[k] = 0
    for t in range(nblk):
        if trans:
            for g in range(groups):
                for f in range(fg):
                    dst = gw2[g * fg + f]
                    for k in range(nk):
                        dst[k] += acc[t, g, k, f]
        else:
            for f in range(nf):
                dst = gw2[f]
                src = acc[t, 0, f]
                for k in range(nk):
                    dst[k] += src[k]


@cpu_helper
def _bwd_input_block(gy, w, gx, n0, n1, sh, sw, pt, pl, dh, dw, groups):
    """Samples n0..n1 of the input gradient: col2im(W.T @ gy[n]), padding cropped."""
    # deliberate parallel of _fwd_block's prologue (see there)
    n_ch, h, wd = gx.shape[1], gx.shape[2], gx.shape[3]
    nf, cg, khs, kws = w.shape
    oh, ow = gy.shape[2], gy.shape[3]
    fg = nf // groups
    nk = cg * khs * kws
    hp, wp, npos, r1, c1, wide, unit = _geometry(
        gx.shape, w.shape, gy.shape, sh, sw, pt, pl, dh, dw, groups
    )
    gxp = np.empty((n_ch, hp + 1, wp), gx.dtype)  # +1 row: the wide tail
    gxpf = gxp.reshape((n_ch, (hp + 1) * wp))
    cols = np.empty((nk, npos), gx.dtype)
    gyw = np.zeros((nf if wide else 1, npos), gx.dtype)  # wide gy, extra columns zero
    w2 = w.reshape((nf, nk))
    gy3 = gy.reshape((gy.shape[0], nf, oh * ow))
    for n in range(n0, n1):
        for c in range(n_ch):
            row = gxpf[c]
            for j in range((hp + 1) * wp):
                row[j] = 0
        if wide:
            for f in range(nf):
                for i in range(oh):
                    src = gy[n, f, i]
                    dst = gyw[f, i * wp:i * wp + ow]
                    for j in range(ow):
                        dst[j] = src[j]
        for g in range(groups):
            wg = w2[g * fg:(g + 1) * fg].T
            if wide:
                np.dot(wg, gyw[g * fg:(g + 1) * fg], cols)
            else:
                np.dot(wg, gy3[n][g * fg:(g + 1) * fg], cols)
            _col2im_add(cols, gxp, g * cg, khs, kws, oh, ow, sh, sw, dh, dw, wide, unit)
        for c in range(n_ch):
            for ih in range(h):
                dst = gx[n, c, ih]
                if ih < r1:
                    src = gxp[c, ih + pt, pl:pl + c1]
                    for j in range(c1):
                        dst[j] = src[j]
                    for j in range(max(c1, 0), wd):  # c1 < 0: no column is read
                        dst[j] = 0
                else:
                    for j in range(wd):
                        dst[j] = 0


@cpu_kernel(parallel=True)
def conv2d_bwd_input(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    """gx = col2im(W.T @ gy[n]) per sample and group (BLAS via np.dot), padding cropped."""
    n_img = gx.shape[0]
    nblk = min(PAR_BLOCKS, n_img)
    for t in prange(nblk):
        _bwd_input_block(gy, w, gx, n_img * t // nblk, n_img * (t + 1) // nblk,
                         sh, sw, pt, pl, dh, dw, groups)


# ----------------------------------------------------------------------- vector kernels
# The forward pass in float32 with stride 1, dilation 1 and one group (LeNet's
# convolutions and most others) is a direct convolution on register-blocked vector tiles
# (`vector_tile`, lowered to LLVM vectors by the CPU backend): no im2col matrix, no BLAS.
# For each sample, the output over the padded width ("wide" positions q = oh * Wp + ow, as
# above) in vectors of LANES positions; a tile holds up to 16 filters' vectors and runs over
# the taps (c, kh, kw): one vector load of the padded image at q + offset(tap), one
# broadcast weight and one fused multiply-add per filter. The wide rows are copied out with
# the bias added. Measured against im2col + BLAS (2026-12-07, quiet machine, best of
# alternated blocks, 2 threads): LeNet conv1 81 -> 92 GFLOP/s, conv2 77 -> 132, 32->64 3x3
# 162 -> 200 (one thread 1.19-1.70x).
# The weight gradient in the same case runs on outer tiles (`outer_tile`): per sample, the
# lane-wise products of 4 filters' wide gy rows with the padded image at 4 taps' offsets,
# summed over the vectors of positions into partial sums that the kernel adds up at the
# end (blocks, then lanes, in order). Measured as above: LeNet conv1 76 -> 100 GFLOP/s,
# conv2 69 -> 89, 32->64 3x3 114 -> 140 (one thread 1.22-1.38x). The input gradient stays
# im2col + BLAS: the forward tiles over gy (the flipped weights as rows) measured 0.55-0.8x
# of it.

LANES = 16
tile_16x16 = vector_tile(LANES, 16)
tile_16x8 = vector_tile(LANES, 8)
tile_16x4 = vector_tile(LANES, 4)


@cpu_helper
def _tile_rows(a, a_rstride, b, boff, nt, out, q0, ostride, rows):
    """The vector of positions q0..q0 + LANES for `rows` (a multiple of 4, `_padded_rows`)
    rows: row r of A at r * a_rstride, B at q0 + boff[t], out row r at r * ostride + q0;
    tiles of 16, 8 and 4 rows."""
    r = 0
    while r < rows:
        left = rows - r
        if left >= 16:
            tile_16x16(a, r * a_rstride, a_rstride, b, q0, boff, nt, out, r * ostride + q0,
                       ostride)
            r += 16
        elif left >= 8:
            tile_16x8(a, r * a_rstride, a_rstride, b, q0, boff, nt, out, r * ostride + q0,
                      ostride)
            r += 8
        else:
            tile_16x4(a, r * a_rstride, a_rstride, b, q0, boff, nt, out, r * ostride + q0,
                      ostride)
            r += 4


@cpu_helper
def _padded_rows(rows):
    """Tile rows for `rows` filters: one tile's worth (4, 8, 16) up to 16, else a multiple of
    4, with zero rows (6 filters: one tile of 8 streams the image once, where 4 + 2 would
    stream it twice)."""
    if rows > 16:
        return (rows + 3) // 4 * 4
    return 4 if rows <= 4 else (8 if rows <= 8 else 16)


@cpu_helper
def _tap_offsets(n_ch, khs, kws, plane, wp):
    """Offsets of the taps (c, kh, kw) in a flat [C, Hp, Wp] image (plane = Hp * Wp)."""
    offs = np.empty(n_ch * khs * kws, np.int64)
    for c in range(n_ch):
        for kh in range(khs):
            for kw in range(kws):
                offs[(c * khs + kh) * kws + kw] = c * plane + kh * wp + kw
    return offs


@cpu_helper
def _vfwd_block(x, w, b, out, n0, n1, pt, pl, has_bias, relu):
    """Samples n0..n1 of the vector forward pass, with this block's own scratch; with
    ``relu``, relu applied as the rows are copied out (a fused epilogue)."""
    n_ch, h, wd = x.shape[1], x.shape[2], x.shape[3]
    nf, _, khs, kws = w.shape
    oh, ow = out.shape[2], out.shape[3]
    ntap = n_ch * khs * kws
    hp, wp = oh + khs - 1, ow + kws - 1  # the padded rows and columns the windows read
    plane = hp * wp
    r1, c1 = min(h, hp - pt), min(wd, wp - pl)
    nvec = (oh * wp + LANES - 1) // LANES
    ostride = nvec * LANES
    boff = _tap_offsets(n_ch, khs, kws, plane, wp)
    # the padded image, flat, with a zero tail for the last vector's overhang
    xp = np.zeros(n_ch * plane + kws + 2 * LANES, x.dtype)
    rows = _padded_rows(nf)
    owide = np.empty(rows * ostride, x.dtype)
    wf = np.zeros(rows * ntap, x.dtype)  # the weights, zero rows to a whole tile
    wflat = w.reshape(nf * ntap)
    for k in range(nf * ntap):  # a loop: Numba's slice assignment compiles its error text (2 s)
        wf[k] = wflat[k]
    zero = out.dtype.type(0)
    xp3 = xp[:n_ch * plane].reshape((n_ch, hp, wp))
    for n in range(n0, n1):
        _pad_sample(x, n, xp3, pt, pl, r1, c1)
        for q0 in range(0, ostride, LANES):
            _tile_rows(wf, ntap, xp, boff, ntap, owide, q0, ostride, rows)
        for f in range(nf):
            bv = b[f] if has_bias else zero
            for i in range(oh):
                src = owide[f * ostride + i * wp:f * ostride + i * wp + ow]
                dst = out[n, f, i]
                if relu:  # graphdl's relu: x if x > 0 else x * 0 (NaN stays NaN)
                    for j in range(ow):
                        v = src[j] + bv
                        dst[j] = v if v > zero else v * zero
                else:
                    for j in range(ow):
                        dst[j] = src[j] + bv


@cpu_kernel(parallel=True)
def conv2d_fwd_vec(x, w, b, out, pt, pl, has_bias, relu):
    """out = conv2d(x, w) (+ b), float32, stride 1, dilation 1, one group: vector tiles;
    with ``relu``, relu(out) (a fused epilogue the kernel applies)."""
    n_img = x.shape[0]
    if n_img == 1:  # one sample: no thread hand-off (run-time bounds, see conv2d_fwd)
        _vfwd_block(x, w, b, out, n_img - 1, n_img, pt, pl, has_bias, relu)
        return
    nblk = min(PAR_BLOCKS, n_img)
    for t in prange(nblk):
        _vfwd_block(x, w, b, out, n_img * t // nblk, n_img * (t + 1) // nblk, pt, pl,
                    has_bias, relu)


outer_16x4x4 = outer_tile(LANES, 4, 4)
# the weight gradient's blocks of samples: a fixed number (results independent of the
# thread count), few enough that their partial sums (filters x taps x LANES each) stay small
WGRAD_BLOCKS = 4


@cpu_helper
def _vbwd_weight_block(x, gy, part, n0, n1, pt, pl, khs, kws):
    """Samples n0..n1's share of the weight gradient as lane-wise partial sums, added into
    part [(filter group, tap group), 4, 4, LANES]: per sample, one outer tile per 4 filters
    x 4 taps over the vectors of its wide gy rows and padded image (both stay in L1)."""
    n_ch, h, wd = x.shape[1], x.shape[2], x.shape[3]
    nf, oh, ow = gy.shape[1], gy.shape[2], gy.shape[3]
    hp, wp = oh + khs - 1, ow + kws - 1
    plane = hp * wp
    r1, c1 = min(h, hp - pt), min(wd, wp - pl)
    nvec = (oh * wp + LANES - 1) // LANES
    glen = nvec * LANES  # a wide gy row, zero beyond each output row's OW values
    fpad = (nf + 3) // 4 * 4
    ntap = n_ch * khs * kws
    tpad = (ntap + 3) // 4 * 4
    ntg = tpad // 4
    xp = np.zeros(n_ch * plane + kws + 2 * LANES, x.dtype)
    gyw = np.zeros(fpad * glen, x.dtype)
    boff = np.zeros(tpad, np.int64)  # taps past the last read offset 0 (discarded)
    taps = _tap_offsets(n_ch, khs, kws, plane, wp)
    for k in range(ntap):  # a loop: Numba's slice assignment compiles its error text (2 s)
        boff[k] = taps[k]
    xp3 = xp[:n_ch * plane].reshape((n_ch, hp, wp))
    for n in range(n0, n1):
        _pad_sample(x, n, xp3, pt, pl, r1, c1)
        for f in range(nf):
            for i in range(oh):
                at = f * glen + i * wp
                src = gy[n, f, i]
                dst = gyw[at:at + ow]
                for j in range(ow):
                    dst[j] = src[j]
        for f0 in range(0, fpad, 4):
            for t0 in range(0, tpad, 4):
                outer_16x4x4(gyw, f0 * glen, glen, xp, 0, boff[t0:t0 + 4], nvec, part,
                             ((f0 // 4) * ntg + t0 // 4) * 16 * LANES)


@cpu_kernel(parallel=True)
def conv2d_bwd_weight_vec(x, gy, gw, pt, pl):
    """gw = conv2d's weight gradient, float32, stride 1, dilation 1, one group: outer
    tiles over the wide positions; each of WGRAD_BLOCKS blocks of samples keeps its own
    lane-wise partial sums, added in block and lane order (the same bits on any number of
    threads)."""
    n_img = x.shape[0]
    nf, n_ch, khs, kws = gw.shape
    ntap = n_ch * khs * kws
    fpad = (nf + 3) // 4 * 4
    tpad = (ntap + 3) // 4 * 4
    size = fpad * tpad * LANES
    nblk = max(1, min(WGRAD_BLOCKS, n_img))
    part = np.zeros((nblk, size), x.dtype)
    for t in prange(nblk):
        _vbwd_weight_block(x, gy, part[t], n_img * t // nblk, n_img * (t + 1) // nblk, pt, pl,
                           khs, kws)
    total = part[0]
    for t in range(1, nblk):  # the blocks in order, vector adds
        src = part[t]
        for k in range(size):
            total[k] += src[k]
    gw2 = gw.reshape((nf, ntap))
    ntg = tpad // 4
    for f in range(nf):
        for k in range(ntap):
            at = (((f // 4) * ntg + k // 4) * 16 + (f % 4) * 4 + k % 4) * LANES
            acc = total[at]
            for lane in range(1, LANES):
                acc += total[at + lane]
            gw2[f, k] = acc


# ----------------------------------------------------------------------- emitters


def _args(ctx, attrs) -> str:
    (sh, sw), (pt, _, pl, _), (dh, dw), groups = conv_params(attrs)
    return ctx.runtime(sh, sw, pt, pl, dh, dw, groups)


def _vector_case(ctx, attrs, x) -> bool:
    """float32, stride 1, dilation 1, one group: the vector kernels."""
    (sh, sw), _, (dh, dw), groups = conv_params(attrs)
    return ctx.type(x).dtype == "float32" and (sh, sw, dh, dw, groups) == (1, 1, 1, 1, 1)


def _vector_args(ctx, attrs) -> str:
    _, (pt, _, pl, _), _, _ = conv_params(attrs)
    return ctx.runtime(pt, pl)


def _emit_conv2d(ctx, attrs, ins, outs, relu: bool = False):
    x, w = ctx.var(ins[0]), ctx.var(ins[1])
    has_bias = len(ins) == 3
    if has_bias:
        b = ctx.var(ins[2])
    else:  # the kernel reads no bias: any 1-D array of the dtype will do
        b = f"{w}.reshape(({math.prod(ctx.type(ins[1]).shape)},))"
    if _vector_case(ctx, attrs, ins[0]):
        return [ctx.call("conv2d_fwd_vec", x, w, b, outs[0], _vector_args(ctx, attrs),
                         ctx.runtime(has_bias), ctx.runtime(relu))]
    return [
        ctx.call("conv2d_fwd", x, w, b, outs[0], _args(ctx, attrs), ctx.runtime(has_bias))
    ]


def _emit_conv2d_epilogue(ctx, attrs, ins, outs, rest):
    """conv2d + relu as one vector-kernel call that applies relu as it writes its rows (in
    the kernel's threads: the group's loop ran on the calling thread alone, and the pool's
    threads went to sleep while it did); other epilogues keep their loop."""
    relu_only = (len(rest) == 1 and rest[0]["op"] == "relu"
                 and [list(r) for r in rest[0]["inputs"]] == [["member", 0, 0]])
    if relu_only and _vector_case(ctx, attrs, ins[0]):
        return _emit_conv2d(ctx, attrs, ins, outs, relu=True)
    return None


def _emit_backward(kernel: str, vector: str | None = None):
    """Emitter of a backward kernel ``kernel(in0, in1, out, geometry...)``; with
    ``vector``, that kernel ``vector(in0, in1, out, pt, pl)`` where `_vector_case` holds."""

    def emit(ctx, attrs, ins, outs):
        if vector is not None and _vector_case(ctx, attrs, ins[0]):
            return [ctx.call(vector, ins[0], ins[1], outs[0], _vector_args(ctx, attrs))]
        return [ctx.call(kernel, ins[0], ins[1], outs[0], _args(ctx, attrs))]

    return emit


# ----------------------------------------------------------------------- registration


def _conv_attr_defs() -> dict:
    return {
        "stride": Attr(tuple, (1, 1)),
        "padding": Attr(tuple, (0, 0, 0, 0)),
        "dilation": Attr(tuple, (1, 1)),
        "groups": Attr(int, 1),
    }


register(
    OpDef(
        name="conv2d",
        cost=_conv_cost("conv2d"),
        inputs=("x", "w", "b"),
        variadic=True,  # b is optional: conv2d(x, w) or conv2d(x, w, b)
        infer=_infer_conv2d,
        reference=_ref_conv2d,
        pattern=Pattern.OUT_FUSABLE,
        attrs=_conv_attr_defs(),
        grad=_g_conv2d,
        emit_cpu=_emit_conv2d,
        emit_cpu_epilogue=_emit_conv2d_epilogue,
        doc="2-D convolution of [N, C, H, W] by [F, C/groups, KH, KW] (+ bias [F]); "
        "stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw), groups",
    )
)

register(
    OpDef(
        name="conv2d_grad_input",
        cost=_conv_cost("conv2d_grad_input"),
        inputs=("gy", "w"),
        infer=_infer_grad_input,
        reference=_ref_grad_input,
        pattern=Pattern.OUT_FUSABLE,
        attrs={**_conv_attr_defs(), "input_size": Attr(tuple)},
        grad=_g_grad_input,
        emit_cpu=_emit_backward("conv2d_bwd_input"),
        doc="gradient of conv2d with respect to its input (a transposed convolution of gy)",
    )
)

register(
    OpDef(
        name="conv2d_grad_weight",
        cost=_conv_cost("conv2d_grad_weight"),
        inputs=("x", "gy"),
        infer=_infer_grad_weight,
        reference=_ref_grad_weight,
        pattern=Pattern.OUT_FUSABLE,
        attrs={**_conv_attr_defs(), "kernel_size": Attr(tuple)},
        grad=_g_grad_weight,
        emit_cpu=_emit_backward("conv2d_bwd_weight", "conv2d_bwd_weight_vec"),
        doc="gradient of conv2d with respect to its weight (x correlated with gy)",
    )
)

"""Tiles: the register-blocked multiply-add loops kernels call as `VectorTile`s and
`OuterTile`s (graphdl.ops.registry, where each is defined in plain Python), lowered here to
LLVM IR with explicit vectors.

Numba leaves such a loop scalar: written in Python its accumulators are array elements
(memory), and with constant trip counts LLVM unrolls the lanes before Numba's pipeline
(which runs no SLP vectorizer) could pack them; measured on LeNet's second convolution,
direct loops ran at ~11 GFLOP/s on one core against ~35 for im2col + BLAS. Here the
accumulators are ``<lanes x float>`` values held in registers across the loop (allocas
that LLVM's mem2reg promotes) and every step issues one ``llvm.fma`` per accumulator:

- vector tile: ``rows`` accumulators; a step loads one vector of B (at an offset from a
  table) and broadcasts one scalar of A per row;
- outer tile: ``arows x brows`` accumulators; a step loads ``arows`` vectors of A and
  ``brows`` of B and multiplies every pair lane by lane;
- vector copy: one vector load and one store.

No bounds are checked: the kernels size their buffers.
"""

from __future__ import annotations

from functools import cache

from graphdl.ops.registry import MaxPoolTile, OuterTile, VectorCopy, VectorTile


def lower(tile: VectorTile | OuterTile | VectorCopy | MaxPoolTile):
    """The Numba intrinsic of a `VectorTile`, `OuterTile`, `VectorCopy` or `MaxPoolTile`
    (one per configuration)."""
    if isinstance(tile, VectorTile):
        return _lower_vector(*tile.config)
    if isinstance(tile, OuterTile):
        return _lower_outer(*tile.config)
    if isinstance(tile, VectorCopy):
        return _lower_copy(*tile.config)
    if isinstance(tile, MaxPoolTile):
        return _lower_max_pool(*tile.config)
    raise TypeError(f"not a tile: {tile!r}")


class _Lowering:
    """What both tiles' code generation needs: float32 (``f64``: float64) vectors of
    ``lanes``, pointers into the arrays' data and the fused multiply-add."""

    def __init__(self, context, builder, lanes: int, f64: bool = False):
        from llvmlite import ir
        from numba.core import cgutils

        self.ir, self.cgutils, self.context, self.builder = ir, cgutils, context, builder
        self.i64 = ir.IntType(64)
        self.vt = ir.VectorType(ir.DoubleType() if f64 else ir.FloatType(), lanes)
        self.fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.vt, [self.vt] * 3),
            f"llvm.fma.v{lanes}{'f64' if f64 else 'f32'}")

    def data(self, ty, value):
        return self.context.make_array(ty)(self.context, self.builder, value).data

    def const(self, n: int):
        return self.ir.Constant(self.i64, n)

    def vector_at(self, data, index):
        """A pointer to the vector that starts at element ``index``."""
        return self.builder.bitcast(self.builder.gep(data, [index]), self.vt.as_pointer())

    def load_vector(self, data, index):
        return self.builder.load(self.vector_at(data, index), align=4)

    def accumulator(self, init):
        return self.cgutils.alloca_once_value(self.builder, init)

    def fma_into(self, acc, x, y):
        b = self.builder
        b.store(b.call(self.fma, [x, y, b.load(acc)]), acc)


def _float32_arrays(*arrays) -> bool:
    from numba import types

    return all(isinstance(x, types.Array) and x.dtype == types.float32 for x in arrays)


@cache
def _lower_vector(lanes: int, rows: int):
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def tile(typingctx, a, abase, a_rstride, b, bbase, boff, nt, out, ooff, ostride):
        if not _float_arrays(a, b, out):
            return None
        i = types.int64
        sig = types.void(a, i, i, b, i, boff, i, out, i, i)

        def codegen(context, builder, signature, args):
            a_, abase_, ars_, b_, bbase_, boff_, nt_, out_, ooff_, ostr_ = args
            st = signature.args
            low = _Lowering(context, builder, lanes, st[0].dtype == types.float64)
            a_data, b_data = low.data(st[0], a_), low.data(st[3], b_)
            boff_data, out_data = low.data(st[5], boff_), low.data(st[7], out_)
            zero = low.ir.Constant(low.vt, [0.0] * lanes)
            accs = [low.accumulator(zero) for _ in range(rows)]
            a_rows = [builder.add(abase_, builder.mul(ars_, low.const(j))) for j in range(rows)]
            lane_ty = low.ir.IntType(32)
            undef = low.ir.Constant(low.vt, low.ir.Undefined)
            splat = low.ir.Constant(low.ir.VectorType(lane_ty, lanes), [0] * lanes)
            with low.cgutils.for_range(builder, nt_) as loop:
                t = loop.index
                ib = builder.add(bbase_, builder.load(builder.gep(boff_data, [t])))
                bv = low.load_vector(b_data, ib)
                for j in range(rows):
                    x = builder.load(builder.gep(a_data, [builder.add(a_rows[j], t)]), align=4)
                    xv = builder.shuffle_vector(
                        builder.insert_element(undef, x, low.ir.Constant(lane_ty, 0)), undef,
                        splat)
                    low.fma_into(accs[j], xv, bv)
            for j in range(rows):
                at = builder.add(ooff_, builder.mul(ostr_, low.const(j)))
                builder.store(builder.load(accs[j]), low.vector_at(out_data, at), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


@cache
def _lower_outer(lanes: int, arows: int, brows: int):
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def outer(typingctx, a, abase, a_rstride, b, bbase, boff, nt, out, ooff):
        if not _float32_arrays(a, b, out):
            return None
        i = types.int64
        sig = types.void(a, i, i, b, i, boff, i, out, i)

        def codegen(context, builder, signature, args):
            a_, abase_, ars_, b_, bbase_, boff_, nt_, out_, ooff_ = args
            st = signature.args
            low = _Lowering(context, builder, lanes, st[0].dtype == types.float64)
            a_data, b_data = low.data(st[0], a_), low.data(st[3], b_)
            boff_data, out_data = low.data(st[5], boff_), low.data(st[7], out_)

            def out_at(i, j):
                return builder.add(ooff_, low.const((i * brows + j) * lanes))

            accs = [[low.accumulator(low.load_vector(out_data, out_at(i, j)))
                     for j in range(brows)] for i in range(arows)]
            a_rows = [builder.add(abase_, builder.mul(ars_, low.const(i))) for i in range(arows)]
            b_rows = [builder.add(bbase_, builder.load(builder.gep(boff_data, [low.const(j)])))
                      for j in range(brows)]
            with low.cgutils.for_range(builder, nt_) as loop:
                step = builder.mul(loop.index, low.const(lanes))
                av = [low.load_vector(a_data, builder.add(r, step)) for r in a_rows]
                bv = [low.load_vector(b_data, builder.add(r, step)) for r in b_rows]
                for i in range(arows):
                    for j in range(brows):
                        low.fma_into(accs[i][j], av[i], bv[j])
            for i in range(arows):
                for j in range(brows):
                    builder.store(builder.load(accs[i][j]),
                                  low.vector_at(out_data, out_at(i, j)), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return outer


@cache
def _lower_copy(lanes: int):
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def copy(typingctx, src, soff, dst, doff):
        if not _float32_arrays(src, dst):
            return None
        i = types.int64
        sig = types.void(src, i, dst, i)

        def codegen(context, builder, signature, args):
            src_, soff_, dst_, doff_ = args
            st = signature.args
            low = _Lowering(context, builder, lanes)
            v = low.load_vector(low.data(st[0], src_), soff_)
            builder.store(v, low.vector_at(low.data(st[2], dst_), doff_), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return copy


def _float_arrays(*arrays) -> bool:
    """Arrays of one float dtype, float32 or float64."""
    from numba import types

    return (all(isinstance(x, types.Array) for x in arrays)
            and len({x.dtype for x in arrays}) == 1
            and arrays[0].dtype in (types.float32, types.float64))


@cache
def _lower_max_pool(lanes: int, grad: bool):
    """`MaxPoolTile`: the two rows of ``lanes`` windows as vectors of 2 * lanes, split into
    the windows' four cells by shuffles, the argmax as vector compares and selects, and (the
    gradient) the four cells' values interleaved back into two rows."""
    from numba import types
    from numba.extending import intrinsic

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        st = signature.args
        f64 = st[0].dtype == types.float64
        elem = ir.DoubleType() if f64 else ir.FloatType()
        align = 8 if f64 else 4
        vt, wt = ir.VectorType(elem, lanes), ir.VectorType(elem, 2 * lanes)
        i32 = ir.IntType(32)

        def data(k):
            return context.make_array(st[k])(context, builder, args[k]).data

        def ptr(base, index, ty):
            return builder.bitcast(builder.gep(base, [index]), ty.as_pointer())

        def pick(v, idx):
            return builder.shuffle_vector(v, ir.Constant(wt, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, lanes), idx))

        def wins(v, m):  # v > m, or v the first NaN
            return builder.or_(builder.fcmp_ordered(">", v, m),
                               builder.and_(builder.fcmp_unordered("uno", v, v),
                                            builder.fcmp_ordered("ord", m, m)))

        x, xoff, w = data(0), args[1], args[2]
        top = builder.load(ptr(x, xoff, wt), align=align)
        bottom = builder.load(ptr(x, builder.add(xoff, w), wt), align=align)
        even, odd = list(range(0, 2 * lanes, 2)), list(range(1, 2 * lanes, 2))
        a, b, c, d = pick(top, even), pick(top, odd), pick(bottom, even), pick(bottom, odd)
        t1 = wins(b, a)
        m = builder.select(t1, b, a)
        t2 = wins(c, m)
        m = builder.select(t2, c, m)
        t3 = wins(d, m)
        m = builder.select(t3, d, m)
        if not grad:
            builder.store(m, ptr(data(3), args[4], vt), align=align)
            return context.get_dummy_value()
        zero = ir.Constant(vt, [0.0] * lanes)
        g = builder.load(ptr(data(3), args[4], vt), align=align)
        positive = builder.icmp_unsigned("!=", args[6], ir.Constant(args[6].type, 0))
        relu = builder.select(builder.fcmp_ordered(">", m, zero), g, builder.fmul(g, zero))
        g = builder.select(positive, relu, g)
        n2, n3 = builder.not_(t2), builder.not_(t3)
        cells = [builder.select(builder.or_(t1, builder.or_(t2, t3)), zero, g),
                 builder.select(builder.and_(t1, builder.and_(n2, n3)), g, zero),
                 builder.select(builder.and_(t2, n3), g, zero),
                 builder.select(t3, g, zero)]
        weave = ir.Constant(ir.VectorType(i32, 2 * lanes),
                            [j // 2 + (lanes if j % 2 else 0) for j in range(2 * lanes)])
        gx = data(5)
        builder.store(builder.shuffle_vector(cells[0], cells[1], weave), ptr(gx, xoff, wt),
                      align=align)
        builder.store(builder.shuffle_vector(cells[2], cells[3], weave),
                      ptr(gx, builder.add(xoff, w), wt), align=align)
        return context.get_dummy_value()

    i = types.int64
    if grad:
        @intrinsic
        def pool_grad(typingctx, x, xoff, w, gy, goff, gx, positive):
            if not _float_arrays(x, gy, gx):
                return None
            return types.void(x, i, i, gy, i, gx, types.boolean), codegen

        return pool_grad

    @intrinsic
    def pool(typingctx, x, xoff, w, out, ooff):
        if not _float_arrays(x, out):
            return None
        return types.void(x, i, i, out, i), codegen

    return pool

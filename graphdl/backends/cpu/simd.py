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

from graphdl.ops.registry import OuterTile, VectorCopy, VectorTile


def lower(tile: VectorTile | OuterTile | VectorCopy):
    """The Numba intrinsic of a `VectorTile`, `OuterTile` or `VectorCopy` (one per
    configuration)."""
    if isinstance(tile, VectorTile):
        return _lower_vector(*tile.config)
    if isinstance(tile, OuterTile):
        return _lower_outer(*tile.config)
    if isinstance(tile, VectorCopy):
        return _lower_copy(*tile.config)
    raise TypeError(f"not a tile: {tile!r}")


class _Lowering:
    """What both tiles' code generation needs: float32 vectors of ``lanes``, pointers into
    the arrays' data and the fused multiply-add."""

    def __init__(self, context, builder, lanes: int):
        from llvmlite import ir
        from numba.core import cgutils

        self.ir, self.cgutils, self.context, self.builder = ir, cgutils, context, builder
        self.i64 = ir.IntType(64)
        self.vt = ir.VectorType(ir.FloatType(), lanes)
        self.fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.vt, [self.vt] * 3), f"llvm.fma.v{lanes}f32")

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
        if not _float32_arrays(a, b, out):
            return None
        i = types.int64
        sig = types.void(a, i, i, b, i, boff, i, out, i, i)

        def codegen(context, builder, signature, args):
            a_, abase_, ars_, b_, bbase_, boff_, nt_, out_, ooff_, ostr_ = args
            st = signature.args
            low = _Lowering(context, builder, lanes)
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
            low = _Lowering(context, builder, lanes)
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

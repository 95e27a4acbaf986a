"""Vector tiles: the register-blocked multiply-add loop kernels call as `VectorTile`s
(graphdl.ops.registry), lowered here to LLVM IR with explicit vectors.

Numba leaves such a loop scalar: written in Python its accumulators are array elements
(memory), and with constant trip counts LLVM unrolls the lanes before Numba's pipeline
(which runs no SLP vectorizer) could pack them; measured on LeNet's second convolution,
direct loops ran at ~11 GFLOP/s on one core against ~35 for im2col + BLAS. Here the
``rows`` accumulators are ``<lanes x float>`` values held in registers across the loop
(allocas that LLVM's mem2reg promotes), each step loads one vector of B, broadcasts one
scalar of A per row and issues one fused multiply-add per row:

    acc[j] (+)= sum over t < nt of A[ia(t, j)] * B[ib(t) : ib(t) + lanes]    j < rows
    out[ooff + j * ostride : + lanes] = acc[j]

with ia(t, j) = abase + (aoff[t] if a_table else t * a_tstride) + j * a_jstride and
ib(t) = bbase + (boff[t] if b_table else t * b_tstride); with ``accumulate`` the
accumulators start from ``out``. No bounds are checked: the kernels size their buffers.
"""

from __future__ import annotations

from functools import cache


@cache
def lower_tile(lanes: int, rows: int, a_table: bool, b_table: bool, accumulate: bool):
    """The Numba intrinsic of one `VectorTile` configuration (one per configuration)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def tile(typingctx, a, abase, aoff, a_tstride, a_jstride, b, bbase, boff, b_tstride, nt,
             out, ooff, ostride):
        if not all(isinstance(x, types.Array) and x.dtype == types.float32
                   for x in (a, b, out)):
            return None
        sig = types.void(a, types.int64, aoff, types.int64, types.int64, b, types.int64, boff,
                         types.int64, types.int64, out, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            (a_, abase_, aoff_, ats_, ajs_, b_, bbase_, boff_, bts_, nt_, out_, ooff_,
             ostr_) = args
            st = signature.args
            a_arr = context.make_array(st[0])(context, builder, a_)
            b_arr = context.make_array(st[5])(context, builder, b_)
            o_arr = context.make_array(st[10])(context, builder, out_)
            i64 = ir.IntType(64)
            vt = ir.VectorType(ir.FloatType(), lanes)
            vptr = vt.as_pointer()
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{lanes}f32")
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            undef = ir.Constant(vt, ir.Undefined)
            lane0 = ir.Constant(ir.IntType(32), 0)

            def out_ptr(j):
                at = builder.add(ooff_, builder.mul(ostr_, ir.Constant(i64, j)))
                return builder.bitcast(builder.gep(o_arr.data, [at]), vptr)

            accs = []
            for j in range(rows):
                init = (builder.load(out_ptr(j), align=4) if accumulate
                        else ir.Constant(vt, [0.0] * lanes))
                accs.append(cgutils.alloca_once_value(builder, init))
            if a_table:
                at_arr = context.make_array(st[2])(context, builder, aoff_)
            if b_table:
                bt_arr = context.make_array(st[7])(context, builder, boff_)
            with cgutils.for_range(builder, nt_) as loop:
                t = loop.index
                if b_table:
                    ib = builder.add(bbase_, builder.load(builder.gep(bt_arr.data, [t])))
                else:
                    ib = builder.add(bbase_, builder.mul(t, bts_))
                bv = builder.load(builder.bitcast(builder.gep(b_arr.data, [ib]), vptr), align=4)
                if a_table:
                    ia = builder.add(abase_, builder.load(builder.gep(at_arr.data, [t])))
                else:
                    ia = builder.add(abase_, builder.mul(t, ats_))
                for j in range(rows):
                    idx = builder.add(ia, builder.mul(ajs_, ir.Constant(i64, j)))
                    x = builder.load(builder.gep(a_arr.data, [idx]), align=4)
                    xv = builder.shuffle_vector(builder.insert_element(undef, x, lane0), undef,
                                                splat)
                    builder.store(builder.call(fma, [xv, bv, builder.load(accs[j])]), accs[j])
            for j in range(rows):
                builder.store(builder.load(accs[j]), out_ptr(j), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


@cache
def lower_outer(lanes: int, arows: int, brows: int):
    """The Numba intrinsic of one `OuterTile` configuration (one per configuration)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def outer(typingctx, a, abase, a_rstride, a_toff, b, bbase, boff, b_toff, nt, out, ooff):
        if not all(isinstance(x, types.Array) and x.dtype == types.float32
                   for x in (a, b, out)):
            return None
        sig = types.void(a, types.int64, types.int64, a_toff, b, types.int64, boff, b_toff,
                         types.int64, out, types.int64)

        def codegen(context, builder, signature, args):
            a_, abase_, ars_, atoff_, b_, bbase_, boff_, btoff_, nt_, out_, ooff_ = args
            st = signature.args
            a_arr, at_arr, b_arr, bo_arr, bt_arr, o_arr = (
                context.make_array(st[k])(context, builder, v)
                for k, v in ((0, a_), (3, atoff_), (4, b_), (6, boff_), (7, btoff_), (9, out_)))
            i64 = ir.IntType(64)
            vt = ir.VectorType(ir.FloatType(), lanes)
            vptr = vt.as_pointer()
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{lanes}f32")

            def vec_at(data, index):
                return builder.bitcast(builder.gep(data, [index]), vptr)

            def out_ptr(i, j):
                return vec_at(o_arr.data,
                              builder.add(ooff_, ir.Constant(i64, (i * brows + j) * lanes)))

            accs = [[cgutils.alloca_once_value(builder, builder.load(out_ptr(i, j), align=4))
                     for j in range(brows)] for i in range(arows)]
            a_rows = [builder.add(abase_, builder.mul(ars_, ir.Constant(i64, i)))
                      for i in range(arows)]
            b_rows = [builder.add(bbase_, builder.load(builder.gep(bo_arr.data,
                                                                   [ir.Constant(i64, j)])))
                      for j in range(brows)]
            with cgutils.for_range(builder, nt_) as loop:
                t = loop.index
                ta = builder.load(builder.gep(at_arr.data, [t]))
                tb = builder.load(builder.gep(bt_arr.data, [t]))
                av = [builder.load(vec_at(a_arr.data, builder.add(r, ta)), align=4)
                      for r in a_rows]
                bv = [builder.load(vec_at(b_arr.data, builder.add(r, tb)), align=4)
                      for r in b_rows]
                for i in range(arows):
                    for j in range(brows):
                        acc = builder.load(accs[i][j])
                        builder.store(builder.call(fma, [av[i], bv[j], acc]), accs[i][j])
            for i in range(arows):
                for j in range(brows):
                    builder.store(builder.load(accs[i][j]), out_ptr(i, j), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return outer

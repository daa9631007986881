"""Shared settings and one intrinsic for the numba kernels of the learners and the scorer.

`KERNEL_OPTIONS` is what every hot kernel compiles with:

- `error_model="numpy"`: a float division by zero gives inf instead of raising. Python's
  model puts a zero test before every division, which stops LLVM from vectorizing the
  AdaGrad and FTRL updates (our divisors are never zero: `beta + sqrt(n) > 0` or
  AdaGrad's sum starts positive).
- fast-math without `nnan`/`ninf`: contraction to FMA, reassociation (so reductions over
  the k factors vectorize), reciprocal and approximate sqrt; NaN and inf keep their meaning,
  so logit clipping still works on them.

`prefetch(array, row)` asks the CPU to start loading `array[row]` into cache for writing.
Training reads and writes each coordinate of the next row while it computes this one; with
a hash space larger than the caches, the loads of row r + 1 then overlap the work on row r.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FAST_MATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
KERNEL_OPTIONS = {"cache": True, "error_model": "numpy", "fastmath": FAST_MATH}


@intrinsic
def prefetch(typingctx, array, row):
    """Hint the CPU to fetch `array[row, 0, ...]` for writing (a no-op for correctness)."""
    if not isinstance(array, types.Array) or not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        index = [context.cast(builder, args[1], row_type, types.intp)]
        index += [zero] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, view, index, wraparound=False
        )
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        # rw=1 (for writing), locality=3 (keep in all cache levels), cache type 1 (data)
        arguments = [builder.bitcast(pointer, byte_pointer)]
        arguments += [ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(function, arguments)
        return context.get_dummy_value()

    return types.void(array, row), codegen

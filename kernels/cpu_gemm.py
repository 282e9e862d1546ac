"""Stacks of GEMMs on Numba's threads: ``numpy.matmul`` over a stack, each item one call of the very BLAS
GEMM NumPy calls for it, the items shared between Numba's threads by a ``prange``.

The convolution routes multiply stacks of small matrices: Winograd's products at each of 36 transform
points, a 1x1 convolution's product per image. backend/blas.py's ``stacked_matmul`` shares such a stack
between the threads of its own pool; here the same items run on Numba's (OpenMP) threads instead, the
threads that already run the Winograd transforms before and after each stack and batch norm's kernels
between the layers. One pool for all of a layer's parallel work: no other set of threads to wake (each
wake costs 50-100 us on a 2-core machine, and one pool's idle threads hold the cores another pool's work
needs), and no Python between the items. The stacks alone, against np.matmul and backend/blas.py's pool:
`python benchmarks/shares.py` (docs/core.md, Stacks of small GEMMs).

The kernel calls BLAS through its address (``_gemm``, an LLVM call through a function pointer), so the
compiled kernel holds no address of this process and goes to Numba's on-disk cache like every kernel
here. The BLAS is NumPy's own: its wheels bundle OpenBLAS with 64-bit integers and symbols named
``scipy_cblas_?gemm64_``; each item is the cblas call NumPy's matmul makes for it (row-major, a transpose
flag per operand, the same leading dimensions), so the numbers are ``np.matmul``'s, bit for bit
(tests/kernels/test_cpu_gemm.py). Where NumPy's BLAS is another (a build against MKL or Accelerate),
or the operands are not laid out for BLAS, or NumPy would take another BLAS call (a matrix-vector product,
A @ A.T), ``stacked_matmul`` leaves the stack to backend/blas.py's, which gives the same numbers.
"""
import ctypes
import os

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ..backend import blas
from . import dispatch

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # cblas's enums
_SYMBOLS = {np.dtype(np.float32): "scipy_cblas_sgemm64_", np.dtype(np.float64): "scipy_cblas_dgemm64_"}


@intrinsic
def _gemm(typingctx, address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(RowMajor, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) at ``address``:
    64-bit integers; a, b and c are addresses (integers); alpha and beta of the GEMM's dtype."""
    signature = types.void(address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = args
        i32, i64, pointer = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        real = context.get_value_type(sig.args[6])
        function = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, pointer, i64, pointer, i64,
                                                   real, pointer, i64])
        call = builder.inttoptr(address, function.as_pointer())
        enum = lambda value: builder.trunc(value, i32)  # noqa: E731
        address_of = lambda value: builder.inttoptr(value, pointer)  # noqa: E731
        builder.call(call, [ir.Constant(i32, ROW_MAJOR), enum(trans_a), enum(trans_b), m, n, k, alpha,
                            address_of(a), lda, address_of(b), ldb, beta, address_of(c), ldc])
        return context.get_dummy_value()
    return signature, codegen


@njit(parallel=True, nogil=True, cache=True)
def _gemm_items(address, items, trans_a, trans_b, m, n, k, one, a, a_step, lda, b, b_step, ldb, c, c_step, ldc):
    """Item p: C_p = A_p @ B_p, where X_p starts at x + p * x_step (bytes; 0: every item shares it)."""
    zero = one - one
    for p in prange(items):
        _gemm(address, trans_a, trans_b, m, n, k, one, a + p * a_step, lda, b + p * b_step, ldb, zero,
              c + p * c_step, ldc)


def stacked_matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)`` for a stack: (items, m, k) or (m, k) @ (items, k, n) or (k, n), each item on
    one of Numba's threads with BLAS at one thread; backend/blas.py's where this cannot run (see the module),
    and while a machine's first run compiles this kernel in the background (kernels/dispatch.py)."""
    plan = _plan(a, b, out)
    if plan is None:
        return blas.stacked_matmul(a, b, out=out)
    address, items, (m, n, k), operands, out = plan
    with blas.one_blas_thread():
        _gemm_items(address, items, operands[0][0], operands[1][0], m, n, k, out.dtype.type(1),
                    *operands[0][1:], *operands[1][1:], out.ctypes.data, out.strides[0], out.strides[1] // out.itemsize)
    return out


def _plan(a, b, out):
    """(address, items, (m, n, k), ((trans, address, step, ld) for a and b), out), or None: not this route."""
    if not (type(a) is np.ndarray and type(b) is np.ndarray) or a.dtype != b.dtype or a.dtype not in _SYMBOLS:
        return None
    if not (2 <= a.ndim <= 3 and 2 <= b.ndim <= 3 and 3 in (a.ndim, b.ndim)):
        return None
    items = a.shape[0] if a.ndim == 3 else b.shape[0]
    (m, k), (k_b, n) = a.shape[-2:], b.shape[-2:]
    if k != k_b or any(x.ndim == 3 and x.shape[0] != items for x in (a, b)):
        return None  # (np.matmul's errors and broadcasting of a one-item stack: the other route)
    if min(m, n, k) < 2 or blas.thread_count(items) < 2:
        return None  # NumPy's matrix-vector product, an empty product, or too few items to share
    if "stacked_matmul" in dispatch.cpu_kernels_deferred():
        dispatch.note_wanted_cpu_kernel("stacked_matmul", a.dtype)  # compiled with the run's other kernels
        return None
    address = gemm_address(a.dtype)
    operands = (_operand(a), _operand(b))
    if address is None or None in operands or operands[0][1] == operands[1][1]:
        return None  # (the last: one array twice, where NumPy computes A @ A.T with syrk)
    if out is None:
        out = np.empty((items, m, n), dtype=a.dtype)
    elif not (type(out) is np.ndarray and out.shape == (items, m, n) and out.dtype == a.dtype
              and out.strides[2] == out.itemsize and out.strides[1] >= n * out.itemsize) \
            or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return None  # (np.matmul buffers an output that overlaps an operand)
    return address, items, (m, n, k), operands, out


def _operand(x):
    """(transposed?, address, item step in bytes, leading dimension) of a stack's operand as BLAS reads it,
    or None where NumPy would not hand its matrices to BLAS as they are (neither axis of unit stride)."""
    rows, cols = x.shape[-2:]
    row_step, col_step = (s // x.itemsize for s in x.strides[-2:])
    if any(s % x.itemsize for s in x.strides[-2:]):
        return None
    step = x.strides[0] if x.ndim == 3 else 0
    if col_step == 1 and row_step >= max(1, cols):
        return NO_TRANS, x.ctypes.data, step, row_step
    if row_step == 1 and col_step >= max(1, rows):
        return TRANS, x.ctypes.data, step, col_step
    return None


def warm_up(dtype):
    """The kernel once on a stack of two 2x2 products of ``dtype``, whatever the threads (the warm-up's call:
    kernels/cpu.py); nothing where NumPy's BLAS was not found (the kernel is never called then)."""
    address = gemm_address(dtype)
    if address is not None:
        a, out = np.ones((2, 2, 2), dtype), np.empty((2, 2, 2), dtype)
        step = a.strides[0]
        _gemm_items(address, 2, NO_TRANS, NO_TRANS, 2, 2, 2, out.dtype.type(1), a.ctypes.data, step, 2,
                    a.ctypes.data, step, 2, out.ctypes.data, step, 2)


def gemm_address(dtype):
    """The address of NumPy's own cblas GEMM for ``dtype`` (float32 or float64): None for another dtype and
    where NumPy's BLAS is not its bundled OpenBLAS."""
    return _addresses().get(np.dtype(dtype))


_found = {}


def _addresses():
    """{dtype: the address of NumPy's own cblas GEMM}: empty where NumPy's BLAS is not its bundled OpenBLAS."""
    if "addresses" not in _found:
        _found["addresses"] = _numpy_gemms()
    return _found["addresses"]


def _numpy_gemms():
    from threadpoolctl import threadpool_info
    home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))  # numpy's site-packages
    for library in threadpool_info():
        path = library.get("filepath") or ""
        inside_numpy = os.path.abspath(path).startswith(os.path.join(home, "numpy"))  # numpy/ or numpy.libs/
        if library.get("internal_api") != "openblas" or not inside_numpy:
            continue
        handle = ctypes.CDLL(path)  # already loaded by NumPy: the same library
        found = {}
        for dtype, symbol in _SYMBOLS.items():
            if hasattr(handle, symbol):
                found[dtype] = ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value
        return found
    return {}


// Shared by every kernel source: the element type and the indexing helpers.
//
// The element type is chosen at compile time (-DSCALAR_T=float or double), so
// one source serves float32 and float64; the CuPy launcher and the CPU
// emulator both pass the same -D options (kernels/launch.py builds them).
#pragma once

#ifndef SCALAR_T
#define SCALAR_T float
#endif
typedef SCALAR_T scalar_t;

// Tile edge of the shared-memory GEMM tiles in conv.cu and the block size of
// the reduction kernels; both come from kernels/launch.py via -D.
#ifndef CONV_TILE
#define CONV_TILE 16
#endif
#ifndef REDUCE_THREADS
#define REDUCE_THREADS 256
#endif

// A grid-stride loop over n items with a 64-bit index: correct for any grid.
#define GRID_STRIDE_LOOP(i, n)                                                  \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// The input row (or column) a kernel tap reads for one output position.
__device__ __forceinline__ int tap_input(int out, int tap, int stride, int pad, int dilation) {
    return out * stride - pad + tap * dilation;
}

// The output position whose tap `tap` reads input position `in`, or -1 when
// none does (the stride skips it, or it falls outside [0, out_size)).
__device__ __forceinline__ int tap_output(int in, int tap, int stride, int pad, int dilation, int out_size) {
    int t = in + pad - tap * dilation;
    if (t < 0 || t % stride != 0) return -1;
    t /= stride;
    return t < out_size ? t : -1;
}

// How many entries a column matrix col (C, KH, KW, N, OH, OW) holds: the im2col kernels (im2col.cu,
// deform.cu) run one thread per entry, in a GRID_STRIDE_LOOP over them.
__device__ __forceinline__ long long column_entries(int C, int KH, int KW, int N, int OH, int OW) {
    return (long long)C * KH * KW * N * OH * OW;
}

// Where entry `idx` of a column matrix sits: channel c, tap (i, j), image n, output pixel (oy, ox).
struct ColumnIndex {
    int c, i, j, n, oy, ox;
};
__device__ __forceinline__ ColumnIndex column_index(long long idx, int N, int OH, int OW, int KH, int KW) {
    ColumnIndex e;
    e.ox = idx % OW;
    e.oy = (idx / OW) % OH;
    long long rest = idx / ((long long)OH * OW);
    e.n = rest % N; rest /= N;
    e.j = rest % KW; rest /= KW;
    e.i = rest % KH;
    e.c = rest / KH;
    return e;
}

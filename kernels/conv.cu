// Direct convolution, forward and both backwards, tiled through shared memory.
//
// Each kernel is an implicit GEMM: out[m, p] = sum_k A(m, k) * B(k, p), where
// A and B are read straight from the tensors (no column buffer). A block owns
// a CONV_TILE x CONV_TILE tile of `out` for one group (blockIdx.z); it walks
// k in CONV_TILE-deep slices, staging both operand slices in shared memory.
//
//   kernel                 out (m, p)                    k
//   conv2d_forward         y  (oc, (n, oy, ox))          (c, i, j)
//   conv2d_backward_input  gx (c,  (n, iy, ix))          (oc, i, j)
//   conv2d_backward_weight gw (oc, (c, i, j))            (n, oy, ox)
//
// Shapes: x (N, C, H, W), w (CO, C/G, KH, KW), y (N, CO, OH, OW).
#include "common.cuh"

// out[m0 + ty, p0 + tx] for this block's tile; every thread of the block must
// call it (it synchronises), including those whose (m, p) is out of range.
template <class Operands>
__device__ __forceinline__ scalar_t tiled_dot(const Operands& op, int M, int P, int K) {
    __shared__ scalar_t a_tile[CONV_TILE][CONV_TILE + 1];  // +1: no bank conflicts
    __shared__ scalar_t b_tile[CONV_TILE][CONV_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int m0 = blockIdx.y * CONV_TILE, p0 = blockIdx.x * CONV_TILE;
    scalar_t acc = 0;
    for (int k0 = 0; k0 < K; k0 += CONV_TILE) {
        a_tile[ty][tx] = (m0 + ty < M && k0 + tx < K) ? op.a(m0 + ty, k0 + tx) : scalar_t(0);
        b_tile[ty][tx] = (k0 + ty < K && p0 + tx < P) ? op.b(k0 + ty, p0 + tx) : scalar_t(0);
        __syncthreads();
        for (int k = 0; k < CONV_TILE; ++k) acc += a_tile[ty][k] * b_tile[k][tx];
        __syncthreads();  // the next slice overwrites the tiles
    }
    return acc;
}

#define CONV_PARAMS                                                                  \
    int N, int C, int H, int W, int CO, int OH, int OW, int KH, int KW, int SY, int SX, \
    int PH, int PW, int DY, int DX, int G

// The implicit im2col matrix of group g's input: entry (q, r) is the pixel output position
// r = (n, oy, ox) reads at tap q = (c, i, j), or 0 where that tap falls in the padding. The
// forward reads it as its B operand, the weight gradient as its B operand transposed.
struct InputTaps {
    const scalar_t* x;
    int C, H, W, OH, OW, KH, KW, SY, SX, PH, PW, DY, DX, cg, g;
    __device__ scalar_t at(int q, int r) const {
        const int c = q / (KH * KW), i = (q / KW) % KH, j = q % KW;
        const int n = r / (OH * OW), oy = (r / OW) % OH, ox = r % OW;
        const int iy = tap_input(oy, i, SY, PH, DY), ix = tap_input(ox, j, SX, PW, DX);
        if (iy < 0 || iy >= H || ix < 0 || ix >= W) return 0;
        return x[(((long long)n * C + g * cg + c) * H + iy) * W + ix];
    }
};

struct ForwardOperands {
    const scalar_t* w; int K; InputTaps x;
    __device__ scalar_t a(int oc, int k) const { return w[(long long)oc * K + k]; }
    __device__ scalar_t b(int k, int p) const { return x.at(k, p); }
};

extern "C" __global__ void conv2d_forward(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                          scalar_t* __restrict__ y, CONV_PARAMS) {
    const int g = blockIdx.z, cg = C / G, mg = CO / G;
    ForwardOperands op = {w + (long long)g * mg * cg * KH * KW, cg * KH * KW,
                          {x, C, H, W, OH, OW, KH, KW, SY, SX, PH, PW, DY, DX, cg, g}};
    const int P = N * OH * OW;
    const scalar_t value = tiled_dot(op, mg, P, op.K);
    const int m = blockIdx.y * CONV_TILE + threadIdx.y, p = blockIdx.x * CONV_TILE + threadIdx.x;
    if (m < mg && p < P) {
        const int n = p / (OH * OW), pix = p % (OH * OW);
        y[((long long)n * CO + g * mg + m) * OH * OW + pix] = value;
    }
}

struct BackwardInputOperands {
    const scalar_t* gy; const scalar_t* w;
    int H, W, CO, OH, OW, KH, KW, SY, SX, PH, PW, DY, DX, cg, mg, g;
    __device__ scalar_t a(int c, int k) const {  // w[g*mg + oc, c, i, j] with k = (oc, i, j)
        const int oc = k / (KH * KW), ij = k % (KH * KW);
        return w[((long long)oc * cg + c) * KH * KW + ij];
    }
    __device__ scalar_t b(int k, int p) const {
        const int oc = k / (KH * KW), i = (k / KW) % KH, j = k % KW;
        const int n = p / (H * W), iy = (p / W) % H, ix = p % W;
        const int oy = tap_output(iy, i, SY, PH, DY, OH), ox = tap_output(ix, j, SX, PW, DX, OW);
        if (oy < 0 || ox < 0) return 0;
        return gy[(((long long)n * CO + g * mg + oc) * OH + oy) * OW + ox];
    }
};

extern "C" __global__ void conv2d_backward_input(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ w,
                                                 scalar_t* __restrict__ gx, CONV_PARAMS) {
    const int g = blockIdx.z, cg = C / G, mg = CO / G;
    BackwardInputOperands op = {gy, w + (long long)g * mg * cg * KH * KW, H, W, CO, OH, OW, KH, KW,
                                SY, SX, PH, PW, DY, DX, cg, mg, g};
    const int P = N * H * W;
    const scalar_t value = tiled_dot(op, cg, P, mg * KH * KW);
    const int c = blockIdx.y * CONV_TILE + threadIdx.y, p = blockIdx.x * CONV_TILE + threadIdx.x;
    if (c < cg && p < P) {
        const int n = p / (H * W), pix = p % (H * W);
        gx[((long long)n * C + g * cg + c) * H * W + pix] = value;
    }
}

struct BackwardWeightOperands {
    const scalar_t* gy; int CO, OH, OW, mg, g; InputTaps x;
    __device__ scalar_t a(int oc, int k) const {  // gy[n, g*mg + oc, oy, ox] with k = (n, oy, ox)
        const int n = k / (OH * OW), pix = k % (OH * OW);
        return gy[((long long)n * CO + g * mg + oc) * OH * OW + pix];
    }
    __device__ scalar_t b(int k, int p) const { return x.at(p, k); }  // k = (n, oy, ox), p = (c, i, j)
};

extern "C" __global__ void conv2d_backward_weight(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                                                  scalar_t* __restrict__ gw, CONV_PARAMS) {
    const int g = blockIdx.z, cg = C / G, mg = CO / G;
    BackwardWeightOperands op = {gy, CO, OH, OW, mg, g, {x, C, H, W, OH, OW, KH, KW, SY, SX, PH, PW, DY, DX, cg, g}};
    const int P = cg * KH * KW;
    const scalar_t value = tiled_dot(op, mg, P, N * OH * OW);
    const int m = blockIdx.y * CONV_TILE + threadIdx.y, p = blockIdx.x * CONV_TILE + threadIdx.x;
    if (m < mg && p < P) gw[((long long)g * mg + m) * P + p] = value;
}

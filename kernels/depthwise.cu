// Depthwise convolution (groups == C, CO = C * multiplier): direct kernels.
//
// im2col would copy every input pixel KH*KW times to feed a matmul whose
// inner dimension is only KH*KW; a direct loop reads x once per tap instead.
// Output channel oc = c * M + m reads input channel c (torch's grouping).
// Shapes: x (N, C, H, W), w (C*M, 1, KH, KW), y (N, C*M, OH, OW).
#include "common.cuh"

#define DW_PARAMS                                                                    \
    int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW, int SY, int SX, \
    int PH, int PW, int DY, int DX

// One thread per output element.
extern "C" __global__ void depthwise_forward(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                             scalar_t* __restrict__ y, DW_PARAMS) {
    const long long total = (long long)N * C * M * OH * OW;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = idx % OW, oy = (idx / OW) % OH;
        const long long noc = idx / ((long long)OH * OW);  // n * C*M + oc
        const int oc = noc % (C * M);
        const long long plane = (noc / (C * M)) * C + oc / M;  // n * C + c
        const scalar_t* xp = x + plane * H * W;
        const scalar_t* wp = w + (long long)oc * KH * KW;
        scalar_t acc = 0;
        for (int i = 0; i < KH; ++i) {
            const int iy = tap_input(oy, i, SY, PH, DY);
            if (iy < 0 || iy >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int ix = tap_input(ox, j, SX, PW, DX);
                if (ix >= 0 && ix < W) acc += wp[i * KW + j] * xp[iy * W + ix];
            }
        }
        y[idx] = acc;
    }
}

// One thread per input element: gathers from every (m, i, j) that read it, so
// no two threads write the same gx (no atomics, deterministic).
extern "C" __global__ void depthwise_backward_input(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ w,
                                                    scalar_t* __restrict__ gx, DW_PARAMS) {
    const long long total = (long long)N * C * H * W;
    GRID_STRIDE_LOOP(idx, total) {
        const int ix = idx % W, iy = (idx / W) % H;
        const long long plane = idx / ((long long)H * W);  // n * C + c
        const int c = plane % C;
        scalar_t acc = 0;
        for (int m = 0; m < M; ++m) {
            const scalar_t* gyp = gy + (plane * M + m) * OH * OW;  // (n, c*M + m) plane
            const scalar_t* wp = w + (long long)(c * M + m) * KH * KW;
            for (int i = 0; i < KH; ++i) {
                const int oy = tap_output(iy, i, SY, PH, DY, OH);
                if (oy < 0) continue;
                for (int j = 0; j < KW; ++j) {
                    const int ox = tap_output(ix, j, SX, PW, DX, OW);
                    if (ox >= 0) acc += wp[i * KW + j] * gyp[oy * OW + ox];
                }
            }
        }
        gx[idx] = acc;
    }
}

// One block of REDUCE_THREADS per weight tap (oc, i, j): the threads stride
// over (n, oy, ox) and reduce their partial sums in shared memory.
extern "C" __global__ void depthwise_backward_weight(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                                                     scalar_t* __restrict__ gw, DW_PARAMS) {
    __shared__ scalar_t partial[REDUCE_THREADS];
    const int tap = blockIdx.x;  // oc * KH*KW + i * KW + j
    const int j = tap % KW, i = (tap / KW) % KH, oc = tap / (KH * KW), c = oc / M;
    const long long count = (long long)N * OH * OW;
    scalar_t acc = 0;
    for (long long k = threadIdx.x; k < count; k += REDUCE_THREADS) {
        const int ox = k % OW, oy = (k / OW) % OH, n = k / ((long long)OH * OW);
        const int iy = tap_input(oy, i, SY, PH, DY), ix = tap_input(ox, j, SX, PW, DX);
        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
            acc += gy[(((long long)n * C * M + oc) * OH + oy) * OW + ox] *
                   x[(((long long)n * C + c) * H + iy) * W + ix];
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = REDUCE_THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) gw[tap] = partial[0];
}

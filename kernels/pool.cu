// Max pooling with argmax, forward and backward. x (N, C, H, W), y and argmax
// (N, C, OH, OW); argmax holds the flat index iy * W + ix inside the (n, c)
// plane, as torch's return_indices does. OH/OW come from the caller, so
// ceil_mode is the caller's rounding; taps outside x are skipped (-inf pad).
#include "common.cuh"

extern "C" __global__ void max_pool2d_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                              long long* __restrict__ argmax, int N, int C, int H, int W,
                                              int OH, int OW, int KH, int KW, int SY, int SX, int PH, int PW,
                                              int DY, int DX) {
    const long long total = (long long)N * C * OH * OW;
    GRID_STRIDE_LOOP(idx, total) {
        const int ox = idx % OW, oy = (idx / OW) % OH;
        const scalar_t* xp = x + (idx / ((long long)OH * OW)) * H * W;
        scalar_t best = 0;  // replaced by the first tap inside x (every window has one)
        long long where = -1;
        for (int i = 0; i < KH; ++i) {
            const int iy = tap_input(oy, i, SY, PH, DY);
            if (iy < 0 || iy >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int ix = tap_input(ox, j, SX, PW, DX);
                if (ix < 0 || ix >= W) continue;
                const scalar_t v = xp[iy * W + ix];
                // torch's rule: the first maximum wins, but every NaN takes over (the last NaN wins)
                if (where < 0 || v > best || v != v) { best = v; where = iy * W + ix; }
            }
        }
        y[idx] = best;
        argmax[idx] = where;
    }
}

// Overlapping windows may pick the same pixel, so the scatter is atomic.
extern "C" __global__ void max_pool2d_backward(const scalar_t* __restrict__ gy, const long long* __restrict__ argmax,
                                               scalar_t* __restrict__ gx, int N, int C, int H, int W, int OH, int OW) {
    const long long total = (long long)N * C * OH * OW;
    GRID_STRIDE_LOOP(idx, total) {
        const long long where = argmax[idx];
        if (where >= 0) atomicAdd(gx + (idx / ((long long)OH * OW)) * H * W + where, gy[idx]);
    }
}

// im2col and col2im for the GPU im2col route, in the column layout of
// scratchnet/functional/conv.py: col (C, KH, KW, N, OH, OW), x (N, C, H, W).
#include "common.cuh"

#define COL_PARAMS                                                                   \
    int N, int C, int H, int W, int OH, int OW, int KH, int KW, int SY, int SX,        \
    int PH, int PW, int DY, int DX

// One thread per column entry; `pad_value` fills taps outside x (0 for conv,
// -inf for max pooling).
extern "C" __global__ void im2col(const scalar_t* __restrict__ x, scalar_t* __restrict__ col,
                                  COL_PARAMS, scalar_t pad_value) {
    GRID_STRIDE_LOOP(idx, column_entries(C, KH, KW, N, OH, OW)) {
        const auto [c, i, j, n, oy, ox] = column_index(idx, N, OH, OW, KH, KW);
        const int iy = tap_input(oy, i, SY, PH, DY), ix = tap_input(ox, j, SX, PW, DX);
        col[idx] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                       ? x[(((long long)n * C + c) * H + iy) * W + ix] : pad_value;
    }
}

// The adjoint: one thread per input pixel sums every column entry read from
// it (a gather, so no atomics and a deterministic sum).
extern "C" __global__ void col2im(const scalar_t* __restrict__ col, scalar_t* __restrict__ x, COL_PARAMS) {
    const long long total = (long long)N * C * H * W;
    GRID_STRIDE_LOOP(idx, total) {
        const int ix = idx % W, iy = (idx / W) % H;
        const int c = (idx / ((long long)H * W)) % C, n = idx / ((long long)C * H * W);
        scalar_t acc = 0;
        for (int i = 0; i < KH; ++i) {
            const int oy = tap_output(iy, i, SY, PH, DY, OH);
            if (oy < 0) continue;
            for (int j = 0; j < KW; ++j) {
                const int ox = tap_output(ix, j, SX, PW, DX, OW);
                if (ox >= 0) acc += col[((((long long)c * KH + i) * KW + j) * N + n) * OH * OW + oy * OW + ox];
            }
        }
        x[idx] = acc;
    }
}

// Deformable convolution (v1 and v2) on the GPU: deformable im2col and its two adjoints, the CUDA twins
// of kernels/cpu_deform.py, with torchvision's sampling rule (scratchnet/functional/deform_routes.py).
//
// x (N, C, H, W); offset (N, 2*G*KH*KW, OH, OW) as (dy, dx) per tap; mask (N, G*KH*KW, OH, OW) when
// USE_MASK (else a 1-element stand-in nobody reads); columns (C, KH, KW, N, OH, OW), the layout of
// conv_routes' im2col, so one cuBLAS GEMM turns them into the output. G is the number of offset groups.
#include "common.cuh"

#define DEFORM_PARAMS                                                                 \
    int N, int C, int H, int W, int OH, int OW, int KH, int KW, int SY, int SX,         \
    int PH, int PW, int DY, int DX, int G, int USE_MASK
#define DEFORM_ARGS N, C, H, W, OH, OW, KH, KW, SY, SX, PH, PW, DY, DX, G, USE_MASK

// Where tap (i, j) of output pixel (oy, ox) samples, for the tap's mask channel ch = (n*G + g)*KH*KW + tap:
// the regular grid point plus the tap's offset, and the tap's modulation (1 without a mask).
#define SAMPLE_POINT(y, x, m, ch, pix, oy, ox, i, j)                                                      \
    const long long pixels_ = (long long)OH * OW;                                                        \
    const scalar_t y = (scalar_t)tap_input(oy, i, SY, PH, DY) + offset[2 * (ch) * pixels_ + (pix)];       \
    const scalar_t x = (scalar_t)tap_input(ox, j, SX, PW, DX) + offset[(2 * (ch) + 1) * pixels_ + (pix)]; \
    const scalar_t m = USE_MASK ? mask[(ch) * pixels_ + (pix)] : (scalar_t)1

// What column entry idx samples: its channel c and image n, the point (y, x) its tap reads and the tap's
// modulation m. The forward (deform_im2col) and its input adjoint (deform_col2im) open with it.
struct ColumnSample {
    int c, n;
    scalar_t y, x, m;
};
__device__ __forceinline__ ColumnSample column_sample(long long idx, const scalar_t* offset, const scalar_t* mask,
                                                      DEFORM_PARAMS) {
    const auto [c, i, j, n, oy, ox] = column_index(idx, N, OH, OW, KH, KW);
    const long long ch = ((long long)n * G + c / (C / G)) * KH * KW + i * KW + j;
    SAMPLE_POINT(y, x, m, ch, (long long)oy * OW + ox, oy, ox, i, j);
    return {c, n, y, x, m};
}

// The four neighbours of (y, x) in one plane (floor/floor, floor/ceil, ceil/floor, ceil/ceil), 0 where a
// neighbour lies outside the plane; ly, lx the fractions. The caller guarantees -1 <= y < H, -1 <= x < W.
__device__ __forceinline__ void neighbours(const scalar_t* plane, int H, int W, scalar_t y, scalar_t x,
                                           scalar_t v[4], scalar_t& ly, scalar_t& lx) {
    const int y0 = (int)floor(y), x0 = (int)floor(x);
    ly = y - y0;
    lx = x - x0;
    v[0] = (y0 >= 0 && x0 >= 0) ? plane[y0 * W + x0] : (scalar_t)0;
    v[1] = (y0 >= 0 && x0 + 1 < W) ? plane[y0 * W + x0 + 1] : (scalar_t)0;
    v[2] = (y0 + 1 < H && x0 >= 0) ? plane[(y0 + 1) * W + x0] : (scalar_t)0;
    v[3] = (y0 + 1 < H && x0 + 1 < W) ? plane[(y0 + 1) * W + x0 + 1] : (scalar_t)0;
}

// torchvision's two tests: a sample reads anything only when -1 < y < H and -1 < x < W; its neighbours
// (and the offset gradient) exist when -1 <= y < H and -1 <= x < W.
__device__ __forceinline__ bool reads(scalar_t y, scalar_t x, int H, int W) {
    return y > -1 && y < H && x > -1 && x < W;
}
__device__ __forceinline__ bool has_neighbours(scalar_t y, scalar_t x, int H, int W) {
    return y >= -1 && y < H && x >= -1 && x < W;
}

// One thread per column entry: the bilinear sample of its channel at its tap's point, times the mask.
extern "C" __global__ void deform_im2col(const scalar_t* __restrict__ x_in, const scalar_t* __restrict__ offset,
                                         const scalar_t* __restrict__ mask, scalar_t* __restrict__ col,
                                         DEFORM_PARAMS) {
    GRID_STRIDE_LOOP(idx, column_entries(C, KH, KW, N, OH, OW)) {
        const auto [c, n, y, x, m] = column_sample(idx, offset, mask, DEFORM_ARGS);
        scalar_t value = 0;
        if (reads(y, x, H, W)) {
            scalar_t v[4], ly, lx;
            neighbours(x_in + ((long long)n * C + c) * H * W, H, W, y, x, v, ly, lx);
            const scalar_t hy = 1 - ly, hx = 1 - lx;
            value = hy * hx * v[0] + hy * lx * v[1] + ly * hx * v[2] + ly * lx * v[3];
        }
        col[idx] = m * value;
    }
}

// The input gradient: one thread per column entry adds its gradient, times the mask and the bilinear
// weights, to the (up to) four pixels its sample read. Samples of different taps and pixels land on the
// same pixel at data-dependent places, so this is a scatter with atomicAdd (as torchvision's and mmcv's
// CUDA kernels), the one kernel here besides max-pool backward; gx must start at zero.
extern "C" __global__ void deform_col2im(const scalar_t* __restrict__ gcol, const scalar_t* __restrict__ offset,
                                         const scalar_t* __restrict__ mask, scalar_t* __restrict__ gx,
                                         DEFORM_PARAMS) {
    GRID_STRIDE_LOOP(idx, column_entries(C, KH, KW, N, OH, OW)) {
        const auto [c, n, y, x, m] = column_sample(idx, offset, mask, DEFORM_ARGS);
        if (!reads(y, x, H, W)) continue;
        const int y0 = (int)floor(y), x0 = (int)floor(x);
        const scalar_t ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
        const scalar_t g = m * gcol[idx];
        scalar_t* plane = gx + ((long long)n * C + c) * H * W;
        if (y0 >= 0 && x0 >= 0) atomicAdd(plane + y0 * W + x0, hy * hx * g);
        if (y0 >= 0 && x0 + 1 < W) atomicAdd(plane + y0 * W + x0 + 1, hy * lx * g);
        if (y0 + 1 < H && x0 >= 0) atomicAdd(plane + (y0 + 1) * W + x0, ly * hx * g);
        if (y0 + 1 < H && x0 + 1 < W) atomicAdd(plane + (y0 + 1) * W + x0 + 1, ly * lx * g);
    }
}

// The offset and mask gradients: one thread per (image, offset group, tap, output pixel) sums over the
// group's channels gcol times the sample's derivative in y and in x (then times the mask), and gcol
// times the unmodulated sample (the mask's gradient). A gather: no atomics, a fixed order.
extern "C" __global__ void deform_col2im_coord(const scalar_t* __restrict__ gcol, const scalar_t* __restrict__ x_in,
                                               const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                               scalar_t* __restrict__ goffset, scalar_t* __restrict__ gmask,
                                               DEFORM_PARAMS) {
    const int taps = KH * KW;
    const long long total = (long long)N * G * taps * OH * OW;
    GRID_STRIDE_LOOP(idx, total) {
        const long long pix = idx % ((long long)OH * OW), ch = idx / ((long long)OH * OW);
        const int t = ch % taps, g = (ch / taps) % G, n = ch / ((long long)taps * G);
        const int i = t / KW, j = t % KW, oy = pix / OW, ox = pix % OW;
        SAMPLE_POINT(y, x, m, ch, pix, oy, ox, i, j);
        scalar_t along_y = 0, along_x = 0, sampled = 0;
        if (has_neighbours(y, x, H, W)) {
            const int per_group = C / G;
            for (int k = 0; k < per_group; ++k) {
                const int c = g * per_group + k;
                scalar_t v[4], ly, lx;
                neighbours(x_in + ((long long)n * C + c) * H * W, H, W, y, x, v, ly, lx);
                const scalar_t hy = 1 - ly, hx = 1 - lx;
                const scalar_t gv = gcol[(((long long)c * taps + t) * N + n) * OH * OW + pix];
                along_y += gv * (hx * (v[2] - v[0]) + lx * (v[3] - v[1]));
                along_x += gv * (hy * (v[1] - v[0]) + ly * (v[3] - v[2]));
                sampled += gv * (hy * hx * v[0] + hy * lx * v[1] + ly * hx * v[2] + ly * lx * v[3]);
            }
        }
        goffset[2 * ch * pixels_ + pix] = m * along_y;
        goffset[(2 * ch + 1) * pixels_ + pix] = m * along_x;
        if (USE_MASK) gmask[ch * pixels_ + pix] = sampled;
    }
}

// Deliberately buggy kernels: tests/test_kernels_emulator.py checks that the
// CPU emulator (kernels/cuda_emu.h + kernels/emulator.py) flags each defect
// class, and passes the same kernel once the defect is switched off.
#include "common.cuh"

// The last thread sums what the others staged: correct only with the barrier.
extern "C" __global__ void block_sum(const scalar_t* x, scalar_t* out, int with_barrier) {
    __shared__ scalar_t staged[64];
    staged[threadIdx.x] = x[threadIdx.x];
    if (with_barrier) __syncthreads();
    if (threadIdx.x == blockDim.x - 1) {
        scalar_t acc = 0;
        for (int i = 0; i < 64; ++i) acc += staged[i];
        out[0] = acc;
    }
}

// Reads one element past the end of x when `overrun` is set.
extern "C" __global__ void copy(const scalar_t* x, scalar_t* y, int n, int overrun) {
    GRID_STRIDE_LOOP(i, n) y[i] = x[i + overrun];
}

// Writes one element before the start of y.
extern "C" __global__ void underrun(scalar_t* y) { y[(int)threadIdx.x - 1] = 1; }

// Integer division by `divisor` (0: a fault the emulator reports, not a crash).
extern "C" __global__ void divide(scalar_t* y, int divisor) { y[threadIdx.x] = (int)threadIdx.x / divisor; }

// Threads past n return before a barrier the others wait at.
extern "C" __global__ void divergent(scalar_t* y, int n) {
    if ((int)threadIdx.x >= n) return;
    __syncthreads();
    y[threadIdx.x] = 1;
}

// Shared memory read before anyone wrote it, inside a function template (a
// static the section attribute would miss): with write_all == 0 the odd
// threads read tile slots only the even threads fill.
template <class T>
__device__ T staged_read(const T* x, int write_all) {
    __shared__ T tile[64];
    if (write_all || threadIdx.x % 2 == 0) tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    return tile[threadIdx.x];
}

extern "C" __global__ void template_tile(const scalar_t* x, scalar_t* y, int write_all) {
    y[threadIdx.x] = staged_read(x, write_all);
}

// The same sum with and without `= 0` on its accumulator. (A conditional
// `if (flag) acc = 0;` would not do: at -O1 g++ assumes the uninitialised
// path away.)
extern "C" __global__ void accumulate(const scalar_t* x, scalar_t* y, int n) {
    scalar_t acc = 0;
    for (int i = 0; i < n; ++i) acc += x[i];
    y[0] = acc;
}

extern "C" __global__ void accumulate_uninitialised(const scalar_t* x, scalar_t* y, int n) {
    scalar_t acc;
    for (int i = 0; i < n; ++i) acc += x[i];
    y[0] = acc;
}

// One item per thread, no grid-stride loop: right only while the grid covers
// all n items, wrong once the launcher caps the blocks.
extern "C" __global__ void single_pass_copy(const scalar_t* x, scalar_t* y, int n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}

// Every thread adds into one global sum without atomicAdd: a lost update on a
// GPU, but invisible here (threads switch only at barriers).
extern "C" __global__ void racy_sum(const scalar_t* x, scalar_t* sum, int n) {
    GRID_STRIDE_LOOP(i, n) sum[0] += x[i];
}

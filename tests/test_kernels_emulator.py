"""The CPU emulator itself: toy kernels prove it catches a race (a missing
__syncthreads, exposed by shuffling the thread order), out-of-bounds reads and
writes (guarded buffers) and a divergent barrier.
"""
import textwrap

import numpy as np
import pytest

from scratchnet.kernels import emulator as emulation
from scratchnet.kernels.launch import Launch

pytestmark = pytest.mark.skipif(emulation.compiler() is None, reason="the CUDA emulator needs g++")

TOY = textwrap.dedent("""
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
    // Threads past n return before a barrier the others wait at.
    extern "C" __global__ void divergent(scalar_t* y, int n) {
        if ((int)threadIdx.x >= n) return;
        __syncthreads();
        y[threadIdx.x] = 1;
    }
""")
TOY_KERNELS = ("block_sum", "copy", "underrun", "divergent")


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    emu = emulation.Emulator(tmp_path_factory.mktemp("toy_build"))
    path = tmp_path_factory.mktemp("toy") / "toy.cu"
    path.write_text(TOY)

    def launch(kernel, grid, block, *args, seed=0):
        return emu.launch(kernel, Launch(grid, block), list(args), np.float64, seed=seed, source=path,
                          kernels=TOY_KERNELS)
    return launch


def test_shuffled_order_exposes_a_missing_syncthreads(toy):
    x = np.arange(64, dtype=np.float64)
    answers = []
    for seed in range(0, 6):
        out = np.zeros(1)
        toy("block_sum", (1, 1, 1), (64, 1, 1), x, out, np.int32(0), seed=seed)
        answers.append(out[0])
    assert answers[0] == x.sum()  # in launch order the race happens to give the right sum ...
    assert any(a != x.sum() for a in answers[1:])  # ... shuffled, the unsynchronised read shows
    for seed in range(0, 6):  # with the barrier, every order is right
        out = np.zeros(1)
        toy("block_sum", (1, 1, 1), (64, 1, 1), x, out, np.int32(1), seed=seed)
        assert out[0] == x.sum()


def test_out_of_bounds_reads_and_writes_are_caught(toy):
    x, y = np.ones(100), np.zeros(100)
    toy("copy", (1, 1, 1), (32, 1, 1), x, y, np.int32(100), np.int32(0))
    assert y.sum() == 100
    with pytest.raises(emulation.EmulatorError, match="out-of-bounds access .* byte offset 800 of buffer"):
        toy("copy", (1, 1, 1), (32, 1, 1), x, y, np.int32(100), np.int32(1))
    with pytest.raises(emulation.EmulatorError, match="write before the start"):
        toy("underrun", (1, 1, 1), (4, 1, 1), np.zeros(4))


def test_divergent_barrier_is_caught(toy):
    toy("divergent", (1, 1, 1), (8, 1, 1), np.zeros(8), np.int32(8))
    with pytest.raises(emulation.EmulatorError, match="divergent __syncthreads"):
        toy("divergent", (1, 1, 1), (8, 1, 1), np.zeros(8), np.int32(5))

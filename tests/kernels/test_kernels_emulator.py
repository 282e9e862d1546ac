"""The CPU emulator itself: deliberately buggy toy kernels (tests/fixtures/emulator_defects.cu)
prove it flags each defect class, and passes each kernel once its defect is switched off:
a missing __syncthreads (exposed by shuffling the thread order), out-of-bounds reads and
writes (guarded buffers), a divergent barrier, shared memory read before it is written
(inside a function template too), an uninitialised accumulator, a kernel that only works
while the grid covers the data, and a header edited after a build (the cache key). The one
blind spot, a race through a plain global `+=`, is pinned here and left to the GPU.
"""
from pathlib import Path

import numpy as np
import pytest

from scratchnet.kernels import emulator as emulation
from scratchnet.kernels.launch import Launch, launch_config
from conftest import FIXTURES

pytestmark = pytest.mark.skipif(emulation.compiler() is None, reason="the CUDA emulator needs g++")

DEFECTS = FIXTURES / "emulator_defects.cu"
KERNELS = ("block_sum", "copy", "underrun", "divide", "divergent", "template_tile", "accumulate",
           "accumulate_uninitialised", "single_pass_copy",
           "racy_sum")


@pytest.fixture(scope="session")
def toy():
    emu = emulation.Emulator()  # the shared cache: built once, reused while the file is unchanged

    def launch(kernel, grid, block, *args, seed=0):
        return emu.launch(kernel, Launch(grid, block), list(args), np.float64, seed=seed, source=DEFECTS,
                          kernels=KERNELS)
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


def test_integer_division_by_zero_is_reported(toy):
    y = np.zeros(4)
    toy("divide", (1, 1, 1), (4, 1, 1), y, np.int32(2))
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    with pytest.raises(emulation.EmulatorError, match=r"integer division by zero in block \(0,0,0\) thread"):
        toy("divide", (1, 1, 1), (4, 1, 1), y, np.int32(0))


def test_divergent_barrier_is_caught(toy):
    toy("divergent", (1, 1, 1), (8, 1, 1), np.zeros(8), np.int32(8))
    with pytest.raises(emulation.EmulatorError, match="divergent __syncthreads"):
        toy("divergent", (1, 1, 1), (8, 1, 1), np.zeros(8), np.int32(5))


def test_unwritten_shared_memory_reads_nan_even_in_a_template(toy):
    x = np.arange(64, dtype=np.float64)
    for _ in range(2):  # the first block and a later one (re-poisoned before every block)
        y = np.zeros(64)
        toy("template_tile", (1, 1, 1), (64, 1, 1), x, y, np.int32(0))
        assert np.isnan(y[1::2]).all() and (y[0::2] == x[0::2]).all()
        toy("template_tile", (1, 1, 1), (64, 1, 1), x, y, np.int32(1))
        np.testing.assert_array_equal(y, x)


def test_shared_declarations_the_rewrite_cannot_handle_are_refused():
    assert "register_shared(&tile, sizeof tile)" in emulation.declare_shared("__shared__ float tile[4][5];")
    with pytest.raises(emulation.EmulatorError, match="one static array or scalar per declaration"):
        emulation.declare_shared("__shared__ float a[4], b[4];")
    with pytest.raises(emulation.EmulatorError, match="one static array or scalar per declaration"):
        emulation.declare_shared("extern __shared__ float dynamic[];")


@pytest.mark.skipif(not emulation.compiler() or not emulation.has_pattern_init(emulation.compiler()),
                    reason="the compiler lacks -ftrivial-auto-var-init=pattern (GCC >= 12)")
def test_uninitialised_accumulator_is_caught(toy):
    x, y = np.ones(10), np.zeros(1)
    toy("accumulate", (1, 1, 1), (1, 1, 1), x, y, np.int32(10))
    assert y[0] == 10
    toy("accumulate_uninitialised", (1, 1, 1), (1, 1, 1), x, y, np.int32(10))
    assert abs(y[0]) > 1e300  # the stack pattern (0xFE bytes), not a lucky 0


def test_capped_grid_exposes_a_kernel_without_a_grid_stride_loop(toy):
    n = 1000
    x = np.arange(n, dtype=np.float64)
    full = launch_config("im2col", C=1, KH=1, KW=1, N=1, OH=1, OW=n)
    capped = launch_config("im2col", max_blocks=2, C=1, KH=1, KW=1, N=1, OH=1, OW=n)
    assert full.grid[0] == 4 and capped.grid[0] == 2  # 256 threads a block
    poisoned = emulation.Emulator().device().xp  # what the emulator allocates outputs with
    for launch, complete in ((full, True), (capped, False)):
        y = poisoned.empty(n)
        toy("single_pass_copy", launch.grid, launch.block, x, y, np.int32(n))
        assert np.array_equal(y, x) == complete
        assert np.isnan(y).any() != complete  # the items no thread reached stay NaN


def test_outputs_start_poisoned():
    xp = emulation.Emulator().device().xp
    assert np.isnan(xp.empty((2, 3), dtype=np.float32)).all()
    assert (xp.empty(4, dtype=np.int64) == np.iinfo(np.int64).min).all()


def test_an_edited_header_rebuilds(tmp_path):
    (tmp_path / "value.cuh").write_text("#define VALUE 1\n")
    (tmp_path / "nested.cuh").write_text('#include "value.cuh"\n')
    source = tmp_path / "uses_header.cu"
    source.write_text('#include "nested.cuh"\nextern "C" __global__ void value(double* y) { y[0] = VALUE; }\n')
    build = tmp_path / "build"

    def run():
        y = np.zeros(1)
        emulation.Emulator(build).launch("value", Launch((1, 1, 1), (1, 1, 1)), [y], np.float64, source=source,
                                         kernels=("value",))
        return y[0]
    assert run() == 1
    (tmp_path / "value.cuh").write_text("#define VALUE 2\n")  # two includes deep
    assert run() == 2


def test_check_agrees_with_the_build_without_building(tmp_path):
    """Emulator.check (g++ -fsyntax-only, what tools/mutate_kernels.py uses for the dtype its tests do not run)
    rejects what library() cannot build, for that dtype only, and leaves nothing in the cache."""
    source = tmp_path / "double_only.cu"
    source.write_text('#include "common.cuh"\nextern "C" __global__ void double_only(scalar_t* y) {\n'
                      '    static_assert(sizeof(scalar_t) == 8, "double only");\n    y[0] = 1;\n}\n')
    emu = emulation.Emulator(tmp_path / "build", source_dir=emulation.SOURCE_DIR)
    emu.check(source, np.float64, kernels=("double_only",))
    assert list((tmp_path / "build").iterdir()) == []
    for attempt in (emu.check, emu.library):
        with pytest.raises(emulation.EmulatorError, match="double only"):
            attempt(source, np.float32, kernels=("double_only",))
    emu.check("depthwise.cu", np.float32)  # a real source, its kernels found by name


def test_a_plain_global_race_is_invisible_here(toy):
    """Known blind spot (documented in README): threads switch only at barriers, so a non-atomic
    `+=` on one address never loses an update under emulation. On a GPU it would; there the
    gpu-marked kernel tests (a max-pool backward with 1089 windows on one pixel) catch it."""
    x, total = np.ones(4096), np.zeros(1)
    toy("racy_sum", (4, 1, 1), (256, 1, 1), x, total, np.int32(4096), seed=3)
    assert total[0] == 4096

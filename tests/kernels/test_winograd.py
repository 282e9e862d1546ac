"""Winograd minimal filtering (kernels/winograd.py) against PyTorch and the exact algebra."""
from fractions import Fraction

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.functional as F
from conftest import assert_close, torch_conv2d
from scratchnet.kernels import winograd

torch = pytest.importorskip("torch")

TILES = sorted(winograd.POINTS)
# float32 error bound, max |error| / max |float64 result|, per tile (docs/kernels.md's error table, from
# benchmarks/winograd.py, has the errors of the benchmark layers, and im2col's beside them)
FLOAT32_BOUND = {2: 3e-6, 4: 2e-5}


@pytest.fixture(params=["fused", "chunked"], autouse=True)
def path(request, monkeypatch):
    """Every test on both of the route's paths: the fused kernels (every layer here is narrow enough)
    and the chunked one with BLAS GEMMs (taken by every layer when FUSED_CHANNELS is 0)."""
    if request.param == "chunked":
        monkeypatch.setattr(winograd, "FUSED_CHANNELS", 0)
    else:
        monkeypatch.setattr(winograd, "FUSED_CHANNELS", 10 ** 6)
    return request.param


def torch_conv(x, w, gy, padding):
    """(y, gx, gw) from torch."""
    y, grads = torch_conv2d(x, w, padding=padding)
    return (y, *grads(gy))


def assert_like_torch(got, x, w, gy, padding):
    """Winograd's (y, gx, gw) equal torch's: shape, dtype and values (TOL)."""
    for ours, theirs, name in zip(got, torch_conv(x, w, gy, padding), ("y", "gx", "gw")):
        assert_close(ours, theirs, what=name)


def winograd_conv(x, w, gy, padding, tile):
    return (winograd.forward(x, w, padding, tile=tile),
            winograd.backward_input(gy, w, x.shape, padding, tile=tile),
            winograd.backward_weight(gy, x, w.shape, padding, tile=tile))


def data(rng, n, c, k, h, w, padding):
    oh, ow = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    return rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, 3, 3)), rng.standard_normal((n, k, oh, ow))


@pytest.mark.parametrize("tile", TILES)
def test_matrices_are_exact_correlation(tile):
    """A^T [(G g) * (B^T d)] is the correlation of d with g, in exact arithmetic."""
    a_t, g_mat, b_t = winograd.winograd_matrices(tile, winograd.POINTS[tile])
    rng = np.random.default_rng(tile)
    for _ in range(5):
        g = [Fraction(int(v)) for v in rng.integers(-9, 10, 3)]
        d = [Fraction(int(v)) for v in rng.integers(-9, 10, tile + 2)]
        gg = [sum(row[i] * g[i] for i in range(3)) for row in g_mat]
        dd = [sum(row[i] * d[i] for i in range(tile + 2)) for row in b_t]
        y = [sum(row[p] * gg[p] * dd[p] for p in range(tile + 2)) for row in a_t]
        assert y == [sum(g[i] * d[o + i] for i in range(3)) for o in range(tile)]
    # the input and output transforms hold binary fractions only: exact in floating point
    for mat in (a_t, b_t):
        assert all(v.denominator & (v.denominator - 1) == 0 for row in mat for v in row)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 2), (1, 2), (3, 0)])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 7), (14, 14)])
@pytest.mark.parametrize("n", [1, 3])
def test_float64_equals_torch(n, hw, padding, tile, rng):
    if min(hw[0] + 2 * padding[0], hw[1] + 2 * padding[1]) < 3:
        x, w, _ = data(rng, n, 3, 4, hw[0], hw[1], (1, 1))
        with pytest.raises(ValueError, match="smaller than the 3x3 filter"):
            winograd.forward(x, w, padding, tile=tile)
        return
    x, w, gy = data(rng, n, 3, 4, hw[0], hw[1], padding)
    assert_like_torch(winograd_conv(x, w, gy, padding, tile), x, w, gy, padding)


@pytest.mark.parametrize("tile", TILES)
def test_channels_and_batch_of_any_size(tile, rng):
    x, w, gy = data(rng, 5, 17, 9, 9, 10, (1, 1))
    assert_like_torch(winograd_conv(x, w, gy, (1, 1), tile), x, w, gy, (1, 1))


@pytest.mark.parametrize("tile", TILES)
def test_float32_within_documented_bound(tile):
    """He-initialised weights, unit-variance input and gradient, as in a network."""
    rng = np.random.default_rng(1)
    n, c, k, size = 2, 64, 64, 14
    x = rng.standard_normal((n, c, size, size))
    w = rng.standard_normal((k, c, 3, 3)) * np.sqrt(2.0 / (9 * c))
    gy = rng.standard_normal((n, k, size, size))
    want = torch_conv(x, w, gy, (1, 1))
    got = winograd_conv(*(a.astype(np.float32) for a in (x, w, gy)), (1, 1), tile)
    for g, r in zip(got, want):
        assert g.dtype == np.float32
        assert np.abs(g - r).max() <= FLOAT32_BOUND[tile] * np.abs(r).max()


def test_f4_points_are_more_accurate_than_lavins(monkeypatch):
    """F(4x4)'s points 0, +-1, 1/2, -2 (Barabasz et al.) against Lavin & Gray's 0, +-1, +-2: about half the
    float32 error (0.3-0.7x for y, gx and gw on layers of 8-64 channels, either path)."""
    rng = np.random.default_rng(2)
    x, w, gy = data(rng, 2, 16, 16, 14, 14, (1, 1))
    w *= np.sqrt(2.0 / (9 * 16))  # He initialisation, as in a network

    def float32_errors():  # against the same points in float64 (exact up to rounding)
        want = winograd_conv(x, w, gy, (1, 1), 4)
        got = winograd_conv(*(a.astype(np.float32) for a in (x, w, gy)), (1, 1), 4)
        return np.array([np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got, want)])

    ours = float32_errors()
    lavin = winograd._Tile(4)
    lavin.a_t, lavin.g, lavin.b_t = (np.array(m, dtype=np.float64)
                                     for m in winograd.winograd_matrices(4, (0, 1, -1, 2, -2)))
    monkeypatch.setitem(winograd._TILES, 4, lavin)
    assert np.all(ours < 0.8 * float32_errors())


def test_non_contiguous_inputs(rng):
    x, w, gy = data(rng, 2, 3, 4, 6, 6, (1, 1))
    xf, wf, gyf = (np.asfortranarray(a) for a in (x, w, gy))
    assert_like_torch(winograd_conv(xf, wf, gyf, (1, 1), 4), x, w, gy, (1, 1))


def test_bad_arguments_raise_clear_errors(rng):
    x, w, gy = data(rng, 2, 3, 4, 6, 6, (1, 1))
    with pytest.raises(ValueError, match="only 3x3 filters"):
        winograd.forward(x, rng.standard_normal((4, 3, 5, 5)), (2, 2))
    with pytest.raises(ValueError, match="4 dims"):
        winograd.forward(x[0], w, (1, 1))
    with pytest.raises(ValueError, match="float32 or float64"):
        winograd.forward(x.astype(np.int64), w.astype(np.int64), (1, 1))
    with pytest.raises(ValueError, match="one dtype"):
        winograd.forward(x.astype(np.float32), w, (1, 1))
    with pytest.raises(ValueError, match="groups=1"):
        winograd.forward(x, w[:, :2], (1, 1))
    with pytest.raises(ValueError, match="padding"):
        winograd.forward(x, w, (-1, 1))
    with pytest.raises(ValueError, match="tile"):
        winograd.forward(x, w, (1, 1), tile=3)
    with pytest.raises(ValueError, match="does not match"):
        winograd.backward_input(gy[:, :, 1:], w, x.shape, (1, 1))
    with pytest.raises(ValueError, match="do not fit"):
        winograd.backward_weight(gy, x, (4, 3, 3, 3), (0, 0))
    with pytest.raises(ValueError, match="only 3x3 filters"):
        winograd.backward_weight(gy, x, (4, 3, 1, 1), (1, 1))
    with pytest.raises(TypeError, match="NumPy array"):
        winograd.forward(x.tolist(), w, (1, 1))


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_conv2d_winograd_route_gradcheck(padding, rng):
    """Through F.conv2d(..., conv_algo='winograd'): float64 gradcheck, and torch's numbers."""
    x = sn.tensor(rng.standard_normal((2, 3, 6, 5)), requires_grad=True)
    w = sn.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    b = sn.tensor(rng.standard_normal(4), requires_grad=True)
    assert sn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=padding, conv_algo="winograd"), [x, w, b])
    y = F.conv2d(x, w, b, padding=padding, conv_algo="winograd")
    want = torch.nn.functional.conv2d(torch.tensor(x.data), torch.tensor(w.data), torch.tensor(b.data),
                                      padding=padding).numpy()
    assert_close(y, want)


def test_default_tile_has_the_least_work(rng):
    """tile=None: F(4x4) where its tiles fit and the batch is large, F(2x2) for tiny outputs and where small
    maps at a small batch leave the filter side most of the work; same numbers either way."""
    assert [winograd.choose_tile((s, s), 64) for s in (56, 14, 7, 2, 1)] == [4, 4, 4, 2, 2]
    assert [winograd.choose_tile((s, s), 32) for s in (32, 16, 8, 7)] == [4, 4, 4, 4]  # ResNet-20; 7x7 at 32
    assert [winograd.choose_tile((s, s), 8) for s in (56, 28, 14, 7)] == [4, 4, 2, 2]  # ResNet-18 at batch 8
    assert winograd.choose_tile((7, 7), 16) == 2
    # the transforms' work, per input and output channel: it counts in narrow layers
    resnet18 = [((56, 56), (64, 64)), ((28, 28), (128, 128)), ((14, 14), (256, 256)), ((7, 7), (512, 512))]
    assert [winograd.choose_tile(size, 8, channels) for size, channels in resnet18] == [4, 4, 2, 2]
    assert [winograd.choose_tile(size, 16, channels) for size, channels in resnet18] == [4, 4, 4, 2]
    assert [winograd.choose_tile((s, s), 32, (c, c)) for s, c in ((32, 16), (16, 32), (8, 64))] == [4, 4, 4]
    densenet = [(s, s) for s in (56, 28, 14, 7)]  # 128 -> 32 at every size
    assert [winograd.choose_tile(size, 8, (128, 32)) for size in densenet] == [4, 4, 4, 2]
    assert [winograd.choose_tile(size, 16, (32, 128)) for size in densenet] == [4, 4, 4, 4]
    assert [winograd.choose_tile(size, 8) for size in densenet] == [4, 4, 2, 2]  # the GEMM and filters alone
    x, w, gy = data(rng, 2, 3, 4, 4, 4, (0, 0))
    assert_like_torch(winograd_conv(x, w, gy, (0, 0), None), x, w, gy, (0, 0))


@pytest.mark.parametrize("tile", TILES)
def test_chunks_of_tile_rows_give_the_same_numbers(tile, monkeypatch, rng):
    """Tile rows processed a chunk at a time (here one row per chunk, the last chunk shorter)."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    assert winograd._chunks(5, 8, 3, winograd._TILES[tile], 8) == [(r, 1) for r in range(5)]
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 4 * 2 * 36 * 4 * 14 * 8)  # 4 channels: narrow, a quarter of it
    assert winograd._chunks(5, 14, 4, winograd._TILES[4], 8) == [(0, 2), (2, 2), (4, 1)]
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 4 * 36 * 32 * 14 * 8)  # a narrow layer's quarter: one 32-channel row
    assert winograd._chunks(5, 14, 32, winograd._TILES[4], 8) == [(r, 1) for r in range(5)]
    assert winograd._chunks(5, 14, 33, winograd._TILES[4], 8) == [(0, 3), (3, 2)]  # wide: the whole budget, 3 rows
    x, w, gy = data(rng, 2, 3, 4, 9, 7, (1, 1))
    assert_like_torch(winograd_conv(x, w, gy, (1, 1), tile), x, w, gy, (1, 1))


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("group", [1, 2, 5])
def test_fused_blocks_of_any_size(group, tile, monkeypatch, rng):
    """Blocks of 1, 2 and 5 images over a batch of 5 (the last group shorter), odd channel counts
    (K = 9 and C = 7 are not multiples of the GEMM's four filters and four channels)."""
    monkeypatch.setattr(winograd, "_group", lambda *args: group)
    x, w, gy = data(rng, 5, 7, 9, 9, 10, (1, 1))
    assert_like_torch(winograd_conv(x, w, gy, (1, 1), tile), x, w, gy, (1, 1))


def test_fused_group_fills_the_block_and_keeps_every_thread_busy():
    tile = winograd._TILES[4]
    assert winograd._group(128, 8, 8, 16, tile, 4) == winograd.FUSED_TILES // 8  # ResNet-20's 16 @32: 128 tiles
    assert winograd._group(32, 8, 8, 16, tile, 4) == 16  # 2 groups x 8 tile rows = MIN_BLOCKS
    assert winograd._group(4, 1, 1, 16, tile, 4) == 1  # fewer blocks than MIN_BLOCKS: one image each
    assert winograd._group(3, 2, 2, 2000, tile, 8) == 1  # wider than the budget: one image


def test_weight_gradient_does_not_depend_on_the_thread_count(rng):
    """Bit-identical at 1 and 2 threads: the fused path sums its blocks in order, the chunked one its chunks."""
    x, w, gy = (a.astype(np.float32) for a in data(rng, 8, 16, 16, 12, 12, (1, 1)))
    before = sn.get_num_threads()
    try:
        sn.set_num_threads(1)
        one = winograd.backward_weight(gy, x, w.shape, (1, 1))
        sn.set_num_threads(2)
        two = winograd.backward_weight(gy, x, w.shape, (1, 1))
    finally:
        sn.set_num_threads(before)
    assert np.array_equal(one, two)

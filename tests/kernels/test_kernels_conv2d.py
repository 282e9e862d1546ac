"""Every route of conv2d's table (scratchnet/functional/conv_routes.py) against torch and by a
float64 gradient check, each on the shapes it handles; what 'auto' picks; the global default.

A route is asked for by name (conv_algo=...) and the test checks, through the output's
creator, that the call really took it, so a table change that silently reroutes fails here.
"""
import math
import threading

import numpy as np
import pytest
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.functional as F
from conftest import compare_with_torch, tol_for_sums
from scratchnet import kernels
from scratchnet.functional import conv, conv_routes
from scratchnet.functional.conv_routes import ROUTES, Call, Geometry, choose_for

# (x shape, weight shape, options)
CASES = {
    "dense": ((2, 3, 6, 5), (4, 3, 3, 3), dict(stride=1, padding=1)),
    "dense-strided-dilated": ((3, 2, 9, 8), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    "grouped": ((1, 4, 7, 6), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    "depthwise": ((2, 3, 6, 7), (3, 1, 3, 3), dict(stride=1, padding=1, groups=3)),
    "depthwise-m2": ((1, 2, 9, 8), (4, 1, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
    "same-even": ((1, 2, 5, 6), (3, 2, 2, 4), dict(padding="same")),
    "depthwise-same-even": ((1, 3, 5, 4), (3, 1, 4, 2), dict(padding="same", groups=3)),
    "1x1": ((2, 5, 4, 3), (3, 5, 1, 1), dict()),
    "1x1-stride2": ((3, 4, 7, 6), (5, 4, 1, 1), dict(stride=2)),
    "1x1-stride-2x1-grouped": ((2, 4, 5, 5), (6, 2, 1, 1), dict(stride=(2, 1), groups=2)),
    "1x1-wide-small-map": ((3, 8, 1, 2), (9, 8, 1, 1), dict()),  # gemm1x1's weight gradient as one GEMM
    "1x1-wide-small-map-stride2": ((2, 8, 3, 3), (9, 8, 1, 1), dict(stride=2)),
    "3x3-pad0": ((1, 3, 7, 9), (2, 3, 3, 3), dict(padding=0)),
    "3x3-pad2-odd": ((3, 4, 5, 6), (5, 4, 3, 3), dict(padding=2)),
    "3x3-pad-1x0": ((2, 2, 10, 4), (3, 2, 3, 3), dict(padding=(1, 0))),
    "whole-window": ((3, 4, 5, 6), (7, 4, 5, 6), dict(stride=2)),  # LeNet's C5: a fully connected layer
    "one-window-padded": ((2, 3, 3, 3), (4, 3, 5, 5), dict(padding=1)),
    "single-channel": ((3, 1, 9, 8), (4, 1, 5, 5), dict(padding=(2, 1))),  # LeNet's C1: depthwise, multiplier 4
    "single-channel-strided": ((2, 1, 9, 10), (3, 1, 3, 2), dict(stride=(2, 3), padding=1, dilation=(1, 2))),
}


def _call(case, device, dtype):
    """The Call the table sees for this case (the geometry as conv2d's wrapper builds it)."""
    x_shape, w_shape, options = CASES[case]
    stride, padding, dilation, _ = conv.validate.conv2d_args(
        "conv2d", options.get("stride", 1), options.get("padding", 0), options.get("dilation", 1),
        options.get("groups", 1))
    same = padding == "same"
    padding = conv._resolve_padding(padding, w_shape[2:], dilation)
    out_hw = tuple(x_shape[2:]) if same else tuple(
        conv.conv_output_size(x_shape[2 + a], w_shape[2 + a], stride[a], padding[a], dilation[a]) for a in range(2))
    geo = Geometry(stride, padding, dilation, options.get("groups", 1), out_hw)
    return Call(device, np.dtype(dtype), x_shape, w_shape, geo)


# every (route, case) where the route handles the case on at least one device
PAIRS = [(route, case) for route in ROUTES for case in CASES
         if any(conv_routes.fits(route, _call(case, device, np.float64)) for device in ROUTES[route].devices)]


def _tensors(x_shape, w_shape, dtype, rng, device="cpu"):
    arrays = [rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1])]
    return [sn.tensor(a, requires_grad=True, device=device) for a in arrays]


def _needs(route, case, device, dtype=np.float64):
    if not conv_routes.fits(route, _call(case, device, dtype)):
        pytest.skip(f"route {route!r} does not run on {device} for {np.dtype(dtype).name} (see ROUTES)")


def _tolerance(route, case, dtype):
    """TOL, its atol widened by tol_for_sums for the input gradient: an entry of gx adds up to
    C_out / groups * (taps of the kernel landing on one pixel) products, 100 in LeNet's C1 case,
    where float32 lands 3.9e-6 from torch."""
    if route == "winograd" and dtype == np.float32:  # F(4x4, 3x3) rounds through larger transform coefficients
        return dict(rtol=1e-4, atol=1e-4)           # (docs/kernels.md, Winograd)
    w_shape, geo = CASES[case][1], _call(case, "cpu", dtype).geo
    taps = [-(-w_shape[2 + a] * math.gcd(geo.stride[a], geo.dilation[a]) // geo.stride[a]) for a in range(2)]
    return tol_for_sums(dtype, w_shape[0] // geo.groups * taps[0] * taps[1])


def test_every_route_is_covered():
    for route in ROUTES:
        assert any(r == route for r, _ in PAIRS), f"no case exercises route {route!r}"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note on its copy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("route,case", PAIRS, ids=[f"{r}-{c}" for r, c in PAIRS])
def test_every_route_matches_torch(route, case, dtype, device, compare, rng):
    _needs(route, case, device, dtype)
    x_shape, w_shape, options = CASES[case]
    taken = []

    def conv(x, w, b):
        y = F.conv2d(x, w, b, conv_algo=route, **options)
        taken.append(y.creator.route)  # read now: backward frees the graph
        return y
    inputs = [rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1])]
    compare(conv, lambda x, w, b: TF.conv2d(x, w, b, **options), inputs, tol=_tolerance(route, case, dtype))
    assert taken == [route]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("route,case", PAIRS, ids=[f"{r}-{c}" for r, c in PAIRS])
def test_every_route_gradchecks(route, case, device, rng):
    _needs(route, case, device)
    x_shape, w_shape, options = CASES[case]
    x, w, b = _tensors(x_shape, w_shape, np.float64, rng, device)
    assert sn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, conv_algo=route, **options), [x, w, b])


@pytest.mark.parametrize("route,case", [("reference", "grouped"), ("im2col", "grouped"), ("gemm1x1", "1x1-stride2"),
                                        ("winograd", "3x3-pad2-odd"), ("depthwise", "depthwise-m2"),
                                        ("window", "whole-window"), ("depthwise", "single-channel")])
def test_conv_transpose2d_takes_the_same_routes(route, case, rng):
    """conv_transpose2d is conv2d's input gradient: every route serves it (float64, vs torch)."""
    _needs(route, case, "cpu")
    y_shape, w_shape, options = CASES[case]  # the transposed conv maps conv2d's output back to y_shape
    options = {k: v for k, v in options.items() if k != "padding"} | {"padding": conv.pair(options.get("padding", 0))}
    probe = F.conv2d(sn.tensor(np.zeros(y_shape)), sn.tensor(np.zeros(w_shape)), **options)
    x, w = rng.standard_normal(probe.shape), rng.standard_normal(w_shape)
    stride, dilation = conv.pair(options.get("stride", 1)), conv.pair(options.get("dilation", 1))
    output_padding = tuple((y_shape[2 + a] - conv_output_size_back(probe.shape[2 + a], w_shape[2 + a], stride[a],
                                                                     options["padding"][a], dilation[a]))
                           for a in range(2))
    torch_options = dict(stride=stride, padding=options["padding"], output_padding=output_padding,
                         groups=options.get("groups", 1), dilation=dilation)
    previous = conv.get_conv_algo()
    try:
        conv.set_conv_algo(route)
        taken = []

        def transposed(x, w):
            y = F.conv_transpose2d(x, w, **torch_options)
            taken.append(y.creator.route)  # read now: backward frees the graph
            return y
        run = compare_with_torch(transposed, lambda x, w: TF.conv_transpose2d(x, w, **torch_options), [x, w])
        assert taken == [route] and run.y.shape == y_shape
        assert sn.gradcheck(lambda x, w: F.conv_transpose2d(x, w, **torch_options), run.ours)
    finally:
        conv.set_conv_algo(previous)


def conv_output_size_back(size, kernel, stride, padding, dilation):
    """conv_transpose2d's output size without output_padding."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1


COLUMN_BYTES_PER_IMAGE = 4 * 3 * 3 * 6 * 3 * 8  # the case below: C * kh * kw * oh * ow * float64


@pytest.fixture
def threads():
    """Set the thread count inside a test (sn.set_num_threads), the previous one restored after it."""
    before = sn.get_num_threads()
    yield sn.set_num_threads
    sn.set_num_threads(before)


@pytest.mark.parametrize("count", [1, 2], ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * COLUMN_BYTES_PER_IMAGE, 10**9],
                         ids=["one-image", "two-images", "whole-batch"])
def test_im2col_batch_chunks(chunk_bytes, count, threads, monkeypatch, rng):
    """The im2col route gives torch's numbers whatever the chunk (one image, a few, all at once) and however
    many threads share the chunks."""
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", chunk_bytes)
    threads(count)
    x_shape, w_shape, options = (5, 4, 6, 5), (6, 2, 3, 3), dict(stride=(1, 2), padding=1, groups=2)
    assert len(conv_routes._chunks(5, COLUMN_BYTES_PER_IMAGE, chunk_bytes)) == {1: 5, 10**9: 1}.get(chunk_bytes, 3)
    inputs = [rng.standard_normal(s) for s in (x_shape, w_shape, w_shape[:1])]
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, conv_algo="im2col", **options),
                       lambda x, w, b: TF.conv2d(x, w, b, **options), inputs)


def _im2col_route(x, w, gy, geo):
    """The im2col route's forward, both gradients in one pass, and each gradient alone."""
    return ((conv_routes.Im2col.forward(x, w, geo),) + conv_routes.Im2col.backward(gy, x, w, geo)
            + (conv_routes.Im2col.backward_input(gy, w, x.shape, geo),
               conv_routes.Im2col.backward_weight(gy, x, w.shape, geo)))


def _spy_on_chunk_kernels(monkeypatch, can_run=True):
    """[(name, thread)] of every call of the CPU chunk kernels (kernels/cpu.py's im2col_chunks_*) and of the pool's
    one-thread kernels; can_run=False: the chunk kernels answer None ("cannot run here") instead of running."""
    calls, cpu = [], kernels.for_device("cpu")
    for name in ("im2col_chunks_forward", "im2col_chunks_backward", "im2col_one_thread", "col2im_one_thread"):
        kernel = getattr(cpu, name)
        runs = can_run or not name.startswith("im2col_chunks")
        monkeypatch.setattr(cpu, name, lambda *a, _k=kernel, _n=name, _runs=runs: calls.append(
            (_n, threading.get_ident())) or (_k(*a) if _runs else None))
    return calls


def test_im2col_chunks_shared_between_threads_give_the_same_numbers(threads, monkeypatch, rng):
    """On two threads the chunks run on Numba's threads (kernels/cpu.py's im2col_chunks_*, one call for the
    forward and one per backward pass), and the output and both gradients are the one-thread numbers bit for
    bit: the chunks depend on the shapes only and the weight gradient sums them in order."""
    x = rng.standard_normal((9, 3, 11, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((9, 8, 6, 6)).astype(np.float32)
    geo = conv_routes.Geometry((2, 2), (1, 1), (1, 1), 1, (6, 6))
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 2 * 3 * 9 * 36 * 4)  # two images a chunk: 5 chunks
    calls = _spy_on_chunk_kernels(monkeypatch)
    results = {}
    for count in (1, 2):
        threads(count)
        calls.clear()
        results[count] = _im2col_route(x, w, gy, geo)
        if count == 1:  # the parallel kernels, one chunk at a time
            assert calls == []
        else:
            assert [name for name, _ in calls] == ["im2col_chunks_forward"] + ["im2col_chunks_backward"] * 3
    for one, two in zip(results[1], results[2]):
        np.testing.assert_array_equal(one, two)
    gradients = (conv_routes.Reference.backward_input(gy, w, x.shape, geo),
                 conv_routes.Reference.backward_weight(gy, x, w.shape, geo))
    reference = (conv_routes.Reference.forward(x, w, geo),) + gradients + gradients
    for ours, expected in zip(results[2], reference):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["dense", "dense-strided-dilated", "grouped", "3x3-pad2-odd", "whole-window",
                                  "single-channel-strided"])
@pytest.mark.parametrize("images", [1, 2, 3], ids=["one-image", "two-images", "three-images"])
def test_im2col_chunks_on_numba_threads_are_the_pool_routes_numbers(images, case, dtype, threads, monkeypatch, rng):
    """The chunks on Numba's threads give the numbers of the same chunks on backend/blas.py's pool (each chunk
    np.matmul and the one-thread kernels) bit for bit, whatever the chunk, dtype, stride, dilation and groups."""
    threads(2)
    x_shape, w_shape, _ = CASES[case]
    x_shape = (12,) + x_shape[1:]  # (an even number of even chunks: one, two or three images)
    geo = _call(case, "cpu", dtype).geo
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal((12, w_shape[0]) + geo.out_hw).astype(dtype)
    per_image = x_shape[1] * math.prod(w_shape[2:]) * math.prod(geo.out_hw) * x.itemsize
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", images * per_image)
    calls = _spy_on_chunk_kernels(monkeypatch)
    on_numba = _im2col_route(x, w, gy, geo)
    vector = images * math.prod(geo.out_hw) < 2  # a chunk's GEMMs would be matrix-vector products: the pool's
    assert {name for name, _ in calls} == {"im2col_chunks_forward", "im2col_chunks_backward"} | (
        {"im2col_one_thread", "col2im_one_thread"} if vector else set())
    monkeypatch.undo()
    threads(2)
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", images * per_image)
    calls = _spy_on_chunk_kernels(monkeypatch, can_run=False)
    on_pool = _im2col_route(x, w, gy, geo)
    assert {name for name, _ in calls} == {"im2col_chunks_forward", "im2col_chunks_backward", "im2col_one_thread",
                                           "col2im_one_thread"}
    for numba, pool in zip(on_numba, on_pool):
        assert numba.dtype == dtype
        np.testing.assert_array_equal(numba, pool)


def test_im2col_chunks_leave_what_numpy_would_not_multiply_by_gemm_to_the_pool(threads, monkeypatch, rng):
    """A GEMM with a side of one is NumPy's matrix-vector product (another BLAS call, other numbers), NumPy's BLAS
    may not be its bundled OpenBLAS, and a first run may still be compiling the kernels: the pool route runs
    then (the same numbers as ever) and, in the last case, the kernels are noted as wanted."""
    from scratchnet.kernels import cpu, cpu_gemm, dispatch
    threads(2)
    x = rng.standard_normal((4, 2, 5, 5))
    one_out = rng.standard_normal((1, 2, 3, 3))  # C_out/g = 1
    geo = conv_routes.Geometry((1, 1), (0, 0), (1, 1), 1, (3, 3))
    starts = np.array([0, 2, 4])
    assert cpu.im2col_chunks_forward(x, one_out.reshape(1, 1, 18), (3, 3), starts, 2, (1, 1), (0, 0), (1, 1),
                                     (3, 3)) is None
    np.testing.assert_array_equal(conv_routes.Im2col.forward(x, one_out, geo), conv_routes.Reference.forward(
        x, one_out, geo))
    w = rng.standard_normal((3, 2, 3, 3))
    w_groups = w.reshape(1, 3, 18)
    assert cpu.im2col_chunks_forward(x, w_groups, (3, 3), starts, 2, (1, 1), (0, 0), (1, 1), (3, 3)) is not None
    monkeypatch.setitem(cpu_gemm._found, "addresses", {})  # NumPy built against another BLAS
    assert cpu.im2col_chunks_forward(x, w_groups, (3, 3), starts, 2, (1, 1), (0, 0), (1, 1), (3, 3)) is None
    assert cpu.im2col_chunks_backward(rng.standard_normal((4, 3, 3, 3)), x, None, x.shape, w.shape, 1, starts, 2,
                                      (1, 1), (0, 0), (1, 1)) is None
    monkeypatch.undo()
    threads(2)
    dispatch.defer_cpu_kernels(["im2col_chunks_forward", "im2col_chunks_backward"])
    try:
        assert cpu.im2col_chunks_forward(x, w_groups, (3, 3), starts, 2, (1, 1), (0, 0), (1, 1), (3, 3)) is None
        assert dispatch.wanted_cpu_kernels(np.float64) == ["im2col_chunks_forward"]
    finally:
        dispatch.defer_cpu_kernels(())
    assert cpu.im2col_chunks_forward(x, w_groups, (3, 3), starts, 2, (1, 1), (0, 0), (1, 1), (3, 3)) is not None


@pytest.mark.parametrize("count", [1, 2], ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("case", ["dense", "dense-strided-dilated", "grouped", "3x3-pad2-odd", "empty-batch"])
def test_im2col_computes_both_gradients_in_one_pass(case, count, threads, monkeypatch, rng):
    """Where conv2d needs both gradients, the im2col route computes them in one pass over the chunks (each
    chunk's gy gathered once): the numbers of backward_input and backward_weight, bit for bit, on one thread and
    on two; conv2d takes that pass, and a weight larger than a chunk's columns keeps a pass for each."""
    threads(count)
    x_shape, w_shape, options = CASES["dense" if case == "empty-batch" else case]
    if case == "empty-batch":
        x_shape = (0,) + x_shape[1:]
    geo = _call("dense" if case == "empty-batch" else case, "cpu", np.float32).geo
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geo.out_hw).astype(np.float32)
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 4 * math.prod(w_shape))  # several chunks a batch
    gx, gw = conv_routes.Im2col.backward(gy, x, w, geo)
    np.testing.assert_array_equal(gx, conv_routes.Im2col.backward_input(gy, w, x.shape, geo))
    np.testing.assert_array_equal(gw, conv_routes.Im2col.backward_weight(gy, x, w.shape, geo))
    passes = []
    monkeypatch.setattr(conv_routes, "_plan_chunks", lambda *a, _plan=conv_routes._plan_chunks: passes.append(1) or
                        _plan(*a))
    xt, wt = sn.tensor(x, requires_grad=True), sn.tensor(w, requires_grad=True)
    F.conv2d(xt, wt, conv_algo="im2col", **options).backward(sn.tensor(gy))
    assert len(passes) == 2  # the forward's and one for both gradients
    np.testing.assert_array_equal(xt.grad.numpy(), gx)
    np.testing.assert_array_equal(wt.grad.numpy(), gw)
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 4 * math.prod(w_shape) - 1)  # the weight is larger
    passes.clear()
    gx_apart, gw_apart = conv_routes.Im2col.backward(gy, x, w, geo)
    assert len(passes) == 2  # a pass for each gradient
    np.testing.assert_array_equal(gx_apart, conv_routes.Im2col.backward_input(gy, w, x.shape, geo))
    np.testing.assert_array_equal(gw_apart, conv_routes.Im2col.backward_weight(gy, x, w.shape, geo))


def _spy_on_column_builds(monkeypatch):
    """Every chunk whose columns are built (the chunk kernels' backward, by its ``columns`` argument, None: built
    again from x; the pool's one-thread and whole-thread im2col kernels, each call one chunk): a list of names."""
    built, cpu = [], kernels.for_device("cpu")
    backward = cpu.im2col_chunks_backward
    monkeypatch.setattr(cpu, "im2col_chunks_backward", lambda *a, _k=backward: built.append(
        "chunks_backward" if a[11] is None else "chunks_backward_on_kept") or _k(*a))
    for name in ("im2col", "im2col_one_thread"):
        monkeypatch.setattr(cpu, name, lambda *a, _k=getattr(cpu, name), _n=name: built.append(_n) or _k(*a))
    return built


@pytest.mark.parametrize("count", [1, 2], ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["dense", "dense-strided-dilated", "grouped", "3x3-pad2-odd",
                                  "single-channel-strided"])
def test_im2col_keeps_a_small_layers_columns_for_the_weight_gradient(case, dtype, count, threads, monkeypatch, rng):
    """Where the weight needs a gradient and the batch's columns fit KEEP_COLUMN_BYTES, conv2d's im2col route
    keeps each chunk's columns from the forward (exactly im2col's of that chunk: on two threads from the chunk
    kernels, on one from the pool's chunks) and the weight gradient multiplies them instead of building them
    again: the output and both gradients are those of a run that keeps nothing, bit for bit, with the input's
    gradient or without it."""
    threads(count)
    x_shape, w_shape, options = CASES[case]
    x_shape = (12,) + x_shape[1:]
    geo = _call(case, "cpu", dtype).geo
    x_data, w_data = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal((12, w_shape[0]) + geo.out_hw).astype(dtype)
    per_image = x_shape[1] * math.prod(w_shape[2:]) * math.prod(geo.out_hw) * x_data.itemsize
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 2 * per_image)  # six chunks of two images
    built = _spy_on_column_builds(monkeypatch)
    starts = conv_routes._starts(conv_routes._chunks(12, per_image, 2 * per_image))
    results = {}
    for limit in (12 * per_image, 12 * per_image - 1):  # the batch's columns fit, and do not
        monkeypatch.setattr(conv_routes, "KEEP_COLUMN_BYTES", limit)
        for input_gradient in (True, False):
            x, w = sn.tensor(x_data, requires_grad=input_gradient), sn.tensor(w_data, requires_grad=True)
            y = F.conv2d(x, w, conv_algo="im2col", **options)
            kept = y.creator.kept
            if limit == 12 * per_image:
                np.testing.assert_array_equal(kept.starts, starts)
                for index, (lo, hi) in enumerate(zip(starts[:-1], starts[1:])):
                    columns = kernels.for_device("cpu").im2col(x_data[lo:hi], w_shape[2:], geo.stride, geo.padding,
                                                               geo.dilation, geo.out_hw)
                    np.testing.assert_array_equal(np.ravel(kept.columns[index])[:columns.size], columns.reshape(-1))
            else:
                assert kept is None
            built.clear()
            y.backward(sn.tensor(gy))
            if count == 2:  # one pass of the chunk kernels, on the kept columns where there are
                assert built == ["chunks_backward_on_kept" if kept else "chunks_backward"]
            else:  # the pool's chunks, each built again where none are kept
                assert built == ([] if kept else ["im2col"] * 6)
            results[limit, input_gradient] = (y.numpy(), w.grad.numpy()) + ((x.grad.numpy(),) if input_gradient
                                                                            else ())
    for input_gradient in (True, False):
        for kept_run, built_run in zip(results[12 * per_image, input_gradient],
                                       results[12 * per_image - 1, input_gradient]):
            np.testing.assert_array_equal(kept_run, built_run)


def test_im2col_keeps_columns_only_where_the_weight_gradient_reads_them(threads, monkeypatch, rng):
    """No columns kept where the weight needs no gradient or autograd is off, or where the weight gradient
    takes chunks of its own (a weight larger than an image's columns); columns kept for other chunks than the
    backward's, or kept on one thread and read on two, are built again (the same numbers)."""
    x_data, w_data = rng.standard_normal((8, 6, 14, 14)), rng.standard_normal((16, 6, 5, 5))  # LeNet's C3
    threads(2)
    x_shape, w_shape, options = CASES["whole-window"]  # a weight larger than an image's columns
    with monkeypatch.context() as patch:
        patch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 2 * math.prod(w_shape[1:]) * 8)  # two images' columns
        y = F.conv2d(sn.tensor(rng.standard_normal((8,) + x_shape[1:])),
                     sn.tensor(rng.standard_normal(w_shape), requires_grad=True), conv_algo="im2col", **options)
        assert y.creator.kept is None
    w_fixed = sn.tensor(w_data)
    assert F.conv2d(sn.tensor(x_data, requires_grad=True), w_fixed, conv_algo="im2col").creator.kept is None
    with sn.no_grad():
        assert F.conv2d(sn.tensor(x_data), sn.tensor(w_data, requires_grad=True), conv_algo="im2col").creator is None
    y = F.conv2d(sn.tensor(x_data), sn.tensor(w_data, requires_grad=True), conv_algo="im2col")
    assert y.creator.kept is not None
    other = conv_routes.Kept(y.creator.kept.starts[:-1], y.creator.kept.columns)  # chunks that are not these
    gy = rng.standard_normal(y.shape)
    geo = y.creator.geo
    expected = conv_routes.Im2col.backward_weight(gy, x_data, w_data.shape, geo)
    np.testing.assert_array_equal(conv_routes.Im2col.backward_weight(gy, x_data, w_data.shape, geo, other), expected)
    threads(1)
    on_one = F.conv2d(sn.tensor(x_data), sn.tensor(w_data, requires_grad=True), conv_algo="im2col").creator.kept
    assert isinstance(on_one.columns, list)  # the pool's chunks' own arrays
    threads(2)
    built = _spy_on_column_builds(monkeypatch)
    np.testing.assert_array_equal(conv_routes.Im2col.backward_weight(gy, x_data, w_data.shape, geo, on_one), expected)
    assert built == ["chunks_backward"]


@pytest.mark.parametrize("count", [1, 2], ids=["1-thread", "2-threads"])
def test_im2col_with_kept_columns_gradchecks(count, threads, monkeypatch, rng):
    """A float64 numeric gradient check of conv2d through the kept columns, four chunks of one image."""
    threads(count)
    x, w = rng.standard_normal((4, 2, 6, 5)), rng.standard_normal((4, 2, 3, 2))
    monkeypatch.setattr(conv_routes, "THREAD_COLUMN_BYTES", 2 * 3 * 2 * 4 * 4 * 8)  # one image's columns
    y = F.conv2d(sn.tensor(x), sn.tensor(w, requires_grad=True), conv_algo="im2col")
    assert y.creator.kept is not None and len(y.creator.kept.starts) == 5  # four chunks, kept
    assert sn.gradcheck(lambda x, w: F.conv2d(x, w, conv_algo="im2col"),
                        [sn.tensor(x, requires_grad=True), sn.tensor(w, requires_grad=True)])


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (64, 16, 10, 10), (1, 2, 1, 1), (0, 3, 4, 4), (2, 3, 0, 0)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bias_gradient_sums_batch_and_pixels(shape, dtype, threads, rng):
    """conv2d's bias gradient (one GEMV, or NumPy's sum in float16): the sum of gy over the batch and the
    pixels, per channel, in gy's dtype; the same numbers on one thread as on two."""
    gy = rng.standard_normal(shape).astype(dtype)
    results = []
    for count in (1, 2):
        threads(count)
        results.append(conv.bias_gradient(gy))
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].dtype == dtype and results[0].shape == shape[1:2]
    if dtype == np.float16:  # NumPy's own sum, unchanged
        np.testing.assert_array_equal(results[0], gy.sum(axis=(0, 2, 3)))
        return
    expected = gy.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(results[0], expected, **tol_for_sums(dtype, max(1, shape[0] * shape[2] * shape[3])))


# what 'auto' picks, per device and dtype (the AUTO rules in conv_routes.py)
AUTO_PICKS = [
    ("cpu", np.float32, "depthwise", "depthwise"),
    ("cpu", np.float32, "single-channel", "depthwise"),
    ("cpu", np.float64, "single-channel-strided", "depthwise"),
    ("gpu", np.float32, "single-channel", "im2col"),  # not measured on a GPU: stays on im2col there
    ("cpu", np.float32, "whole-window", "window"),
    ("gpu", np.float64, "whole-window", "window"),
    ("cpu", np.float32, "one-window-padded", "im2col"),  # one window, but padded: not the input as it is
    ("cpu", np.float64, "1x1", "gemm1x1"),
    ("cpu", np.float32, "1x1-stride2", "gemm1x1"),
    ("cpu", np.float32, "dense-strided-dilated", "im2col"),
    ("cpu", np.float32, "grouped", "im2col"),
    ("cpu", np.float16, "dense", "reference"),
    ("gpu", np.float32, "depthwise", "depthwise"),
    ("gpu", np.float32, "grouped", "im2col"),
]


@pytest.mark.parametrize("device,dtype,case,route", AUTO_PICKS)
def test_auto_picks(device, dtype, case, route):
    assert choose_for("auto", _call(case, device, dtype)) == route


def _wide_3x3(channels, device="cpu", dtype=np.float32):
    geo = Geometry((1, 1), (1, 1), (1, 1), 1, (14, 14))
    return Call(device, np.dtype(dtype), (8, channels, 14, 14), (channels, channels, 3, 3), geo)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_picks_winograd_for_wide_3x3(dtype):
    wide, narrow = conv_routes.WINOGRAD_MIN_CHANNELS, conv_routes.WINOGRAD_MIN_CHANNELS - 1
    assert choose_for("auto", _wide_3x3(wide, dtype=dtype)) == "winograd"
    assert choose_for("auto", _wide_3x3(narrow, dtype=dtype)) == "im2col"
    assert choose_for("auto", _wide_3x3(wide, device="gpu")) == "im2col"  # Winograd is a CPU route
    assert choose_for("winograd", _wide_3x3(narrow)) == "winograd"  # asked for by name it fits any width


def test_auto_picks_every_route_somewhere():
    """All but 'direct': the tiled CUDA conv is asked for by name until a GPU benchmark shows it beating cuBLAS."""
    calls = [_call(case, device, dtype) for case in CASES for device in ("cpu", "gpu")
             for dtype in (np.float16, np.float32)] + [_wide_3x3(64)]
    picked = {choose_for("auto", call) for call in calls}
    assert picked == set(ROUTES) - {"direct"}


def test_a_route_that_does_not_fit_falls_back_to_auto():
    call = _call("dense-strided-dilated", "cpu", np.float32)
    assert choose_for("gemm1x1", call) == choose_for("winograd", call) == choose_for("direct", call) == "im2col"
    assert choose_for("reference", _call("1x1", "cpu", np.float32)) == "reference"


def test_global_default_and_bad_names(rng):
    x, w, _ = _tensors((1, 2, 4, 4), (2, 1, 3, 3), np.float64, rng)
    expected = F.conv2d(x, w, groups=2, conv_algo="reference").numpy()
    previous = conv.get_conv_algo()
    try:
        for algo in conv_routes.CONV_ALGOS:
            conv.set_conv_algo(algo)
            assert conv.get_conv_algo() == algo
            y = F.conv2d(x, w, groups=2)
            assert y.creator.route == choose_for(algo, Call("cpu", np.dtype(np.float64), x.shape, w.shape,
                                                           y.creator.geo))
            np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    finally:
        conv.set_conv_algo(previous)
    with pytest.raises(ValueError, match="conv_algo must be one of"):
        conv.set_conv_algo("fft")
    with pytest.raises(ValueError, match="conv_algo must be one of"):
        F.conv2d(x, w, groups=2, conv_algo="fft")

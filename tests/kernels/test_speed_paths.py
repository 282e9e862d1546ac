"""The CPU fast paths run where they should, and give the numbers of the array code they stand in for.

ReLU, sigmoid, SiLU, local response norm, max-pool, batch norm, the SGD step and deformable convolution's
im2col run as Numba kernels on the CPU for float32 and float64 (their tables: kernels/routes.py,
functional/deform_routes.py);
float16 (and the GPU, except max-pool and deformable convolution) runs the array code, the reference
route. Every case asserts the route its calls took, twice over: the dispatch's count per
route (kernels/dispatch.py's recording) and a spy on kernels/cpu.py's function itself, so a fast path
lost from a table, or skipped by the op that chose it, fails a test. The array code (forced with
dispatch.reference_only) is checked against torch, and the fused SGD step against it bit for bit.
"""
import contextlib
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
from scratchnet import functional as F
from scratchnet import nn, optim
from scratchnet.kernels import cpu, dispatch, routes
from conftest import SGD_CONFIGS, assert_close, assert_within_scale

SPECIAL = [-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, np.inf, np.nan]

# (dtype, the route it takes): the kernels are built for float32 and float64; float16 is the array code
ROUTE_CASES = [pytest.param(np.float32, "kernel", id="float32-kernel"),
               pytest.param(np.float64, "kernel", id="float64-kernel"),
               pytest.param(np.float16, "reference", id="float16-array_code")]
FORCED = [pytest.param(False, id="auto"), pytest.param(True, id="reference_only")]


@pytest.fixture
def spy(monkeypatch):
    """spy(*names) wraps those functions of kernels/cpu.py so each call is counted; returns the Counter."""
    calls = Counter()

    def install(*names):
        for name in names:
            def counting(*args, _kernel=getattr(cpu, name), _name=name, **kwargs):
                calls[_name] += 1
                return _kernel(*args, **kwargs)
            monkeypatch.setattr(cpu, name, counting)
        return calls
    return install


def run(forced):
    """The block runs with the reference route forced (dispatch.reference_only) or with each op's own choice."""
    return dispatch.reference_only() if forced else contextlib.nullcontext()


@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
def test_relu_takes_its_route_and_matches_torch_on_special_values(dtype, route, forced, rng, spy):
    """NaN stays NaN, -inf becomes 0, and the gradient flows where the input was > 0 or NaN (torch's rule),
    on the Numba kernel and on the array code (the GPU's, and float16's)."""
    route = "reference" if forced else route
    calls = spy("relu_forward", "relu_backward")
    x = np.concatenate([np.array(SPECIAL), rng.standard_normal(23)]).astype(dtype).reshape(4, 8)
    t, tt = sn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    gy = rng.standard_normal(x.shape).astype(dtype)
    with run(forced), dispatch.recording() as taken:
        y = F.relu(t)
        y.backward(gy)
    torch.relu(tt).backward(torch.tensor(gy))
    np.testing.assert_array_equal(y.numpy(), torch.relu(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(t.grad, tt.grad.numpy())
    assert taken == {("relu", route): 1}
    kernel_calls = 1 if route == "kernel" else 0
    assert calls == Counter({"relu_forward": kernel_calls, "relu_backward": kernel_calls}) - Counter()


def test_relu_kernel_takes_non_contiguous_input(rng):
    x = rng.standard_normal((6, 5, 4)).astype(np.float32).transpose(2, 0, 1)
    y, mask = cpu.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(mask, ~(x <= 0))
    gy = rng.standard_normal(x.shape).astype(np.float32).transpose(0, 2, 1).copy().transpose(0, 2, 1)
    np.testing.assert_array_equal(cpu.relu_backward(gy, mask), np.where(x > 0, gy, 0))


def _assert_plane_sums(g_gates, gy, feature_map):
    """The gates' gradient is each plane's sum of gy * x: against the float64 array code, within the rounding of
    float32's one conversion (a few units of the largest) or of a float64 sum (growing as the plane's size's
    square root)."""
    exact = (gy.astype(np.float64) * feature_map).sum(axis=tuple(range(2, gy.ndim)), keepdims=True)
    assert g_gates.shape == exact.shape and g_gates.dtype == gy.dtype
    plane = math.prod(gy.shape[2:])
    relative = 8 * float(np.finfo(gy.dtype).eps) * (math.sqrt(plane) if gy.dtype == np.float64 else 1)
    assert_within_scale(g_gates, exact, relative, what="the gates' gradient")


def _mul_grads(a, b, gy, needs):
    """(y, ga, gb) of a * b on tensors, backward with gy; ``needs``: which of a, b require grad."""
    ta, tb = (sn.tensor(v, requires_grad=need) for v, need in zip((a, b), needs))
    y = ta * tb
    y.backward(gy)
    return y.numpy(), ta.grad, tb.grad


@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
@pytest.mark.parametrize("gates_first", [False, True], ids=["map_times_gates", "gates_times_map"])
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)], ids=["both", "first", "second"])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 3, 7)], ids=["NCHW", "NCL"])
def test_mul_by_one_value_per_plane_takes_its_kernels(shape, needs, gates_first, dtype, route, forced, rng, spy):
    """A feature map times one value per plane (squeeze-excitation's gates), in either order, 4-d and 3-d: the
    kernels for float32 and float64 (the array code for float16 and under reference_only). The product and the
    map's gradient are the array code's bit for bit; the gates' gradient (each plane's sum, in float64) is the
    exact sum rounded, against the float64 array code and torch. Only the gradients asked for are computed."""
    route = "reference" if forced else route
    calls = spy("channel_scale_forward", "channel_scale_backward")
    feature_map = rng.standard_normal(shape).astype(dtype)
    gates = rng.standard_normal(shape[:2] + (1,) * (len(shape) - 2)).astype(dtype)
    a, b = (gates, feature_map) if gates_first else (feature_map, gates)
    gy = rng.standard_normal(shape).astype(dtype)
    with run(forced), dispatch.recording() as taken:
        y, ga, gb = _mul_grads(a, b, gy, needs)
    assert taken == {("mul", route): 1}
    kernel_calls = 1 if route == "kernel" else 0
    assert calls == Counter({"channel_scale_forward": kernel_calls, "channel_scale_backward": kernel_calls}) - Counter()
    np.testing.assert_array_equal(y, a * b)
    g_map, g_gates = (gb, ga) if gates_first else (ga, gb)
    map_needs, gates_needs = needs[::-1] if gates_first else needs
    assert (g_map is None) != map_needs and (g_gates is None) != gates_needs
    if map_needs:
        np.testing.assert_array_equal(g_map, gy * gates)
        assert g_map.dtype == dtype
    if gates_needs:
        _assert_plane_sums(g_gates, gy, feature_map)
        tm, tg = torch.tensor(feature_map), torch.tensor(gates, requires_grad=True)
        (tm * tg).backward(torch.tensor(gy))
        assert_within_scale(g_gates, tg.grad.numpy(), 8 * float(np.finfo(dtype).eps), what="against torch")


@pytest.mark.parametrize("gates_first", [False, True], ids=["map_times_gates", "gates_times_map"])
def test_mul_by_one_value_per_plane_gradchecks_through_the_kernels(gates_first, rng):
    """float64 numeric gradient check of both operands, where the product takes the per-plane kernels."""
    feature_map, gates = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 1, 1))
    pair = (gates, feature_map) if gates_first else (feature_map, gates)
    inputs = [sn.tensor(v, requires_grad=True) for v in pair]
    with dispatch.recording() as taken:
        assert sn.gradcheck(lambda a, b: a * b, inputs)
    assert set(taken) == {("mul", "kernel")}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mul_by_one_value_per_plane_over_blocks(dtype, rng):
    """A map of several BLOCKs goes to the threads plane by plane (kernels/cpu_scale.py): the same numbers."""
    from scratchnet.kernels.cpu_rows import BLOCK
    shape = (3, 7, BLOCK // 64 + 3, 64)  # 21 planes over 3 blocks, no block a whole number of planes
    feature_map, gates = rng.standard_normal(shape).astype(dtype), rng.standard_normal((3, 7, 1, 1)).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    y, g_map, g_gates = _mul_grads(feature_map, gates, gy, (True, True))
    np.testing.assert_array_equal(y, feature_map * gates)
    np.testing.assert_array_equal(g_map, gy * gates)
    _assert_plane_sums(g_gates, gy, feature_map)


@pytest.mark.parametrize("shapes", [((3, 5, 4, 6), (1, 5, 1, 1)), ((3, 5, 4, 6), (3, 5, 4, 6)), ((3, 5, 4, 6), ()),
                                    ((3, 5, 4, 6), (3, 5, 1, 6)), ((3, 5), (3, 5)), ((3, 5, 1, 1), (3, 5, 1, 1))],
                         ids=str)
def test_mul_takes_the_array_code_for_other_shapes(shapes, rng):
    """Broadcasting over the batch, equal shapes, a scalar, a row per plane, no planes: the array code's
    product (a (N, C, 1, 1) by (N, C, 1, 1) product has planes of one value: either way is the same numbers)."""
    a, b = (rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    with dispatch.recording() as taken:
        y, _, _ = _mul_grads(a, b, rng.standard_normal(np.broadcast_shapes(*shapes)).astype(np.float32),
                             (True, True))
    np.testing.assert_array_equal(y, a * b)
    expected = "kernel" if shapes[1] == shapes[0][:2] + (1, 1) else "reference"
    assert taken == {("mul", expected): 1}


# The fused elementwise kernels (kernels/cpu_activation.py, kernels/cpu_norm.py's LRN): (op, ours, torch's,
# the input's shape, the kernel functions, each called once per forward+backward)
FUSED = [
    pytest.param("sigmoid", F.sigmoid, torch.sigmoid, (4, 9), ("sigmoid_forward", "sigmoid_backward"), id="sigmoid"),
    pytest.param("silu", F.silu, TF.silu, (4, 9), ("silu_forward", "silu_backward"), id="silu"),
    pytest.param("leaky_relu", lambda t: F.leaky_relu(t, 0.1), lambda t: TF.leaky_relu(t, 0.1), (4, 9),
                 ("leaky_relu_forward", "leaky_relu_backward"), id="leaky_relu"),
    pytest.param("local_response_norm", lambda t: F.local_response_norm(t, 5, alpha=5e-4, beta=0.75, k=2.0),
                 lambda t: TF.local_response_norm(t, 5, alpha=5e-4, beta=0.75, k=2.0), (2, 7, 3, 4),
                 ("local_response_norm_forward", "local_response_norm_backward"), id="local_response_norm"),
]


@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
@pytest.mark.parametrize("op, ours, theirs, shape, kernels", FUSED)
def test_fused_op_takes_its_route_and_equals_the_array_code(op, ours, theirs, shape, kernels, dtype, route, forced,
                                                            rng, spy):
    """Sigmoid, SiLU, LeakyReLU and LRN: the Numba kernels for float32 and float64, the array code for float16 (and under
    reference_only); the kernels give the array code's numbers bit for bit, output and gradient, and both
    torch's (float16 against torch in float64, to its precision)."""
    route = "reference" if forced else route
    calls = spy(*kernels)
    x = (rng.standard_normal(shape) * 8).astype(dtype)  # both saturated ends of the sigmoid in float32
    x.reshape(-1)[:3] = [0.0, -0.0, 40.0]
    gy = rng.standard_normal(shape).astype(dtype)

    def forward_backward():
        t = sn.tensor(x, requires_grad=True)
        y = ours(t)
        y.backward(gy)
        return y.numpy(), t.grad

    with run(forced), dispatch.recording() as taken:
        y, gx = forward_backward()
    assert taken == {(op, route): 1}
    kernel_calls = 1 if route == "kernel" else 0
    assert calls == Counter({name: kernel_calls for name in kernels}) - Counter()
    with dispatch.reference_only():
        y_ref, gx_ref = forward_backward()
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)
    assert y.dtype == gx.dtype == dtype
    oracle = np.float64 if dtype == np.float16 else dtype
    tt = torch.tensor(x.astype(oracle), requires_grad=True)
    y_t = theirs(tt)
    y_t.backward(torch.tensor(gy.astype(oracle)))
    if dtype == np.float16:
        assert_within_scale(y, y_t.detach().numpy(), 2e-3, "output")
        assert_within_scale(gx, tt.grad.numpy(), 4e-3, "gradient")
    else:
        assert_close(y, y_t)
        assert_close(gx, tt.grad)


@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
def test_max_pool_takes_its_route_and_matches_torch(dtype, route, forced, rng, spy):
    route = "reference" if forced else route
    calls = spy("max_pool2d_forward", "max_pool2d_backward")
    x = rng.integers(0, 4, (2, 3, 6, 7)).astype(dtype)  # ties: the first maximum of a window wins
    gy = rng.standard_normal((2, 3, 2, 3)).astype(dtype)
    # torch in float64 (its float16 pool differs); windows that do not overlap: each gradient lands once, exactly
    t, tt = sn.tensor(x, requires_grad=True), torch.tensor(x.astype(np.float64), requires_grad=True)
    with run(forced), dispatch.recording() as taken:
        y = F.max_pool2d(t, 3, stride=3, padding=1)
        y.backward(gy)
    y_t = TF.max_pool2d(tt, 3, stride=3, padding=1)
    y_t.backward(torch.tensor(gy.astype(np.float64)))
    np.testing.assert_array_equal(y.numpy(), y_t.detach().numpy().astype(dtype))
    np.testing.assert_array_equal(t.grad, tt.grad.numpy().astype(dtype))
    assert taken == {("max_pool2d", route): 1}
    kernel_calls = 1 if route == "kernel" else 0
    assert calls == Counter({"max_pool2d_forward": kernel_calls, "max_pool2d_backward": kernel_calls}) - Counter()


BATCH_NORM_KERNELS = ("batch_norm_stats", "batch_norm_scale_shift", "batch_norm_grad_sums", "batch_norm_grad_input")


@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES[:2])  # float16: torch's CPU batch norm has no half kernel
def test_batch_norm_takes_its_route_and_matches_torch(dtype, route, forced, rng, spy):
    route = "reference" if forced else route
    calls = spy(*BATCH_NORM_KERNELS)
    x = (rng.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(dtype)
    w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    ours, theirs = ([lib.tensor(a, requires_grad=True) for a in (x, w, b)] for lib in (sn, torch))
    with run(forced), dispatch.recording() as taken:
        y = F.batch_norm(ours[0], None, None, ours[1], ours[2], training=True)
        y.backward(gy)
    TF.batch_norm(theirs[0], None, None, theirs[1], theirs[2], training=True).backward(torch.tensor(gy))
    for t, t_ref in zip(ours, theirs):
        assert_close(t.grad, t_ref.grad)
    assert taken == {("batch_norm", route): 1}
    expected = {name: 1 for name in BATCH_NORM_KERNELS} if route == "kernel" else {}
    assert calls == Counter(expected)


def test_batch_norm_of_n_c_inputs_and_float16_is_the_array_code(rng, spy):
    calls = spy(*BATCH_NORM_KERNELS)
    with dispatch.recording() as taken:
        F.batch_norm(sn.tensor(rng.standard_normal((4, 3))), None, None, training=True)  # (N, C): no planes
        F.batch_norm(sn.tensor(rng.standard_normal((4, 3, 2)).astype(np.float16)), None, None, training=True)
    assert taken == {("batch_norm", "reference"): 2} and not calls


DEFORM_KERNELS = ("deform_im2col", "deform_col2im", "deform_col2im_coord")


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("forced", FORCED)
@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
def test_deform_conv2d_takes_its_route_and_equals_the_reference(dtype, route, forced, mask, rng, spy):
    """The deformable im2col kernels (kernels/cpu_deform.py) on the CPU for float32 and float64: the columns
    once forward and once more for the weight gradient, the input gradient's scatter and the offset (and
    mask) gradient once each; float16 (and reference_only) the NumPy sampling, which the kernels equal."""
    route = "im2col" if route == "kernel" and not forced else "reference"
    calls = spy(*DEFORM_KERNELS)
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    offset = rng.uniform(-1.5, 1.5, (2, 2 * 2 * 9, 4, 3)).astype(dtype)  # two offset groups, some samples outside
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)  # groups 2
    m = rng.uniform(0, 1, (2, 2 * 9, 4, 3)).astype(dtype) if mask else None
    gy = rng.standard_normal((2, 6, 4, 3)).astype(dtype)

    def deform(arrays):
        tensors = [None if a is None else sn.tensor(a, requires_grad=True) for a in arrays]
        y = F.deform_conv2d(tensors[0], tensors[1], tensors[2], mask=tensors[3])
        y.backward(sn.tensor(gy))
        return [y.numpy()] + [t.grad.numpy() for t in tensors if t is not None]

    with run(forced), dispatch.recording() as taken:
        ours = deform((x, offset, w, m))
    assert taken == {("deform_conv2d", route): 1}
    kernel_calls = {"deform_im2col": 2, "deform_col2im": 1, "deform_col2im_coord": 1} if route == "im2col" else {}
    assert calls == Counter(kernel_calls)
    with dispatch.reference_only():
        reference = deform((x, offset, w, m))
    for what, a, b in zip(("output", "x", "offset", "weight", "mask"), ours, reference):
        assert a.dtype == dtype
        if route == "reference":  # the same array code twice
            np.testing.assert_array_equal(a, b, err_msg=what)
        elif dtype == np.float64:
            assert_close(a, b, what=what)
        else:  # float32: the kernels' sums run in another order than NumPy's
            assert_within_scale(a, b, 1e-5, what)


def _sgd_run(config, dtype, forced=False, steps=5, shapes=((3, 4), (7,), (2, 1, 5))):
    """Parameters after `steps` SGD steps with the same gradients, and the routes the steps took."""
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in shapes]
    opt = optim.SGD(params, **config)
    with run(forced), dispatch.recording() as taken:
        for _ in range(steps):
            for p in params:
                p.grad = sn.tensor(rng.standard_normal(p.shape).astype(dtype))
            opt.step()
    return [p.numpy() for p in params], [opt.state[p].get("momentum_buffer") for p in params], taken


@pytest.mark.parametrize("dtype, route", ROUTE_CASES)
def test_sgd_takes_the_fused_kernel_once_per_parameter_per_step(dtype, route, spy):
    calls = spy("sgd_step")
    _, _, taken = _sgd_run(dict(lr=0.05, momentum=0.9, weight_decay=5e-4), dtype, steps=4)
    assert taken == {("sgd", route): 3 * 4}  # three parameters, four steps
    assert calls["sgd_step"] == (3 * 4 if route == "kernel" else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_fused_sgd_step_is_the_array_code_bit_for_bit(config, dtype):
    fused, fused_buffers, taken = _sgd_run(config, dtype)
    plain, plain_buffers, taken_plain = _sgd_run(config, dtype, forced=True)
    assert taken == {("sgd", "kernel"): 15} and taken_plain == {("sgd", "reference"): 15}
    for a, b in zip(fused + fused_buffers, plain + plain_buffers):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sgd_step_over_blocks_is_the_array_code_bit_for_bit(dtype):
    """A parameter of several BLOCKs is stepped block by block on the threads: the
    same numbers as the array code, element for element."""
    from scratchnet.kernels.cpu_rows import BLOCK
    shapes = [(5, BLOCK // 2 + 3), (BLOCK // 2,)]  # two blocks, the second one element short; one block
    config = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    fused, fused_buffers, taken = _sgd_run(config, dtype, steps=2, shapes=shapes)
    plain, plain_buffers, _ = _sgd_run(config, dtype, forced=True, steps=2, shapes=shapes)
    assert taken == {("sgd", "kernel"): 4}
    for a, b in zip(fused + fused_buffers, plain + plain_buffers):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_fused_sgd_matches_torch_in_float32(config):
    ours, _, taken = _sgd_run(config, np.float32)
    assert taken == {("sgd", "kernel"): 15}
    rng = np.random.default_rng(0)
    params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s).astype(np.float32))) for s in
              [(3, 4), (7,), (2, 1, 5)]]
    opt = torch.optim.SGD(params, **config)
    for _ in range(5):
        for p in params:
            p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32))
        opt.step()
    for a, p in zip(ours, params):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_takes_the_kernel_only_where_it_applies():
    p32 = np.ones(3, np.float32)
    assert routes.SGD.choose(p32, np.ones(3, np.float32), None).name == "kernel"
    assert routes.SGD.choose(p32, np.ones(3, np.float32), np.ones(3, np.float32)).name == "kernel"
    # a float64 gradient: the array code keeps p float32; float16; not contiguous; a buffer of another shape
    assert routes.SGD.choose(p32, np.ones(3), None).name == "reference"
    assert routes.SGD.choose(p32.astype(np.float16), np.ones(3, np.float16), None).name == "reference"
    assert routes.SGD.choose(np.ones((3, 4), np.float32).T, np.ones((4, 3), np.float32), None).name == "reference"
    assert routes.SGD.choose(p32, p32, np.ones(4, np.float32)).name == "reference"


def test_adam_steps_are_counted_on_the_array_code():
    params = [nn.Parameter(np.ones(4, np.float32)) for _ in range(2)]
    opt = optim.Adam(params)
    with dispatch.recording() as taken:
        for _ in range(3):
            for p in params:
                p.grad = sn.tensor(np.ones(4, np.float32))
            opt.step()
    assert taken == {("adam", "reference"): 6}


WARM_UP_CHECK = """
import sys
import numpy as np
from numba.core.registry import CPUDispatcher
import scratchnet as sn
from scratchnet import optim
from scratchnet.kernels import cpu, cpu_deform, cpu_depthwise, cpu_norm

def signatures():
    return {f"{m.__name__}.{name}": tuple(f.signatures) for m in (cpu, cpu_deform, cpu_depthwise, cpu_norm)
            for name, f in vars(m).items() if isinstance(f, CPUDispatcher)}

dtype = np.dtype(sys.argv[1])
cpu.warm_up(dtype, compile=True)  # (compiles what this machine has not cached yet)
before = signatures()
model = sn.models.get_model("lenet").to(dtype=dtype)
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = sn.tensor(np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(dtype))
loss = model.loss(model(x), np.arange(4))
opt.zero_grad()
loss.backward()
opt.step()
with sn.no_grad():
    model.eval()(x)
bn = sn.nn.BatchNorm2d(3).to(dtype=dtype)  # batch norm's kernels, training and evaluation
images = sn.tensor(np.ones((2, 3, 4, 4), dtype), requires_grad=True)
for mode in (bn.train, bn.eval):
    mode()
    bn(images).sum().backward()
weight = sn.tensor(np.ones((2, 3, 3, 3), dtype), requires_grad=True)  # deformable convolution, v1 and v2
offset = sn.tensor(np.zeros((2, 18, 2, 2), dtype), requires_grad=True)
for mask in (None, sn.tensor(np.ones((2, 9, 2, 2), dtype), requires_grad=True)):
    sn.nn.functional.deform_conv2d(images, offset, weight, mask=mask).sum().backward()
after = signatures()
print({name: after[name][len(before[name]):] for name in after if after[name] != before[name]})
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_warm_up_loads_every_kernel_a_training_step_uses(dtype):
    """After cpu.warm_up (the training CLI runs it while the data loads), a LeNet training step, an
    evaluation, batch norm and deformable convolution need no kernel compiled or loaded: Numba's start-up
    is out of the first step. In a fresh process, where no other test has run a kernel yet."""
    done = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, dtype], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}", f"kernels a step still had to load: {done.stdout}"

"""The one dispatch mechanism (kernels/dispatch.py), the declared kernel interfaces (kernels/interface.py),
and docs/kernels.md's recipe "Adding a kernel" followed end to end by a toy op: y = factor * x, a
Numba kernel on the CPU and a CUDA kernel (tests/fixtures/toy_scale.cu) run on the emulator.
"""
import types

import numpy as np
import pytest
from numba import njit

import scratchnet as sn
import scratchnet.functional as F
from scratchnet.autograd import Function
from scratchnet.functional import conv_routes
from scratchnet.kernels import cpu, cuda, dispatch, interface, launch, routes
from scratchnet.kernels import emulator as emulation
from scratchnet.kernels.dispatch import ANY, ARRAY_CODE, KERNEL_DTYPES, KERNELS, Op, Route
from scratchnet.kernels.launcher import KernelAPI
from conftest import FIXTURES

# ---------------------------------------------------------------- the declared interfaces


def test_every_kernel_module_provides_its_devices_interface():
    assert interface.missing(cpu, "cpu") == []
    assert interface.missing(cuda, "gpu") == []  # declared explicitly, also where no GPU is
    assert interface.missing(emulation.Emulator().device(), "gpu") == []  # the emulator runs the same API


def test_a_missing_or_changed_kernel_function_is_an_error_naming_it():
    Partial = types.ModuleType("partial_kernels")  # a kernel module with two functions, one of them changed
    Partial.relu_forward = cpu.relu_forward
    Partial.relu_backward = lambda gy: gy  # the mask parameter dropped
    problems = interface.missing(Partial, "cpu")
    assert "relu_backward takes (gy), the interface declares (gy, mask)" in problems
    assert "im2col(x, kernel, stride, padding, dilation, out_hw, pad_value=0) is missing" in problems
    assert not any(p.startswith("relu_forward") for p in problems)
    with pytest.raises(interface.KernelInterfaceError, match="partial_kernels does not provide the cpu kernel "
                                                             "interface .*relu_backward takes"):
        interface.check(Partial, "cpu")


def test_a_table_asking_for_an_undeclared_kernel_fails_when_it_is_built(monkeypatch):
    monkeypatch.setattr(dispatch, "OPS", dict(dispatch.OPS))
    with pytest.raises(interface.KernelInterfaceError, match="op 'swish', route 'kernel': the gpu kernel "
                                                             "interface .* has no swish_forward"):
        Op("swish", needs=("swish_forward",), routes={
            "kernel": Route(KERNELS, ("gpu",), KERNEL_DTYPES, None),
            "reference": Route(ARRAY_CODE, ("cpu", "gpu"), ANY, None)})
    with pytest.raises(ValueError, match="every table has a 'reference' route"):
        Op("swish", routes={"kernel": Route(KERNELS, ("cpu",), KERNEL_DTYPES, None)})


# ---------------------------------------------------------------- choosing, counting, forcing


def test_choose_remembers_each_decision_and_counts_every_call():
    x = np.ones((2, 3), np.float32)
    with dispatch.recording() as taken:
        first, second = routes.RELU.choose(x), routes.RELU.choose(x)
        half = routes.RELU.choose(x.astype(np.float16))
    assert first is second and first.name == "kernel" and first.impl is cpu
    assert half.name == "reference" and half.impl is None
    assert taken == {("relu", "kernel"): 2, ("relu", "reference"): 1}
    assert routes.RELU.counts()["kernel"] >= 2 and dispatch.counts()[("relu", "kernel")] >= 2


def test_arrays_of_different_dtypes_never_reach_a_kernel():
    """A description's dtype is None where the arrays' differ (NumPy compares None equal to float64)."""
    p = np.ones(3, np.float32)
    assert routes.SGD.choose(p, p.astype(np.float64), None).name == "reference"
    assert routes.SGD.choose(p.astype(np.float64), p, None).name == "reference"


def test_reference_only_forces_every_op_and_is_undone_after_an_error(rng):
    x = sn.tensor(rng.standard_normal((2, 4, 6, 6)))
    w = sn.tensor(rng.standard_normal((4, 4, 3, 3)))
    with pytest.raises(RuntimeError, match="inside"):
        with dispatch.reference_only(), dispatch.recording() as taken:
            F.conv2d(F.max_pool2d(F.relu(x), 2), w, padding=1, conv_algo="im2col")
            raise RuntimeError("inside")
    assert taken == {("relu", "reference"): 1, ("max_pool2d", "reference"): 1, ("conv2d", "reference"): 1}
    with dispatch.recording() as taken:
        F.conv2d(F.max_pool2d(F.relu(x), 2), w, padding=1, conv_algo="im2col")
    assert taken == {("relu", "kernel"): 1, ("max_pool2d", "kernel"): 1, ("conv2d", "im2col"): 1}


def test_remembered_decisions_are_bounded(monkeypatch):
    """Calls of ever new shapes (a detector's varying inputs) cannot grow the memory without bound."""
    monkeypatch.setattr(dispatch, "_REMEMBERED", 3)
    monkeypatch.setattr(conv_routes.CONV2D, "_chosen", {})
    w = np.ones((4, 4, 3, 3), np.float32)
    for size in range(3, 11):
        geo = conv_routes.Geometry((1, 1), (1, 1), (1, 1), 1, (size, size))
        assert conv_routes.choose(None, np.ones((1, 4, size, size), np.float32), w, geo).name == "im2col"
        assert len(conv_routes.CONV2D._chosen) <= 3


@pytest.fixture
def kernels_deferred():
    """dispatch.defer_cpu_kernels, undone after the test (a process-wide setting)."""
    yield dispatch.defer_cpu_kernels
    dispatch.defer_cpu_kernels(())


def test_deferred_cpu_kernels_take_the_next_route_and_note_the_one_they_would_have_taken(kernels_deferred):
    """A machine's first run (scratchnet/train/cpu_kernels.py): while its kernels compile, no CPU call takes a
    route that calls one of them; the auto rules fall to the next route (the reference at the latest), and
    what would have been taken is noted, per dtype. Nothing here runs a kernel: choose only decides."""
    x32, x16 = np.ones((2, 3), np.float32), np.ones((2, 3), np.float16)
    w = np.ones((64, 64, 3, 3), np.float32)
    wide = conv_routes.Geometry((1, 1), (1, 1), (1, 1), 1, (8, 8))  # 3x3/1 with 64 channels: winograd
    x = np.ones((1, 64, 8, 8), np.float32)
    assert routes.RELU.choose(x32).name == "kernel" and conv_routes.choose(None, x, w, wide).name == "winograd"
    kernels_deferred({"relu_forward", "winograd_forward"})
    assert dispatch.cpu_kernels_deferred() == {"relu_forward", "winograd_forward"}
    assert routes.RELU.choose(x32).name == "reference"  # the remembered "kernel" was dropped
    assert conv_routes.choose(None, x, w, wide).name == "im2col"  # auto's next rule: its kernels are not deferred
    assert routes.SGD.choose(x32, x32, None).name == "kernel"  # sgd_step is not deferred
    assert routes.RELU.choose(x16).name == "reference"  # (no kernel for float16 anyway: nothing noted)
    assert dispatch.wanted_cpu_kernels(np.float32) == ["relu_backward", "relu_forward", "winograd_backward_input",
                                                       "winograd_backward_weight", "winograd_forward"]
    assert dispatch.wanted_cpu_kernels(np.float64) == []
    key = ("auto", dispatch.describe_array(x32))
    assert routes.RELU._chosen[key].name == "reference"  # a call is still one dict lookup
    kernels_deferred({"im2col", "winograd_forward"})
    assert conv_routes.choose(None, x, w, wide).name == "reference"  # the last rule
    gpu_call = conv_routes.Call("gpu", np.dtype(np.float32), x.shape, w.shape, wide)
    assert conv_routes.CONV2D.decide("auto", gpu_call) == "im2col"  # the GPU's kernels are never deferred
    with dispatch.reference_only():
        routes.SGD.choose(np.ones(5, np.float32), np.ones(5, np.float32), None)
    kernels_deferred(())
    assert dispatch.cpu_kernels_deferred() == frozenset()
    assert routes.RELU.choose(x32).name == "kernel" and conv_routes.choose(None, x, w, wide).name == "winograd"


def test_a_route_object_names_the_kernel_functions_it_calls():
    """conv2d's routes call kernels through kernels.for_array: each names them (``needs``), checked against
    the interfaces like a KERNELS route's, so that defer_cpu_kernels knows which routes to keep CPU calls off."""
    assert conv_routes.CONV2D.cpu_needs == {
        "im2col": ("im2col", "col2im"),
        "winograd": ("winograd_forward", "winograd_backward_input", "winograd_backward_weight"),
        "depthwise": ("depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight")}
    assert routes.RELU.cpu_needs == {"kernel": ("relu_forward", "relu_backward")} and routes.ADAM.cpu_needs == {}


# ---------------------------------------------------------------- the recipe, end to end: a toy op
# Step 1, the kernel's source: a Numba kernel for the CPU (here, in kernels/cpu.py: a function of the
# module) and a CUDA kernel (tests/fixtures/toy_scale.cu) with its Python launcher (launcher.KernelAPI).

@njit(cache=False)
def _toy_scale(xf, yf, factor):
    for k in range(xf.size):
        yf[k] = factor * xf[k]


def toy_scale_cpu(x, factor):
    """y = factor * x on NumPy arrays (the CPU module's function)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _toy_scale(x.reshape(-1), y.reshape(-1), x.dtype.type(factor))
    return y


class ToyKernelAPI(KernelAPI):
    """launcher.KernelAPI with the toy's method: allocate the output, launch with launch.py's rule."""

    def toy_scale(self, x, factor):
        (x,) = self._contiguous(x)
        y = self.xp.empty(x.shape, dtype=x.dtype)
        self._launch("toy_scale", (x, y), {"N": x.size}, extra=(x.dtype.type(factor),))
        return y


TOY_SOURCE = FIXTURES / "toy_scale.cu"


@pytest.fixture
def toy_op(monkeypatch):
    """The toy registered as the recipe says, undone after the test; returns (its table, its Function)."""
    # step 2: declare the kernel in each device's interface, and give the CPU module the function
    monkeypatch.setitem(interface.CPU, "toy_scale", "(x, factor)")
    monkeypatch.setitem(interface.CUDA, "toy_scale", "(x, factor)")
    monkeypatch.setattr(cpu, "toy_scale", toy_scale_cpu, raising=False)
    interface.check(cpu, "cpu")
    # step 3: its launch rule, one row of kernels/launch.py's RULES
    monkeypatch.setitem(launch.RULES, "toy_scale", launch.Rule(str(TOY_SOURCE), ("N",),
                                                               lambda s, cap: launch._elementwise(s["N"], cap)))
    # step 4: the op's table, one row per route (kernels/routes.py)
    monkeypatch.setattr(dispatch, "OPS", dict(dispatch.OPS))
    table = Op("toy_scale", needs=("toy_scale",), routes={
        "kernel": Route(KERNELS, ("cpu", "gpu"), KERNEL_DTYPES, None),
        "reference": Route(ARRAY_CODE, ("cpu", "gpu"), ANY, None),
    })

    # step 5: the op calls choose once and runs what it gets: the device's kernel module, or its array code
    class ToyScale(Function):
        def __init__(self, factor):
            self.factor = factor

        def forward(self, x):
            self.kernels = table.choose(x).impl
            if self.kernels is not None:
                return self.kernels.toy_scale(x, self.factor)
            return x * x.dtype.type(self.factor)

        def backward(self, gy):
            if self.kernels is not None:
                return (self.kernels.toy_scale(gy, self.factor),)
            return (gy * gy.dtype.type(self.factor),)
    return table, ToyScale


@pytest.mark.parametrize("dtype, route", [(np.float32, "kernel"), (np.float64, "kernel"),
                                          (np.float16, "reference")], ids=["float32", "float64", "float16"])
def test_the_toy_op_takes_its_kernel_on_the_cpu(toy_op, dtype, route, rng, monkeypatch):
    table, ToyScale = toy_op
    calls = []
    monkeypatch.setattr(cpu, "toy_scale", lambda x, factor: calls.append(x.shape) or toy_scale_cpu(x, factor))
    x = sn.tensor(rng.standard_normal((3, 5)).astype(dtype), requires_grad=True)
    gy = rng.standard_normal((3, 5)).astype(dtype)
    with dispatch.recording() as taken:
        y = ToyScale(1.5)(x)
        y.backward(gy)
    assert taken == {("toy_scale", route): 1} and len(calls) == (2 if route == "kernel" else 0)
    np.testing.assert_array_equal(y.numpy(), x.numpy() * dtype(1.5))
    np.testing.assert_array_equal(x.grad, gy * dtype(1.5))
    with dispatch.reference_only(), dispatch.recording() as taken:  # step 6: the reference stays selectable
        y_ref = ToyScale(1.5)(x)
    assert taken == {("toy_scale", "reference"): 1}
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())


def test_the_toy_op_passes_a_gradient_check_on_both_routes(toy_op, rng):
    _, ToyScale = toy_op
    x = sn.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    assert sn.gradcheck(lambda t: ToyScale(-0.75)(t), (x,))
    with dispatch.reference_only():
        assert sn.gradcheck(lambda t: ToyScale(-0.75)(t), (x,))


@pytest.mark.skipif(emulation.compiler() is None, reason="the CUDA emulator needs g++")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_toy_cuda_kernel_runs_on_the_emulator_with_its_launch_rule(toy_op, dtype, rng):
    """The GPU half of the recipe: the source compiles (here with the emulator's g++), launches with its
    rule's grid, in launch order and shuffled with the grid capped below the data (the grid-stride loop
    covers the rest), and the API provides the CUDA interface with the toy declared."""
    emu = emulation.Emulator()
    x = rng.standard_normal(3000).astype(dtype)  # 12 blocks' worth of threads
    for device in (emu.device(0, api=ToyKernelAPI), emu.device(5, max_blocks=2, api=ToyKernelAPI)):
        assert interface.missing(device, "gpu") == []
        np.testing.assert_array_equal(device.toy_scale(x, 1.5), dtype(1.5) * x)
    assert launch.launch_config("toy_scale", max_blocks=2, N=3000).grid == (2, 1, 1)

"""How every op that has kernels reaches them: one table per op, one place that chooses, each choice counted.

An op's table (``Op``) lists its routes side by side, by name, each a ``Route``:

    impl      what runs: KERNELS (the kernel module of the call's device: kernels/interface.py's
              functions), the op's own array code (ARRAY_CODE), or a route object of the op's
              (conv2d's classes in functional/conv_routes.py)
    devices   the devices it runs on ("cpu", "gpu")
    dtypes    the dtypes it runs on, or ANY
    fits      a condition on the call (shapes, layout), or None: every call

Every table has a "reference" route, the NumPy/CuPy array code: it runs any call, every other
route is tested against it, and ``reference_only()`` makes every op take it.

An op describes each call by a small tuple (``describe``: device, dtype, then what its conditions
read), and ``Op.choose`` is the only place that decides: the route asked for by name where it
fits, else the first ``auto`` rule whose route fits and whose condition holds (the table's order
when the op has no rules). The decision is remembered per description, so a call costs a dict
lookup (a ResNet-50 step makes thousands). Each call is counted on the route it took:
``counts()`` since the process started, ``recording()`` within a block (tests assert the route).

While a machine's first run compiles its CPU kernels in the background (the training CLI:
scratchnet/train/cpu_kernels.py), ``defer_cpu_kernels(functions)`` keeps every CPU call off the
routes that call one of those kernel functions (a KERNELS route through the op's ``needs``, or a
route object through its own): the auto rules fall to the next route, the reference at the latest.
Meanwhile each decision also notes what it would have taken with the kernels loaded
(``wanted_cpu_kernels``: only what the model runs gets compiled). Switching it changes no call's
cost: the remembered decisions are dropped.

Adding a kernel: docs/kernels.md, "Adding a kernel".
"""
import contextlib
from collections import namedtuple

import numpy as np

from ..backend import device_of
from . import DTYPES, for_device, interface

ANY = None  # a Route's dtypes: every dtype
KERNELS = "kernels"  # a Route's impl: the kernel module of the call's device (kernels.for_device)
ARRAY_CODE = None  # a Route's impl: the op's own NumPy/CuPy lines, in the function that calls choose
KERNEL_DTYPES = DTYPES  # what the Numba and CUDA kernels are built for: float32, float64

Route = namedtuple("Route", "impl devices dtypes fits")
Call = namedtuple("Call", "device dtype")  # the description of an op whose conditions read nothing else

OPS = {}  # every table, by op name
_forced = None  # the route every op takes inside reference_only()
_cpu_deferred = frozenset()  # defer_cpu_kernels(): CPU kernel functions whose routes CPU calls keep off
_wanted = set()  # (kernel function, dtype) the auto rules would have taken while some were deferred
_REMEMBERED = 4096  # decisions an op keeps (its calls' shapes repeat: a training step has a few dozen)


def device(x):
    """device_of(x), with NumPy arrays answered first (the common case of the hot path)."""
    return "cpu" if type(x) is np.ndarray else device_of(x)


def same_dtype(x, *others):
    """x's dtype when every other array has it too (a kernel takes one dtype), else None."""
    dtype = x.dtype
    for other in others:
        if other is not None and other.dtype != dtype:
            return None
    return dtype


def describe_array(x):
    """The description of an op that depends only on its array's device and dtype."""
    return device(x), x.dtype


class Chosen:
    """A route as calls take it: its name, what runs (a kernel module, a route object, or None for the
    op's array code) and how many calls took it."""
    __slots__ = ("name", "impl", "calls")

    def __init__(self, name, impl):
        self.name, self.impl, self.calls = name, impl, 0

    def __repr__(self):
        return f"Chosen({self.name!r}, {getattr(self.impl, '__name__', self.impl)!r}, calls={self.calls})"


class Op:
    """One op's table and the rule that picks a route per call.

    ``describe(*args)`` -> a hashable tuple starting (device, dtype) (dtype None where the arrays'
    dtypes differ), turned into ``record`` (a namedtuple) for the routes' conditions. ``needs``:
    the kernel functions a KERNELS route calls; each must be in the interface of each device the
    route runs on (checked here, when the table is built). ``auto``: (route, condition, why)
    rules, first match wins; default: the routes in the table's order. A route object (``impl`` a class)
    that calls kernel functions through ``kernels.for_array`` names them in its own ``needs``.
    """

    def __init__(self, name, routes, describe=describe_array, record=Call, auto=None, needs=()):
        if "reference" not in routes:
            raise ValueError(f"op {name!r}: every table has a 'reference' route (the array code every other "
                             f"route is tested against), got {sorted(routes)}")
        self.name, self.routes, self.describe, self.record = name, dict(routes), describe, record
        self.auto = list(auto) if auto is not None else [(route, None, "") for route in routes]
        self.needs = tuple(needs)
        self.cpu_needs = {}  # route -> the CPU kernel functions it calls (what defer_cpu_kernels keeps CPU calls off)
        for route_name, route in self.routes.items():
            route_needs = self.needs if route.impl is KERNELS else tuple(getattr(route.impl, "needs", ()))
            for dev in route.devices:
                lacking = [f for f in route_needs if f not in interface.INTERFACES[dev]]
                if lacking:
                    raise interface.KernelInterfaceError(
                        f"op {name!r}, route {route_name!r}: the {dev} kernel interface (kernels/interface.py) "
                        f"has no {', '.join(lacking)}; declare them there and write them in the {dev} module")
            if route_needs and "cpu" in route.devices:
                self.cpu_needs[route_name] = route_needs
        self._chosen = {}  # (algo, description) -> Chosen
        self._taken = {}  # (route, impl) -> Chosen: one counter per route and implementation
        OPS[name] = self

    def fits(self, name, call, deferred=None):
        """Whether route ``name`` runs this call (a record): its device, its dtype, its condition, and on the
        CPU whether none of its kernels is deferred (``deferred``: defer_cpu_kernels's set, unless given)."""
        route = self.routes[name]
        if deferred is None:
            deferred = _cpu_deferred
        # (dtype None, the arrays' dtypes differing, is tested first: NumPy compares None equal to float64)
        return (call.device in route.devices
                and (route.dtypes is ANY or call.dtype is not None and call.dtype in route.dtypes)
                and not (deferred and call.device == "cpu" and name in self.cpu_needs
                         and not deferred.isdisjoint(self.cpu_needs[name]))
                and (route.fits is None or route.fits(call)))

    def decide(self, algo, call, deferred=None):
        """The route's name for a call (a record): ``algo`` where it fits, else auto's first match."""
        if algo != "auto" and self.fits(algo, call, deferred):
            return algo
        return next(name for name, condition, _ in self.auto
                    if self.fits(name, call, deferred) and (condition is None or condition(call)))

    def choose(self, *args, algo="auto"):
        """The route this call takes (a Chosen: ``.name``, ``.impl``), counted. The only decision point."""
        key = (_forced or algo, self.describe(*args))
        chosen = self._chosen.get(key)
        if chosen is None:
            chosen = self._remember(key)
        chosen.calls += 1
        return chosen

    def _remember(self, key):
        algo, description = key
        call = self.record._make(description)
        name = self.decide(algo, call)
        if _cpu_deferred and call.device == "cpu" and _forced is None:
            would = self.decide(algo, call, deferred=frozenset())  # with every kernel loaded
            if would != name:
                _wanted.update((function, call.dtype) for function in self.cpu_needs[would])
        impl = self.routes[name].impl
        if impl is KERNELS:
            impl = for_device(call.device)
        if len(self._chosen) >= _REMEMBERED:
            self._chosen.clear()
        chosen = self._chosen[key] = self._taken.setdefault((name, id(impl)), Chosen(name, impl))
        return chosen

    def counts(self):
        """{route: calls} since the process started."""
        totals = {}
        for chosen in self._taken.values():
            totals[chosen.name] = totals.get(chosen.name, 0) + chosen.calls
        return totals


def counts():
    """{(op, route): calls} of every table since the process started (routes no call took are left out)."""
    return {(op.name, route): n for op in OPS.values() for route, n in op.counts().items() if n}


@contextlib.contextmanager
def recording():
    """The routes taken inside the block: yields a dict {(op, route): calls}, filled when the block ends.

        with dispatch.recording() as taken:
            F.relu(x)
        taken  # {('relu', 'kernel'): 1}
    """
    before, taken = counts(), {}
    try:
        yield taken
    finally:
        taken.update({key: n - before.get(key, 0) for key, n in counts().items() if n != before.get(key, 0)})


def defer_cpu_kernels(functions):
    """No CPU call takes a route that calls one of ``functions`` (kernels/interface.py's CPU names: kernels
    not loaded yet, compiling in the background on a machine's first run); each op takes the next route its
    rules allow, the reference at the latest, and notes what it would have taken (``wanted_cpu_kernels``).
    An empty set: every kernel in use again. Process-wide; each op's remembered decisions are dropped."""
    global _cpu_deferred
    functions = frozenset(functions)
    if functions and not _cpu_deferred:
        _wanted.clear()
    _cpu_deferred = functions
    for op in OPS.values():
        op._chosen.clear()


def cpu_kernels_deferred():
    """The CPU kernel functions defer_cpu_kernels keeps calls away from (an empty set: none)."""
    return _cpu_deferred


def note_wanted_cpu_kernel(function, dtype):
    """A CPU kernel function that a call would have taken had it been loaded, noted by the function itself
    where no table decides (kernels/cpu_gemm.py's stacked_matmul, which otherwise gives the same numbers
    another way): compiled with the rest (wanted_cpu_kernels)."""
    _wanted.add((function, np.dtype(dtype)))


def wanted_cpu_kernels(dtype):
    """The kernel functions (kernels/interface.py's CPU names) of the routes that the calls of ``dtype`` would
    have taken while some were deferred, had those been loaded: what a run needs compiled."""
    dtype = np.dtype(dtype)
    return sorted(function for function, of in _wanted if of == dtype)


@contextlib.contextmanager
def reference_only():
    """Every op takes its reference route (the NumPy/CuPy array code) inside the block, conv2d included:
    the readable baseline, to compare a kernel with or to read one op's numbers without the kernels.
    Process-wide (every thread), like set_conv_algo."""
    global _forced
    before, _forced = _forced, "reference"
    try:
        yield
    finally:
        _forced = before

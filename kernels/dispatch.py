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
    rules, first match wins; default: the routes in the table's order.
    """

    def __init__(self, name, routes, describe=describe_array, record=Call, auto=None, needs=()):
        if "reference" not in routes:
            raise ValueError(f"op {name!r}: every table has a 'reference' route (the array code every other "
                             f"route is tested against), got {sorted(routes)}")
        self.name, self.routes, self.describe, self.record = name, dict(routes), describe, record
        self.auto = list(auto) if auto is not None else [(route, None, "") for route in routes]
        self.needs = tuple(needs)
        for route_name, route in self.routes.items():
            if route.impl is KERNELS:
                for dev in route.devices:
                    lacking = [f for f in self.needs if f not in interface.INTERFACES[dev]]
                    if lacking:
                        raise interface.KernelInterfaceError(
                            f"op {name!r}, route {route_name!r}: the {dev} kernel interface (kernels/interface.py) "
                            f"has no {', '.join(lacking)}; declare them there and write them in the {dev} module")
        self._chosen = {}  # (algo, description) -> Chosen
        self._taken = {}  # (route, impl) -> Chosen: one counter per route and implementation
        OPS[name] = self

    def fits(self, name, call):
        """Whether route ``name`` runs this call (a record): its device, its dtype, its condition."""
        route = self.routes[name]
        # (dtype None, the arrays' dtypes differing, is tested first: NumPy compares None equal to float64)
        return (call.device in route.devices
                and (route.dtypes is ANY or call.dtype is not None and call.dtype in route.dtypes)
                and (route.fits is None or route.fits(call)))

    def decide(self, algo, call):
        """The route's name for a call (a record): ``algo`` where it fits, else auto's first match."""
        if algo != "auto" and self.fits(algo, call):
            return algo
        return next(name for name, condition, _ in self.auto
                    if self.fits(name, call) and (condition is None or condition(call)))

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

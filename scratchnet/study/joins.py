"""Joins: how the gradient splits where paths meet -- through a residual unit's shortcut vs its residual
branch, and across the branches a concatenation joins (Inception modules, dense blocks).

The joins are found in the graph, not asked of the model: a ``JoinWatcher`` is a function hook
(``sn.FunctionHook``) that sees every op, plus module hooks that say which module is running.

* A residual join is an addition ``a + b`` whose two summands both come from one tensor ``x`` (the
  fork: the newest tensor both descend from), the shortcut being the shorter path (fewer ops from
  ``x``: 0 for an identity, 2 for a projection conv + BN). Its records hold |dL/dx| arriving through
  each path: during backward, the watcher sums what the ops that read ``x`` on that path send to it
  (for an identity shortcut, the addition itself), so the two records add up to x's gradient from
  the join.
* A concat join is a ``cat`` inside a module whose inputs are outputs of that module's children
  (Inception's branchN, a dense block's denselayerN): |dL/d input| per child, the slice of the
  concatenation's gradient that goes back to that child.

Records: ``dict(join=module name, kind="residual"|"concat", path="residual"|"shortcut"|child name,
norm=...)`` (concat records also hold ``channels``), in forward order.
"""
import heapq
import itertools
import weakref

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..functional.math import Add
from ..functional.shape import Concat
from ..nn import ModuleCallHook
from .common import DEFAULT_OUT, build, classification_loss, fashion_batches, label, plt, save_figure


class JoinWatcher(ModuleCallHook):
    """``with JoinWatcher(model) as watcher:`` forward and backward, then ``watcher.records()``."""

    def __init__(self, model):
        super().__init__(model)
        self.names = {id(m): name or type(m).__name__.lower() for name, m in model.named_modules()}
        self.running = []  # the module calls in progress, innermost last
        self.made_by = {}  # id(tensor) -> (weak tensor, the outermost module call that returned it)
        self.taps = {}  # id(function) -> (function, [(input slot, record)]): where a path's gradient leaves
        self.grads = {}  # id(record) -> that path's gradient, summed over its taps
        self._records = []

    def records(self, keep_gradients=False):
        """The joins' records with the norm of each path's gradient (paths no gradient reached are left
        out); ``keep_gradients=True`` adds the gradient itself as ``grad`` (a NumPy array)."""
        done = []
        for record in self._records:
            grad = self.grads.get(id(record))
            if grad is not None:
                kept = {"grad": grad} if keep_gradients else {}
                done.append(dict(record, norm=float(np.linalg.norm(grad)), **kept))
        return done

    # -- which module is running, and which module made a tensor
    def enter_module(self, name, module, inputs):
        self.running.append(module)

    def leave_module(self, name, module, inputs, output):
        self.running.pop()
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                self.made_by[id(t)] = (weakref.ref(t), module)

    def _maker(self, t):
        entry = self.made_by.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    # -- forward: find the joins; backward: collect what each path carries
    def forward_postprocess(self, function, inputs, outputs):
        if not self.running or not getattr(function, "edges", None):  # outside the model, or no graph
            return
        if isinstance(function, Add):
            self._residual(function, self.running[-1])
        elif isinstance(function, Concat):
            self._concat(function, inputs, self.running[-1])

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        _, taps = self.taps.get(id(function), (None, ()))
        for slot, record in taps:
            grad = grad_inputs[slot]
            if grad is not None:
                grad = backend.to_numpy(grad)
                previous = self.grads.get(id(record))
                self.grads[id(record)] = grad if previous is None else previous + grad

    def _tap(self, function, slot, record):
        self.taps.setdefault(id(function), (function, []))[1].append((slot, record))

    def _residual(self, add, module):
        split = fork_paths(add)
        if split is None:
            return
        for path, taps in split.items():
            record = dict(join=self.names.get(id(module), "?"), kind="residual", path=path)
            self._records.append(record)
            for function, slot in taps:
                self._tap(function, slot, record)

    def _concat(self, cat, inputs, module):
        children = {id(child): name for name, child in module.named_children()}
        for slot, t in enumerate(inputs):
            maker = self._maker(t)
            if maker is None or id(maker) not in children or cat.edges[slot] is None:
                continue  # carried features, or not a branch of this module
            record = dict(join=self.names.get(id(module), "?"), kind="concat", path=children[id(maker)],
                          channels=int(t.shape[1]))
            self._records.append(record)
            self._tap(cat, slot, record)


def fork_paths(add):
    """For ``add`` = a + b: {"residual": taps, "shortcut": taps}, each tap a (function, input slot) through
    which that path reads the fork x (the newest tensor both summands descend from). None when the
    summands share no tensor made by an op, when one op on both paths reads x, or when both paths are
    equally long (no shortcut to tell apart).

    The walk goes back from the two summands in decreasing generation order (a heap), colouring each
    tensor by the summands it reaches; the first tensor with both colours is the fork, and it stops
    early once either colour has nothing left to visit. Tensors are (creator, output index) edges;
    leaves (parameters) are never forks.
    """
    colour, node_of, heap, order = {}, {}, [], itertools.count()
    pending = {1: 0, 2: 0}  # tensors waiting in the heap, per colour

    def reach(edge, bits):
        if not isinstance(edge, tuple):  # a leaf or a constant: not a fork candidate
            return
        key = (id(edge[0]), edge[1])
        old = colour.get(key, 0)
        if old == 0:
            node_of[key] = edge
            heapq.heappush(heap, (-(edge[0].generation + 1), next(order), key))
        for bit in (1, 2):
            if bits & bit and not old & bit:
                pending[bit] += 1
        colour[key] = old | bits

    summands = add.edges
    reach(summands[0], 1)
    reach(summands[1], 2)
    readers = {id(add): (add, None)}  # function -> the colours of its outputs (the add: per slot, below)
    fork = None
    while heap and pending[1] and pending[2]:
        _, _, key = heapq.heappop(heap)
        bits = colour[key]
        for bit in (1, 2):
            if bits & bit:
                pending[bit] -= 1
        if bits == 3:
            fork = key
            break
        fn = node_of[key][0]
        readers[id(fn)] = (fn, readers.get(id(fn), (fn, 0))[1] | bits)
        for edge in fn.edges:
            reach(edge, bits)
    if fork is None:
        return None
    taps = {1: [], 2: []}
    for fn, bits in readers.values():
        for slot, edge in enumerate(fn.edges):
            if isinstance(edge, tuple) and (id(edge[0]), edge[1]) == fork:
                side = (slot + 1) if fn is add else bits  # the add reads x directly: an identity path
                if side == 3:
                    return None  # one op serves both paths: no clean split
                taps[side].append((fn, slot))
    fork_generation = node_of[fork][0].generation + 1
    length = {side: summands[side - 1][0].generation + 1 - fork_generation for side in (1, 2)}
    if length[1] == length[2]:
        return None
    shortcut = 1 if length[1] < length[2] else 2
    return {"residual": taps[3 - shortcut], "shortcut": taps[shortcut]}


def join_gradients(model, x, y):
    """One forward/backward of the classification loss on (x, y): the records of every join (see the
    module doc)."""
    with JoinWatcher(model) as watcher:
        classification_loss(model, model(Tensor(x)), Tensor(y)).backward()
    return watcher.records()


def measure(models, batch_size=8, side=None, data_dir=None, seed=0):
    """{model: [join records]} from one forward/backward on one Fashion-MNIST batch."""
    results = {}
    for name in models:
        backend.manual_seed(seed)
        model = build(name)
        (x, y), = fashion_batches(model, 1, batch_size, data_dir, side, seed)
        results[label(name)] = join_gradients(model, x, y)
    return results


def _is_dense(concat):
    return concat and all(r["path"].startswith("denselayer") for r in concat)


def _dense_norms(concat, block):
    return sorted((int(r["path"][len("denselayer"):]), r["norm"]) for r in concat if r["join"] == block)


def plot(results):
    pyplot = plt()
    fig, axes = pyplot.subplots(len(results), 1, figsize=(11, 3.6 * len(results)), squeeze=False)
    for ax, (name, records) in zip(axes[:, 0], results.items()):
        residual = [r for r in records if r["kind"] == "residual"]
        concat = [r for r in records if r["kind"] == "concat"]
        if residual:
            units = list(dict.fromkeys(r["join"] for r in residual))  # records come in network order
            for path in ("shortcut", "residual"):
                norms = {r["join"]: r["norm"] for r in residual if r["path"] == path}
                ax.semilogy([norms.get(u, np.nan) for u in units], marker="o", label=f"through the {path}")
            ax.set(xlabel="residual unit (input -> output)", ylabel="|dL/dx| on that path",
                   title=f"{name}: gradient at residual joins")
            ax.legend()
        elif _is_dense(concat):
            # a dense block: one line per block, the gradient on each layer's new features
            for block in dict.fromkeys(r["join"] for r in concat):
                ax.semilogy(*zip(*_dense_norms(concat, block)), marker=".", label=block.split(".")[-1])
            ax.set(xlabel="dense layer l in its block (its features are concatenated for layers l+1, l+2, ...)",
                   ylabel="|dL/d new features|", title=f"{name}: gradient reaching each layer's new features")
            ax.legend(fontsize=7)
        elif concat:
            mods = list(dict.fromkeys(r["join"] for r in concat))
            paths = sorted({r["path"] for r in concat})
            width = 0.8 / len(paths)
            for k, path in enumerate(paths):
                norms = {r["join"]: r["norm"] for r in concat if r["path"] == path}
                ax.bar(np.arange(len(mods)) + k * width, [norms.get(m, 0) for m in mods], width, label=path)
            ax.set(xticks=np.arange(len(mods)) + 0.4, xlabel="concat join", ylabel="|dL/d branch output|",
                   title=f"{name}: gradient split across concatenated branches")
            ax.set_xticklabels([m.split(".")[-1] for m in mods], rotation=45, fontsize=7)
            ax.legend(fontsize=7)
        else:
            ax.set_title(f"{name}: no residual or concat join found")
    return fig


def print_table(results):
    for name, records in results.items():
        residual = [r for r in records if r["kind"] == "residual"]
        if residual:
            s = np.array([r["norm"] for r in residual if r["path"] == "shortcut"])
            f = np.array([r["norm"] for r in residual if r["path"] == "residual"])
            print(f"{name}: {len(s)} residual joins; median |grad| via shortcut {np.median(s):.3g}, "
                  f"via residual branch {np.median(f):.3g}")
        concat = [r for r in records if r["kind"] == "concat"]
        if _is_dense(concat):
            for block in dict.fromkeys(r["join"] for r in concat):
                norms = _dense_norms(concat, block)
                print(f"{name} {block}: |grad| on layer 1's new features {norms[0][1]:.3g}, on layer "
                      f"{norms[-1][0]}'s {norms[-1][1]:.3g} (ratio {norms[0][1] / norms[-1][1]:.1f})")
        elif concat:
            total = {}
            for r in concat:
                total[r["path"]] = total.get(r["path"], 0.0) + r["norm"] ** 2
            share = {p: v / sum(total.values()) for p, v in total.items()}
            print(f"{name}: {len({r['join'] for r in concat})} concat joins; share of squared gradient per "
                  f"branch: " + ", ".join(f"{p} {v:.1%}" for p, v in sorted(share.items())))


def joins(models, batch_size=8, side=None, data_dir=None, out=DEFAULT_OUT, seed=0):
    """Measure, write joins.png and joins.json to ``out``, print the table; returns the results."""
    results = measure(models, batch_size, side, data_dir, seed)
    save_figure(plot(results), out, "joins.png", "joins.json", results)
    print_table(results)
    return results

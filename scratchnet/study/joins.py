"""Joins: how the gradient splits where paths meet -- through a residual unit's shortcut vs its residual
branch, and across the branches a concatenation joins (Inception modules, dense blocks)."""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..models.resnet import ResidualUnit
from .common import DEFAULT_OUT, build, classification_loss, fashion_batches, label, plt, save_figure


def join_gradients(model, x, y):
    """The gradient reaching each join along each path.

    Residual unit ``relu(F(x) + S(x))``: |dL/dx| arriving through the shortcut
    S and through the residual branch F (the unit's join hook gives each path
    its own view of x; a tensor hook on each view reads that path's share).
    Concatenation (a module whose children are parallel branches, e.g. an
    Inception module or a dense layer's new features vs the carried ones):
    |dL/d branch output| for each branch.
    """
    records, handles = [], []

    def on_join(name):
        def hook(unit, join):
            for path, tensor in (("residual", join.branch_in), ("shortcut", join.shortcut_in)):
                if tensor is not None and tensor.requires_grad:
                    tensor.register_hook(lambda g, path=path: records.append(dict(
                        join=name, kind="residual", path=path, norm=float(np.linalg.norm(backend.to_numpy(g))))))
        return hook

    for name, unit in model.named_modules():
        if isinstance(unit, ResidualUnit):
            handles.append(unit.register_join_hook(on_join(name)))
    for name, unit in model.named_modules():
        for branch_name, branch in _concat_branches(unit):
            def on_forward(module, inputs, output, name=name, branch_name=branch_name):
                if isinstance(output, Tensor) and output.requires_grad:
                    output.register_hook(lambda g: records.append(dict(
                        join=name, kind="concat", path=branch_name, channels=int(g.shape[1]),
                        norm=float(np.linalg.norm(backend.to_numpy(g))))))
            handles.append(branch.register_forward_hook(on_forward))
    try:
        classification_loss(model, model(Tensor(x)), Tensor(y)).backward()
    finally:
        for h in handles:
            h.remove()
    return records


def _concat_branches(module):
    """The concatenated parts of a module, by the zoo's names: Inception's branchN, a dense block's
    denselayerN (each adds its new features to the concatenation)."""
    return [(n, m) for n, m in module.named_children() if n.startswith(("branch", "denselayer"))]


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
            # hooks fire output -> input: reverse to network order
            units = list(dict.fromkeys(r["join"] for r in reversed(residual)))
            for path in ("shortcut", "residual"):
                norms = {r["join"]: r["norm"] for r in residual if r["path"] == path}
                ax.semilogy([norms.get(u, np.nan) for u in units], marker="o", label=f"through the {path}")
            ax.set(xlabel="residual unit (input -> output)", ylabel="|dL/dx| on that path",
                   title=f"{name}: gradient at residual joins")
            ax.legend()
        elif _is_dense(concat):
            # a dense block: one line per block, the gradient on each layer's new features
            for block in dict.fromkeys(r["join"] for r in reversed(concat)):
                ax.semilogy(*zip(*_dense_norms(concat, block)), marker=".", label=block.split(".")[-1])
            ax.set(xlabel="dense layer l in its block (its features are concatenated for layers l+1, l+2, ...)",
                   ylabel="|dL/d new features|", title=f"{name}: gradient reaching each layer's new features")
            ax.legend(fontsize=7)
        elif concat:
            mods = list(dict.fromkeys(r["join"] for r in reversed(concat)))
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
            for block in dict.fromkeys(r["join"] for r in reversed(concat)):
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

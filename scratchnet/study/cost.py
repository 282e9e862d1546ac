"""Cost: parameters vs multiply-adds at each model's native input, for the whole zoo, from ``sn.summary``."""
from ..models import get_model, list_models
from ..summary import summary
from .common import DEFAULT_OUT, plt, save_figure


def measure(models=None):
    """[dict(model, params, macs, input)] per model (default: the zoo without the plain twins)."""
    models = models or [m for m in list_models() if not m.startswith("plain")]  # plain twins cost the same
    rows = []
    for name in models:
        model = get_model(name)
        s = summary(model, model.input_size, print_table=False)
        rows.append(dict(model=name, params=int(s.total_params), macs=int(s.total_macs),
                         input=list(model.input_size)))
    return rows


def plot(rows):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(9, 6))
    for r in rows:
        ax.scatter(r["macs"] / 1e9, r["params"] / 1e6, s=18)
        ax.annotate(r["model"], (r["macs"] / 1e9, r["params"] / 1e6), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="multiply-adds (G) at native input", ylabel="parameters (M)",
           title="The zoo's trade-off: parameters vs multiply-adds")
    return fig


def print_table(rows):
    print(f"{'model':<18}{'input':>14}{'params':>14}{'MMACs':>11}")
    for r in rows:
        print(f"{r['model']:<18}{'x'.join(map(str, r['input'])):>14}{r['params']:>14,}{r['macs'] / 1e6:>11.1f}")


def cost(models=None, out=DEFAULT_OUT):
    """Measure, write cost.png and cost.json to ``out``, print the table; returns the rows."""
    rows = measure(models)
    save_figure(plot(rows), out, "cost.png", "cost.json", rows)
    print_table(rows)
    return rows

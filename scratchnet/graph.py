"""python -m scratchnet.graph MODEL: draw a model's autograd graph with the gradient norm on every edge.

    python -m scratchnet.graph resnet18                          # resnet18.svg: each residual unit one box
    python -m scratchnet.graph resnet50 --expand layer1.0        # open one bottleneck: its + is a join
    python -m scratchnet.graph googlenet --collapse Inception    # each Inception module one box
    python -m scratchnet.graph lenet5 --out lenet5.dot           # the Graphviz source only

One forward of a random input (seeded; eval mode unless --train), a loss (cross-entropy of the main
output against random labels when it is logits, else half its mean square), one backward; then
the graph is drawn by scratchnet.viz (see there for what the colours and boxes mean). Without
Graphviz's `dot` program the .dot file is written instead, with the command that renders it.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import functional as F
from .autograd import Tensor
from .backend import manual_seed
from .cli import ArgumentParser, UsageError, command, integer
from .models import get_model, list_models
from .viz import FORMATS, GraphError, draw_graph, trace_modules


def build_parser():
    p = ArgumentParser(prog="python -m scratchnet.graph", description=__doc__.split("\n\n")[0],
                       epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a registered model name (see --list)")
    p.add_argument("--input-size", type=integer(1), nargs=3, metavar=("C", "H", "W"),
                   help="input without the batch (default: the model's native input_size)")
    p.add_argument("--batch-size", type=integer(1), default=1)
    p.add_argument("--num-classes", type=integer(1), help="number of classes (default: the model's)")
    p.add_argument("--out", help="picture to write: .svg, .png, .pdf or .dot (default: MODEL.svg)")
    p.add_argument("--depth", type=integer(0), help="module depth drawn as boxes (default: the deepest that keeps "
                                             "the drawing under --max-nodes nodes)")
    p.add_argument("--collapse", action="append", default=[], metavar="TYPE|NAME",
                   help="draw these modules as one box each, e.g. Bottleneck or layer1 (repeatable)")
    p.add_argument("--expand", action="append", default=[], metavar="NAME|TYPE",
                   help="draw this module open, e.g. layer1.0 (repeatable)")
    p.add_argument("--max-nodes", type=integer(1), default=150, help="node budget of the default depth (150)")
    p.add_argument("--no-params", action="store_true", help="leave parameter tensors out")
    p.add_argument("--no-grad", action="store_true", help="draw the graph only (no backward)")
    p.add_argument("--train", action="store_true", help="training mode (batch-norm statistics, dropout)")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    return p


def check_out(out):
    """Fail before the forward, in one line, on a file that cannot be written."""
    if out.suffix.lstrip(".").lower() not in FORMATS:
        raise GraphError(f"--out {out}: name a .svg, .png, .pdf or .dot file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise GraphError(f"--out {out}: the folder {folder} does not exist")
    if out.is_dir() or not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise GraphError(f"--out {out}: cannot write there")


def loss_of(model, output, seed=0):
    """Cross-entropy of the main output against random labels when it is (N, classes) logits, else half
    its mean square (a detector's grid). Training-only heads (GoogLeNet's auxiliaries) are left out."""
    logits = model.main_output(output)
    if logits.ndim == 2:
        labels = np.random.default_rng(seed).integers(0, logits.shape[1], logits.shape[0])
        return F.cross_entropy(logits, Tensor(labels))
    return (logits * logits).mean() * 0.5


def run(args):
    out = Path(args.out or f"{args.model}.svg")
    check_out(out)
    options = {} if args.num_classes is None else dict(num_classes=args.num_classes)
    try:
        manual_seed(0)
        model = get_model(args.model, **options)
    except (ValueError, TypeError) as error:
        raise GraphError(str(error)) from None
    size = tuple(args.input_size or model.input_size)
    if min(size) < 1 or args.batch_size < 1:
        raise GraphError(f"--input-size and --batch-size must be positive, got {size} and {args.batch_size}")
    model.train(args.train)
    first = next(model.parameters(), None)
    data = np.random.default_rng(0).standard_normal((args.batch_size, *size))
    x = Tensor(data.astype(first.dtype if first is not None else np.float32), requires_grad=True, name="input")
    with trace_modules(model) as modules:
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # an untrained deep net may overflow
                output = model(x)
        except Exception as error:  # a shape the model cannot take: one line, not a traceback
            raise GraphError(f"{args.model} cannot run on an input of size {size}: {error}") from None
    title = f"{args.model} · input {args.batch_size}×{'×'.join(map(str, size))}"
    drawing = draw_graph(loss_of(model, output), modules, backward=not args.no_grad, depth=args.depth,
                         collapse=args.collapse, expand=args.expand, params=not args.no_params,
                         max_nodes=args.max_nodes, title=title)
    return drawing, drawing.save(out)


@command
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list or not args.model:
        print("\n".join(list_models()))
        return 0
    try:
        drawing, written = run(args)
    except (GraphError, ImportError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {written}: {drawing.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

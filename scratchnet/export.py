"""python -m scratchnet.export MODEL --out model.onnx: a zoo model as an ONNX file.

    python -m scratchnet.export resnet18 --out resnet18.onnx                   # random (seeded) weights
    python -m scratchnet.export resnet50 --weights DEFAULT --out resnet50.onnx # torchvision's ImageNet weights
    python -m scratchnet.export lenet5 --weights runs/lenet5/best.npz --out lenet5.onnx
    python -m scratchnet.export efficientnet_b0 --num-classes 10 --input-size 3 64 64 --batch-size 4

The model runs once on a zero input of --input-size (default: its native input) in eval mode, and
every op it calls is written as standard ONNX nodes (scratchnet.onnx); initializers carry the
state_dict keys. A bad argument or file is one line on stderr and exit code 2.
"""
import argparse
import os
import sys

import numpy as np

from .backend import manual_seed
from .cli import ArgumentParser, UsageError, command, integer
from .models import get_model
from .models.pretrained import PretrainedError
from .nn.formats import WeightsFileError
from .nn.module import StateDictError
from .onnx import ExportError, export
from .train.cli import parse_model_args


def build_parser():
    p = ArgumentParser(prog="python -m scratchnet.export", description=__doc__.split("\n\n")[0],
                       epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a registered model name (python -c 'import scratchnet.models as m; "
                                 "print(m.list_models())')")
    p.add_argument("--out", help="the .onnx file to write (default: MODEL.onnx)")
    p.add_argument("--weights", help="DEFAULT or a torchvision weight name (ImageNet weights), or a "
                                     ".npz/.safetensors/.pth file (default: seeded random weights)")
    p.add_argument("--num-classes", type=integer(1), help="number of classes (default: the model's)")
    p.add_argument("--input-size", type=integer(1), nargs=3, metavar=("C", "H", "W"),
                   help="input without the batch (default: the model's native input_size)")
    p.add_argument("--batch-size", type=integer(1), default=1, help="the graph's (static) batch size (default 1)")
    p.add_argument("--opset", type=integer(1), default=17, help="ONNX opset (default 17)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor option, e.g. --model-arg width_mult=0.25 (repeatable)")
    return p


def run(args):
    out = args.out or f"{args.model}.onnx"
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: the folder {folder} does not exist or is not writable")
    options = parse_model_args(args.model_arg)
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    manual_seed(0)
    try:
        model = get_model(args.model, weights=args.weights, **options)
    except (PretrainedError, WeightsFileError, StateDictError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # an unknown name (the registry's sentence) or a bad option
        raise UsageError(f"cannot build model {args.model!r}: {exc}") from None
    shape = tuple(args.input_size) if args.input_size else tuple(model.input_size)
    example = np.zeros((args.batch_size,) + shape, dtype=np.float32)
    try:
        proto = export(model, example, out, opset=args.opset, name=args.model)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # the model's own check of the input shape
        raise UsageError(f"{args.model} on input {example.shape}: {exc}") from None
    print(f"wrote {out}: {len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers, "
          f"input {list(example.shape)}, opset {args.opset}")


@command
def main(argv=None):
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m scratchnet.predict IMAGE... --model resnet50: ImageNet's top-5 classes of each photograph.

    python -m scratchnet.predict photo.jpg --model resnet50                 # torchvision's ImageNet weights
    python -m scratchnet.predict a.jpg b.png --model efficientnet_b0 --top 3
    python -m scratchnet.predict cat.jpg --model vgg16 --weights my_vgg16.pth --resize 256 --crop 224

Images are read with Pillow and preprocessed as torchvision preprocesses its weights' inputs (shorter
side resized with Pillow's antialiased filter, centre crop, ImageNet mean and std; the sizes and the
filter come with the weights). The weights (--weights DEFAULT, the default) are read from the cache
or downloaded once (scratchnet.models.pretrained); offline, the error says which file to put where.
A bad argument, image or weights file is one line on stderr and exit code 2.
"""
import argparse
import os
import sys

import numpy as np

from .autograd import Tensor, no_grad
from .cli import ArgumentParser, UsageError, command, integer
from .data import imagenet_classes, read_image
from .data.transforms import FILTERS, imagenet_eval
from .functional.activation import softmax
from .models import PretrainedError, get_model
from .nn.formats import WeightsFileError
from .nn.module import StateDictError
from .train.cli import parse_model_args


def build_parser():
    p = ArgumentParser(prog="python -m scratchnet.predict", description=__doc__.split("\n\n")[0],
                       epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    p.add_argument("--model", default="resnet50", help="a zoo model with ImageNet weights (default resnet50)")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT or a torchvision weight name (IMAGENET1K_V1), or a .pth/.safetensors/.npz file "
                        "of 1000-class ImageNet weights (default DEFAULT)")
    p.add_argument("--top", type=integer(1), default=5, help="classes printed per image (default 5)")
    p.add_argument("--resize", type=integer(1), help="shorter side before the crop (default: the weights', else 256)")
    p.add_argument("--crop", type=integer(1), help="centre crop (default: the weights', else 224)")
    p.add_argument("--interpolation", choices=sorted(FILTERS), help="resize filter (default: the weights', "
                                                                    "else bilinear)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor option (repeatable)")
    return p


def load_model(args):
    try:
        return get_model(args.model, weights=args.weights, **parse_model_args(args.model_arg)).eval()
    except (PretrainedError, WeightsFileError, StateDictError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build model {args.model!r}: {exc}") from None


def preprocessing(model, args):
    """The weights' own sizes and filter, each overridable; 256 / 224 / bilinear for a weights file."""
    known = getattr(model, "pretrained", None)
    resize = args.resize or (known.resize_size if known else 256)
    crop = args.crop or (known.crop_size if known else 224)
    interpolation = args.interpolation or (known.interpolation if known else "bilinear")
    if crop > resize:
        raise UsageError(f"--crop {crop} is larger than --resize {resize}: the crop must fit in the resized image")
    return imagenet_eval(resize, crop, interpolation)


def predict(model, transform, path, top):
    """[(probability, class index)] of the ``top`` most likely classes of the image at ``path``, and the
    number of classes."""
    try:
        x = transform(read_image(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with no_grad():
        probabilities = softmax(model.main_output(model(Tensor(x))), 1).numpy()[0]
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [(float(probabilities[i]), int(i)) for i in order], len(probabilities)


def run(args):
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:
        raise UsageError(f"image {missing[0]} does not exist")
    model = load_model(args)
    transform = preprocessing(model, args)
    names = imagenet_classes()
    for path in args.images:
        rows, classes = predict(model, transform, path, args.top)
        print(path)
        for probability, index in rows:
            name = names[index] if classes == len(names) else f"class {index}"  # ImageNet's names for 1000
            print(f"  {probability:7.2%}  {name} ({index})")


@command
def main(argv=None):
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the ImageNet data scratchnet ships, from torchvision (run in a venv that has it):

    $SCRATCHNET_TORCH_PYTHON tools/make_imagenet_data.py

- scratchnet/data/imagenet_classes.txt: torchvision's ``_IMAGENET_CATEGORIES``, one class name a line,
  in class-index order (the 1000 ILSVRC-2012 synsets' common names);
- prints the weights table of scratchnet/models/pretrained.py (``WEIGHTS``): each torchvision ImageNet
  weight of a zoo model whose architecture matches, with its file, preprocessing and published top-1.
"""
from pathlib import Path

import torchvision
from torchvision.models import get_model_weights
from torchvision.models._meta import _IMAGENET_CATEGORIES

REPO = Path(__file__).resolve().parents[1]
MODELS = ([f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
          + [f"resnet{d}" for d in (18, 34, 50, 101, 152)] + [f"densenet{d}" for d in (121, 161, 169, 201)]
          + [f"efficientnet_b{i}" for i in range(8)])


def main():
    assert len(_IMAGENET_CATEGORIES) == 1000
    (REPO / "scratchnet" / "data" / "imagenet_classes.txt").write_text("\n".join(_IMAGENET_CATEGORIES) + "\n")
    print(f"# torchvision {torchvision.__version__}")
    for name in MODELS:
        enum = get_model_weights(name)
        for weights in enum:
            metrics = weights.meta["_metrics"].get("ImageNet-1K", {})
            if "acc@1" not in metrics or len(weights.meta["categories"] or ()) != 1000:
                continue  # e.g. vgg16's IMAGENET1K_FEATURES: a feature extractor without a classifier
            t = weights.transforms()
            default = "default" if weights == enum.DEFAULT else "-"
            print(f'{name:<15}  {weights.name:<13}  {weights.url.rsplit("/", 1)[1]:<38}  {t.resize_size[0]:<6}  '
                  f'{t.crop_size[0]:<4}  {t.interpolation.value:<13}  {metrics["acc@1"]:<6}  {default}')


if __name__ == "__main__":
    main()

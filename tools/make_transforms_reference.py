"""Reference outputs of torchvision's resize and ImageNet preprocessing, for tests/data/test_imagenet_transforms.py:

    $SCRATCHNET_TORCH_PYTHON tools/make_transforms_reference.py

writes tests/fixtures/torchvision_transforms.npz from the sample photograph chelsea.jpg:
- ``tensor_<interpolation>_<down|up>``: ``torchvision.transforms.v2.functional.resize`` with
  ``antialias=True`` on the float image (shrunk to a shorter side of 50; a 40x56 patch grown to 64);
- ``pil_<interpolation>``: the ImageNet evaluation pipeline on the PIL image (Resize 56 on PIL, CenterCrop
  48, to float, Normalize with ImageNet's mean and std), as torchvision's weights apply it;
- ``pil_uint8_256_224``: Resize 256 + CenterCrop 224 on the PIL image, the uint8 pixels before scaling.
"""
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main():
    image = Image.open(REPO / "scratchnet" / "data" / "samples" / "chelsea.jpg").convert("RGB")
    pixels = np.asarray(image).transpose(2, 0, 1).copy()  # (3, H, W) uint8
    as_float = torch.from_numpy(pixels).float()[None] / 255
    out = dict(image=pixels, torchvision=np.array(torchvision.__version__))
    for mode in ("bilinear", "bicubic"):
        interpolation = v2.InterpolationMode(mode)
        out[f"tensor_{mode}_down"] = TF.resize(as_float, 50, interpolation, antialias=True)[0].numpy()
        patch = as_float[..., 100:140, 200:256]
        out[f"tensor_{mode}_up"] = TF.resize(patch, 64, interpolation, antialias=True)[0].numpy()
        pipeline = v2.Compose([v2.Resize(56, interpolation, antialias=True), v2.CenterCrop(48), v2.PILToTensor(),
                               v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
        out[f"pil_{mode}"] = pipeline(image).numpy()
    crop = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.PILToTensor()])
    out["pil_uint8_256_224"] = crop(image).numpy()
    np.savez_compressed(REPO / "tests" / "fixtures" / "torchvision_transforms.npz", **out)


if __name__ == "__main__":
    main()

"""ImageNet's class names (shipped as data: torchvision's ``_IMAGENET_CATEGORIES``, in class-index order),
photographs read with Pillow, and the sample photographs shipped with scratchnet (``samples/README.md``)."""
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"


@lru_cache(maxsize=1)
def _classes():
    return tuple((HERE / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines())


def imagenet_classes():
    """The 1000 ILSVRC-2012 class names, index i = class i of torchvision's ImageNet weights."""
    return list(_classes())


def sample_images():
    """Paths of the sample photographs (public domain / CC0; see samples/README.md)."""
    return sorted(SAMPLES.glob("*.jpg"))


def read_image(path):
    """An image file as uint8 RGB pixels, shape (1, 3, H, W) (Pillow decodes it; grey and RGBA become RGB).

    A missing file raises FileNotFoundError, a file Pillow cannot decode ValueError, each naming the file."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not an image Pillow can read (truncated or another format?): {exc}") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]

"""Batch transforms: each takes a whole batch (N, C, H, W) and a random generator, and returns a batch.

Working on the batch, not one image at a time, keeps the loops inside NumPy:
a random crop is one fancy-index, a resize two matrix products. Names follow
torchvision's (``Normalize``, ``Pad``, ``RandomCrop``, ``RandomHorizontalFlip``,
``Resize``) with AlexNet's PCA lighting noise added.
"""
import numpy as np

from .. import backend


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class ToFloat:
    """uint8 pixels in [0, 255] to floats in [0, 1] (torchvision's ToTensor scaling)."""

    def __init__(self, dtype=None):
        self.dtype = np.dtype(dtype) if dtype is not None else backend.get_default_dtype()

    def __call__(self, x, rng=None):
        scale = 1 / 255 if x.dtype == np.uint8 else 1
        return x.astype(self.dtype) * self.dtype.type(scale)

    def __repr__(self):
        return f"ToFloat({self.dtype})"


class Normalize:
    """Per-channel ``(x - mean) / std``."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std}")

    def __call__(self, x, rng=None):
        if x.shape[1] != len(self.mean) and len(self.mean) != 1:
            raise ValueError(f"Normalize: batch has {x.shape[1]} channels but mean/std have {len(self.mean)}")
        return ((x - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class Pad:
    """Zero (or ``value``) padding of ``padding`` pixels on every side (LeNet's 28 -> 32)."""

    def __init__(self, padding, value=0):
        self.padding, self.value = int(padding), value

    def __call__(self, x, rng=None):
        p, (h, w) = self.padding, x.shape[-2:]
        out = np.full(x.shape[:-2] + (h + 2 * p, w + 2 * p), self.value, dtype=x.dtype)  # np.pad, 10x faster
        out[..., p:p + h, p:p + w] = x
        return out

    def __repr__(self):
        return f"Pad({self.padding})"


class RepeatChannels:
    """Grayscale to RGB by repetition (for models without an ``in_channels`` option)."""

    def __init__(self, channels):
        self.channels = channels

    def __call__(self, x, rng=None):
        return np.repeat(x, self.channels, axis=1)

    def __repr__(self):
        return f"RepeatChannels({self.channels})"


class RandomCrop:
    """A random ``size`` window per image, after optional zero padding (CIFAR's pad-4-crop-32)."""

    def __init__(self, size, padding=0):
        self.size = (size, size) if np.isscalar(size) else tuple(size)
        self.padding = int(padding)

    def __call__(self, x, rng):
        if self.padding:
            x = Pad(self.padding)(x)
        n, c, h, w = x.shape
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the (padded) image {(h, w)}")
        top = rng.integers(0, h - th + 1, size=n)
        left = rng.integers(0, w - tw + 1, size=n)
        rows = (top[:, None] + np.arange(th))[:, None, :, None]
        cols = (left[:, None] + np.arange(tw))[:, None, None, :]
        return x[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]

    def __repr__(self):
        return f"RandomCrop({self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, x, rng):
        flip = rng.random(len(x)) < self.p
        x = x.copy()
        x[flip] = x[flip][..., ::-1]
        return x

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


def linear_resize_matrix(in_size, out_size, dtype=np.float64):
    """(out, in) matrix of 1-D linear interpolation, torch's ``align_corners=False`` convention."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), dtype=dtype)
    np.add.at(m, (np.arange(out_size), lo), 1 - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m


class Resize:
    """Bilinear resize to ``size`` (e.g. 32x32 CIFAR up to 224x224 for the ImageNet-shaped nets).

    Bilinear interpolation is separable: resize the rows with one matrix and
    the columns with another, ``Mh @ x @ Mw.T`` (torch's ``interpolate(...,
    mode="bilinear", align_corners=False)``, no antialiasing).
    """

    def __init__(self, size):
        self.size = (size, size) if np.isscalar(size) else tuple(size)

    def __call__(self, x, rng=None):
        h, w = x.shape[-2:]
        if (h, w) == self.size:
            return x
        dtype = x.dtype if backend.is_floating(x.dtype) else backend.get_default_dtype()
        mh = linear_resize_matrix(h, self.size[0], dtype)
        mw = linear_resize_matrix(w, self.size[1], dtype)
        return mh @ x.astype(dtype, copy=False) @ mw.T

    def __repr__(self):
        return f"Resize({self.size})"


# ImageNet's RGB eigen-decomposition (pixels in [0, 1]), as used by fb.resnet.torch and torchvision's recipes.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])


class PCALighting:
    """AlexNet's colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, 0.1).

    Krizhevsky et al. 2012, section 4.1: the principal components of the RGB
    values over the training set, scaled by their eigenvalues times a fresh
    Gaussian draw per image, shift the image's colour along natural directions.
    """

    def __init__(self, alphastd=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
        self.alphastd = alphastd
        self.eigval, self.eigvec = np.asarray(eigval, np.float64), np.asarray(eigvec, np.float64)

    def __call__(self, x, rng):
        if x.shape[1] != 3:
            raise ValueError(f"PCALighting: needs RGB images (N, 3, H, W), got {x.shape}")
        alpha = rng.normal(0, self.alphastd, size=(len(x), 3))
        shift = (alpha * self.eigval) @ self.eigvec.T  # (N, 3): one RGB offset per image
        return (x + shift[:, :, None, None].astype(x.dtype)).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"PCALighting(alphastd={self.alphastd})"

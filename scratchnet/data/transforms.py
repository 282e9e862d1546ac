"""Batch transforms: each takes a whole batch (N, C, H, W) and a random generator, and returns a batch.

Working on the batch, not one image at a time, keeps the loops inside NumPy:
a random crop is one fancy-index, a resize two matrix products. Names follow
torchvision's (``Normalize``, ``Pad``, ``RandomCrop``, ``RandomHorizontalFlip``,
``Resize``, ``CenterCrop``, ``TenCrop``) with AlexNet's PCA lighting noise added.

AlexNet's data (Krizhevsky et al. 2012, Sec. 4.1): images rescaled to 256x256, random 224x224
patches and their mirror images for training (``Resize(256)``, ``RandomCrop(224)``,
``RandomHorizontalFlip()``), PCA lighting noise (``PCALighting.from_images``), and at test time the
softmax averaged over ten patches, the four corners and the centre and their mirror images
(``TenCrop(224)``, whose crops are torchvision's).
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
    """Per-channel ``(x - mean) / std`` of (N, C, H, W) batches, or of (N, crops, C, H, W) patches."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std}")

    def __call__(self, x, rng=None):
        if x.shape[-3] != len(self.mean) and len(self.mean) != 1:
            raise ValueError(f"Normalize: batch has {x.shape[-3]} channels but mean/std have {len(self.mean)}")
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


def _size_pair(size):
    return (int(size), int(size)) if np.isscalar(size) else tuple(int(v) for v in size)


def _check_crop(name, size, x):
    (th, tw), (h, w) = size, x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"{name}: crop {size} is larger than the image {(h, w)}; resize the images first")


def center_crop(x, size):
    """The centre (h, w) window of every image, placed as torchvision's ``center_crop``: a margin of
    ``round((H - h) / 2)`` above, Python's ``round`` (half-way margins go to the even number)."""
    th, tw = size
    top, left = int(round((x.shape[-2] - th) / 2.0)), int(round((x.shape[-1] - tw) / 2.0))
    return x[..., top:top + th, left:left + tw]


def five_crop(x, size):
    """torchvision's ``five_crop``: (top-left, top-right, bottom-left, bottom-right, centre) windows,
    stacked on a new axis 1: (N, 5, C, h, w)."""
    (th, tw), (h, w) = size, x.shape[-2:]
    corners = [x[..., :th, :tw], x[..., :th, w - tw:], x[..., h - th:, :tw], x[..., h - th:, w - tw:]]
    return np.stack(corners + [center_crop(x, size)], axis=1)


class CenterCrop:
    """The centre ``size`` window of every image (torchvision's rounding of odd margins)."""

    def __init__(self, size):
        self.size = _size_pair(size)

    def __call__(self, x, rng=None):
        _check_crop("CenterCrop", self.size, x)
        return np.ascontiguousarray(center_crop(x, self.size))

    def __repr__(self):
        return f"CenterCrop({self.size})"


class TenCrop:
    """AlexNet's test-time patches (Sec. 4.1): the four corners and the centre, then the same five windows
    of the mirrored image, as torchvision's ``TenCrop`` orders them (``five_crop(x) + five_crop(hflip(x))``).

    (N, C, H, W) -> (N, 10, C, h, w); the evaluation runs the model on all N*10 patches and averages the
    ten softmax outputs of each image.
    """

    crops = 10

    def __init__(self, size):
        self.size = _size_pair(size)

    def __call__(self, x, rng=None):
        _check_crop("TenCrop", self.size, x)
        return np.concatenate([five_crop(x, self.size), five_crop(x[..., ::-1], self.size)], axis=1)

    def __repr__(self):
        return f"TenCrop({self.size})"


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


def rgb_principal_components(images, chunk=1024):
    """(eigenvalues, eigenvectors) of the 3x3 covariance of the RGB values of every pixel of ``images``
    (N, 3, H, W; uint8 scaled to [0, 1] as ``ToFloat`` does), eigenvalues in decreasing order, the
    eigenvectors as columns. Summed over chunks of images, so a whole training set never sits in
    float64 at once; the covariance divides by the number of pixels."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or not len(images):
        raise ValueError(f"rgb_principal_components: needs RGB images (N, 3, H, W), got shape {images.shape}")
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    total, outer, count = np.zeros(3), np.zeros((3, 3)), 0
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) * scale
        total += pixels.sum(axis=1)
        outer += pixels @ pixels.T
        count += pixels.shape[1]
    mean = total / count
    eigval, eigvec = np.linalg.eigh(outer / count - np.outer(mean, mean))
    order = np.argsort(eigval)[::-1]
    return eigval[order], eigvec[:, order]


class PCALighting:
    """AlexNet's colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, 0.1).

    Krizhevsky et al. 2012, section 4.1: the principal components of the RGB
    values over the training set, scaled by their eigenvalues times a fresh
    Gaussian draw per image, shift the image's colour along natural directions.
    ``PCALighting.from_images(train_images)`` computes them from a training set's
    pixels; without one, ImageNet's published decomposition is the default.
    """

    def __init__(self, alphastd=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
        self.alphastd = alphastd
        self.eigval, self.eigvec = np.asarray(eigval, np.float64), np.asarray(eigvec, np.float64)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(f"PCALighting: needs 3 eigenvalues and a 3x3 matrix of eigenvectors (columns), got "
                             f"shapes {self.eigval.shape} and {self.eigvec.shape}")

    @classmethod
    def from_images(cls, images, alphastd=0.1):
        """The lighting noise of a training set: the principal components of its pixels' RGB values."""
        return cls(alphastd, *rgb_principal_components(images))

    def __call__(self, x, rng):
        if x.shape[1] != 3:
            raise ValueError(f"PCALighting: needs RGB images (N, 3, H, W), got {x.shape}")
        alpha = rng.normal(0, self.alphastd, size=(len(x), 3))
        shift = (alpha * self.eigval) @ self.eigvec.T  # (N, 3): one RGB offset per image
        return (x + shift[:, :, None, None].astype(x.dtype)).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"PCALighting(alphastd={self.alphastd}, eigval={np.round(self.eigval, 4).tolist()})"

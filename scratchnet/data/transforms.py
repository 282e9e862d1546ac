"""Batch transforms: each takes a whole batch (N, C, H, W) and a random generator, and returns a batch.

Working on the batch, not one image at a time, keeps the loops inside NumPy:
a random crop is one fancy-index, a resize two matrix products. Names follow
torchvision's (``Normalize``, ``Pad``, ``RandomCrop``, ``RandomHorizontalFlip``,
``Resize``, ``CenterCrop``, ``TenCrop``) with AlexNet's PCA lighting noise added; ``AntialiasResize`` and
``imagenet_eval`` are torchvision's ImageNet evaluation preprocessing (Pillow's antialiased filters).

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


# --------------------------------------------------------------------------- antialiased resize (Pillow's filters)


def _triangle(x):
    """Pillow's bilinear filter (support 1)."""
    return np.maximum(1.0 - np.abs(x), 0.0)


def _cubic(x, a=-0.5):
    """Pillow's bicubic filter (Keys, a = -0.5; support 2)."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


FILTERS = {"bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}


def antialias_resize_matrix(in_size, out_size, interpolation="bilinear", dtype=np.float64):
    """(out, in) matrix of Pillow's resampling (``Image.resize``), which torchvision's ``antialias=True``
    reproduces: when shrinking, the filter is stretched by the scale, so every input pixel counts.

    Pillow's ``precompute_coeffs``: output pixel i is centred at (i + 0.5) * scale in the input; its
    window [int(centre - support + 0.5), int(centre + support + 0.5)) is clipped to the image, its
    weights are filter((j - centre + 0.5) / filterscale), normalised to sum 1.
    """
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation must be one of {', '.join(FILTERS)}, got {interpolation!r}")
    kernel, support = FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    centre = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int) cast truncates, like astype
    last = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(int(np.ceil(support)) * 2 + 1)
    columns = first[:, None] + taps  # (out, taps) input pixels of each window
    inside = columns < last[:, None]
    weights = np.where(inside, kernel((columns - centre[:, None] + 0.5) / filterscale), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], columns.shape)
    m[rows[inside], columns[inside]] = weights[inside]
    return m.astype(dtype)


def resized_size(height, width, size):
    """torchvision's ``Resize`` output size: an int sets the shorter side (the longer one keeps the aspect,
    truncated), a pair is (height, width)."""
    if not np.isscalar(size):
        return tuple(int(s) for s in size)
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = int(size), int(size * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficients for 8-bit images


def _pillow_8bit_pass(x, matrix):
    """One pass of Pillow's 8-bit resampling along the last axis: coefficients rounded to 22-bit fixed
    point, a half added, shifted back and clipped to 0..255. Every product and sum is an integer below
    2**53, so float64 arithmetic computes it exactly (with BLAS)."""
    scale = float(1 << PRECISION_BITS)
    fixed = np.trunc(matrix * scale + np.where(matrix < 0, -0.5, 0.5))
    sums = x.astype(np.float64) @ fixed.T + (1 << (PRECISION_BITS - 1))
    return np.clip(np.floor(sums / scale), 0, 255).astype(np.uint8)


class AntialiasResize:
    """Resize as torchvision's ``Resize(size, interpolation, antialias=True)``: an int ``size`` sets the
    shorter side; bilinear or bicubic with Pillow's antialiasing filters, one matrix per axis.

    uint8 images are resized exactly as Pillow resizes 8-bit images (torchvision on PIL images):
    fixed-point coefficients, rounding to 8 bits after each pass, horizontal first. Float images as
    torchvision's ``antialias=True`` on float tensors.
    """

    def __init__(self, size, interpolation="bilinear"):
        if interpolation not in FILTERS:
            raise ValueError(f"AntialiasResize: interpolation must be one of {', '.join(FILTERS)}, "
                             f"got {interpolation!r}")
        self.size, self.interpolation = size, interpolation

    def __call__(self, x, rng=None):
        h, w = x.shape[-2:]
        out_h, out_w = resized_size(h, w, self.size)
        if x.dtype == np.uint8:  # Pillow's order: horizontal pass first, then vertical
            if out_w != w:
                x = _pillow_8bit_pass(x, antialias_resize_matrix(w, out_w, self.interpolation))
            if out_h != h:
                x = _pillow_8bit_pass(x.swapaxes(-1, -2), antialias_resize_matrix(h, out_h, self.interpolation))
                x = np.ascontiguousarray(x.swapaxes(-1, -2))
            return x
        dtype = x.dtype if backend.is_floating(x.dtype) else backend.get_default_dtype()
        x = x.astype(dtype, copy=False)
        if out_w != w:
            x = x @ antialias_resize_matrix(w, out_w, self.interpolation, dtype).T
        if out_h != h:
            x = antialias_resize_matrix(h, out_h, self.interpolation, dtype) @ x
        return x

    def __repr__(self):
        return f"AntialiasResize({self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """The central ``size`` window, placed as torchvision's ``CenterCrop`` (offsets rounded half to even)."""

    def __init__(self, size):
        self.size = (size, size) if np.isscalar(size) else tuple(size)

    def __call__(self, x, rng=None):
        _check_crop("CenterCrop", self.size, x)
        return center_crop(x, self.size)

    def __repr__(self):
        return f"CenterCrop({self.size})"


# ImageNet's per-channel mean and standard deviation of RGB pixels in [0, 1] (torchvision's weights use them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_eval(resize_size=256, crop_size=224, interpolation="bilinear"):
    """ImageNet evaluation preprocessing as torchvision applies its weights' transform to a PIL image:
    uint8 RGB (N, 3, H, W) -> shorter side ``resize_size`` (Pillow's 8-bit antialiased resize) -> centre
    ``crop_size`` crop -> [0, 1] float32 -> normalised by ``IMAGENET_MEAN``/``IMAGENET_STD``. A batch
    holds images of one size: preprocess photographs one by one."""
    return Compose([AntialiasResize(resize_size, interpolation), CenterCrop(crop_size), ToFloat(np.float32),
                    Normalize(IMAGENET_MEAN, IMAGENET_STD)])


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

"""AlexNet's data (Krizhevsky et al. 2012, Sec. 4.1) as batch transforms: ten test patches equal to
torchvision's TenCrop (tests/fixtures/torchvision_twins.json, made by tools/make_torchvision_twins.py), the
centre crop's rounding, and the PCA lighting noise computed from a training set's pixels."""
import numpy as np
import pytest

from conftest import torchvision_twins
from scratchnet.data import transforms as T

TWINS = torchvision_twins()


@pytest.mark.parametrize("case", TWINS["ten_crop"], ids=lambda c: f"{c['height']}x{c['width']}-{c['size']}")
def test_ten_crop_equals_torchvisions(case):
    """Pixels numbered by position: every crop is torchvision's, in torchvision's order."""
    h, w = case["height"], case["width"]
    image = np.arange(2 * h * w, dtype=np.float64).reshape(1, 2, h, w)
    crops = T.TenCrop(case["size"])(np.concatenate([image, image + 1000]))  # a batch of two images
    expected = np.array(case["crops"])
    assert crops.shape == (2, 10, 2, *case["size"])
    np.testing.assert_array_equal(crops[0], expected)
    np.testing.assert_array_equal(crops[1], expected + 1000)


def test_five_windows_then_their_mirror_images(rng):
    x = rng.standard_normal((3, 2, 8, 9))
    crops = T.TenCrop((5, 6))(x)
    np.testing.assert_array_equal(crops[:, 0], x[..., :5, :6])  # top-left
    np.testing.assert_array_equal(crops[:, 3], x[..., 3:, 3:])  # bottom-right
    np.testing.assert_array_equal(crops[:, 5:], T.TenCrop((5, 6))(x[..., ::-1])[:, :5])
    # the mirrored image's top-left window is the mirror of the original's top-right one
    np.testing.assert_array_equal(crops[:, 5], x[..., :5, 3:][..., ::-1])
    np.testing.assert_array_equal(T.TenCrop(4)(x).shape, (3, 10, 2, 4, 4))


@pytest.mark.parametrize("height, width, size, top, left", [
    (7, 9, (4, 5), 2, 2),  # margins 1.5 and 2 -> round(1.5) = 2
    (8, 8, (3, 3), 2, 2),  # 2.5 -> 2: Python's round goes to the even number, as torchvision's centre crop
    (6, 11, (3, 6), 2, 2),  # 1.5 -> 2, 2.5 -> 2
    (9, 9, (9, 9), 0, 0)])
def test_center_crop_rounds_as_torchvision(rng, height, width, size, top, left):
    x = rng.standard_normal((2, 3, height, width))
    out = T.CenterCrop(size)(x)
    np.testing.assert_array_equal(out, x[..., top:top + size[0], left:left + size[1]])
    np.testing.assert_array_equal(out, T.TenCrop(size)(x)[:, 4])  # the fifth of the ten patches


def test_crops_larger_than_the_image_fail_clearly(rng):
    x = rng.standard_normal((1, 3, 8, 8))
    for transform in (T.CenterCrop(9), T.TenCrop((4, 9))):
        with pytest.raises(ValueError, match="larger than the image"):
            transform(x)


def test_principal_components_of_a_training_sets_pixels(rng):
    """The covariance of every pixel's RGB value (uint8 scaled to [0, 1]), eigenvalues largest first, summed in
    chunks: the same as NumPy's covariance of all the pixels at once."""
    mix = np.array([[1.0, 0.2, 0.1], [0.8, 0.5, 0.0], [0.6, 0.1, 0.9]])
    images = np.clip(rng.normal(0.45, 0.12, (20, 6, 5, 3)) @ mix.T * 200, 0, 255).astype(np.uint8)
    images = images.transpose(0, 3, 1, 2)  # (N, 3, H, W)
    eigval, eigvec = T.rgb_principal_components(images, chunk=7)
    pixels = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255
    cov = np.cov(pixels, bias=True)
    np.testing.assert_allclose(eigvec @ np.diag(eigval) @ eigvec.T, cov, rtol=1e-12, atol=1e-15)
    assert eigval[0] > eigval[1] > eigval[2] > 0
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(cov @ eigvec[:, 0], eigval[0] * eigvec[:, 0], rtol=1e-10)
    with pytest.raises(ValueError, match="RGB"):
        T.rgb_principal_components(images[:, :1])


def test_lighting_adds_the_components_scaled_by_eigenvalues_and_a_gaussian(rng):
    """I_xy += [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, one draw of a ~ N(0, 0.1) per image (Sec. 4.1)."""
    images = rng.integers(0, 256, (30, 3, 4, 4), dtype=np.uint8)
    lighting = T.PCALighting.from_images(images)
    eigval, eigvec = T.rgb_principal_components(images)
    np.testing.assert_array_equal(lighting.eigval, eigval)
    x = rng.standard_normal((5, 3, 4, 4))
    out = lighting(x, np.random.default_rng(7))
    alpha = np.random.default_rng(7).normal(0, 0.1, size=(5, 3))
    shift = np.einsum("ci,ni->nc", eigvec, alpha * eigval)
    np.testing.assert_allclose(out, x + shift[:, :, None, None], rtol=1e-12)
    default = T.PCALighting()  # no training set given: ImageNet's published decomposition
    np.testing.assert_array_equal(default.eigval, T.IMAGENET_EIGVAL)
    with pytest.raises(ValueError, match="3x3"):
        T.PCALighting(eigval=[1.0, 2.0], eigvec=np.eye(2))

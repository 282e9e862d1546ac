"""ImageNet preprocessing against torchvision (tests/fixtures/torchvision_transforms.npz, written by
tools/make_transforms_reference.py with torchvision 0.29.1), and the class names shipped as data."""
import numpy as np
import pytest

from conftest import FIXTURES
from scratchnet.data import imagenet_classes
from scratchnet.data import transforms as T

REFERENCE = np.load(FIXTURES / "torchvision_transforms.npz")
IMAGE = REFERENCE["image"][None]  # (1, 3, H, W) uint8, the decoded sample photograph


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_equals_torchvision_on_float_images(mode):
    image = IMAGE.astype(np.float32) / 255
    down = T.AntialiasResize(50, mode)(image)[0]
    np.testing.assert_allclose(down, REFERENCE[f"tensor_{mode}_down"], rtol=0, atol=2e-6)
    up = T.AntialiasResize(64, mode)(image[..., 100:140, 200:256])[0]
    np.testing.assert_allclose(up, REFERENCE[f"tensor_{mode}_up"], rtol=0, atol=2e-6)
    assert down.shape == (3, 50, 75) and up.shape == (3, 64, 89)  # shorter side set, aspect truncated


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_imagenet_eval_equals_torchvision_on_pil_images(mode):
    """torchvision resizes a PIL image with Pillow's 8-bit code; the uint8 path reproduces it bit for bit."""
    got = T.imagenet_eval(56, 48, mode)(IMAGE)[0]
    expected = REFERENCE[f"pil_{mode}"]
    assert got.shape == expected.shape == (3, 48, 48) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_resize_256_and_centre_crop_224_equal_torchvision_pixel_for_pixel():
    resized = T.AntialiasResize(256)(IMAGE)
    assert resized.dtype == np.uint8 and resized.shape[-2:] == (256, 384)  # torchvision's int(256 * 433 / 288)
    np.testing.assert_array_equal(T.CenterCrop(224)(resized)[0], REFERENCE["pil_uint8_256_224"])


def test_preprocessing_refuses_bad_arguments():
    with pytest.raises(ValueError, match="interpolation must be one of bilinear, bicubic"):
        T.AntialiasResize(10, "nearest")
    with pytest.raises(ValueError, match=r"crop \(300, 300\) is larger than the image \(288, 433\)"):
        T.CenterCrop(300)(IMAGE)


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000  # torchvision tells the two "crane"s apart ("crane bird")
    assert names[0] == "tench" and names[1] == "goldfish" and names[281] == "tabby" and names[999] == "toilet tissue"

"""DataLoader (batching, seeded shuffling, prefetch, resuming), batch transforms, and the synthetic shapes."""
import numpy as np
import pytest
import torch

from scratchnet.data import ArrayDataset, DataLoader, SyntheticShapes
from scratchnet.data import transforms as T


def make_dataset(n=23):
    inputs = np.arange(n * 2 * 3 * 3, dtype=np.float32).reshape(n, 2, 3, 3)
    return ArrayDataset(inputs, np.arange(n, dtype=np.int64))


# --------------------------------------------------------------------------- DataLoader


@pytest.mark.parametrize("drop_last, sizes", [(False, [5, 5, 5, 5, 3]), (True, [5, 5, 5, 5])])
def test_batches_cover_the_dataset_once(drop_last, sizes):
    loader = DataLoader(make_dataset(), batch_size=5, shuffle=True, seed=3, drop_last=drop_last)
    batches = list(loader)
    assert [len(y) for _, y in batches] == sizes and len(loader) == len(sizes)
    seen = np.concatenate([y for _, y in batches])
    assert len(np.unique(seen)) == len(seen)
    if not drop_last:
        np.testing.assert_array_equal(np.sort(seen), np.arange(23))
    for x, y in batches:  # inputs travel with their labels
        np.testing.assert_array_equal(x[:, 0, 0, 0], y * 18.0)


def test_shuffle_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate([y for _, y in loader])

    np.testing.assert_array_equal(order(1, 0), order(1, 0))
    assert not np.array_equal(order(1, 0), order(1, 1))
    assert not np.array_equal(order(1, 0), order(2, 0))
    unshuffled = DataLoader(make_dataset(), batch_size=4)
    np.testing.assert_array_equal(np.concatenate([y for _, y in unshuffled]), np.arange(23))


def test_prefetch_and_resume_give_the_same_batches():
    def flip(x, rng):
        return T.RandomHorizontalFlip()(x, rng)

    plain = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=5, transform=flip)
    ahead = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=5, transform=flip, prefetch=2)
    for loader in (plain, ahead):
        loader.set_epoch(2)
    expected = list(plain)
    got = list(ahead)
    assert len(got) == len(expected)
    for (x0, y0), (x1, y1) in zip(expected, got):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    # Resuming at batch 3 gives the tail of the epoch, augmentation included.
    for (x0, y0), (x1, y1) in zip(expected[3:], list(ahead.batches(start=3))):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)


def test_prefetch_reraises_errors_and_stops_early():
    def broken(x, rng):
        if x[0, 0, 0, 0] > 100:
            raise RuntimeError("bad sample")
        return x

    loader = DataLoader(make_dataset(), batch_size=4, transform=broken, prefetch=1)
    with pytest.raises(RuntimeError, match="bad sample"):
        list(loader)
    first = next(iter(DataLoader(make_dataset(), batch_size=4, prefetch=3)))  # abandoned generator
    assert first[1].tolist() == [0, 1, 2, 3]


def test_datasets_without_get_batch_are_stacked():
    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i * i, np.float32), i

    x, y = next(iter(DataLoader(Squares(), batch_size=3)))
    assert x.shape == (3, 1, 2, 2) and y.tolist() == [0, 1, 2] and x[2, 0, 0, 0] == 4


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(make_dataset(), batch_size=0)


# --------------------------------------------------------------------------- transforms


def test_to_float_normalize_pad():
    x = np.array([[[[0, 255]], [[51, 102]]]], dtype=np.uint8)
    f = T.ToFloat()(x)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, x / 255.0, rtol=1e-6)
    n = T.Normalize([0.5, 0.2], [0.5, 0.1])(f)
    np.testing.assert_allclose(n[0, 0, 0], [-1, 1], rtol=1e-6)
    np.testing.assert_allclose(n[0, 1, 0], [0, 2], rtol=1e-5, atol=1e-6)
    padded = T.Pad(2)(np.ones((1, 1, 28, 28), np.uint8))
    assert padded.shape == (1, 1, 32, 32) and padded.sum() == 28 * 28 and padded[0, 0, :2].sum() == 0
    with pytest.raises(ValueError, match="3 channels"):
        T.Normalize([0.5, 0.5], [1, 1])(np.zeros((1, 3, 2, 2)))


def test_random_crop_matches_per_image_slicing():
    rng_data = np.random.default_rng(0)
    x = rng_data.integers(0, 255, size=(6, 3, 8, 8)).astype(np.uint8)
    out = T.RandomCrop(8, padding=2)(x, np.random.default_rng(1))
    # Replay the same draws and crop image by image.
    draws = np.random.default_rng(1)
    top, left = draws.integers(0, 5, size=6), draws.integers(0, 5, size=6)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(6):
        np.testing.assert_array_equal(out[i], padded[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8])
    assert len({(t, l) for t, l in zip(top, left)}) > 1


def test_horizontal_flip_flips_about_half():
    x = np.arange(200 * 4, dtype=np.float32).reshape(200, 1, 1, 4)
    out = T.RandomHorizontalFlip()(x, np.random.default_rng(0))
    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | kept) and 60 < flipped.sum() < 140
    assert x[0, 0, 0, 0] == 0  # the input is not modified


@pytest.mark.parametrize("size", [(32, 32), (7, 13), (3, 2)])
def test_resize_matches_torch_bilinear(size):
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 8))
    out = T.Resize(size)(x)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-12)


def test_pca_lighting_adds_one_colour_shift_per_image():
    x = np.zeros((4, 3, 5, 5), np.float32)
    out = T.PCALighting(0.1)(x, np.random.default_rng(2))
    alpha = np.random.default_rng(2).normal(0, 0.1, size=(4, 3))
    for i in range(4):
        shift = T.IMAGENET_EIGVEC @ (alpha[i] * T.IMAGENET_EIGVAL)  # AlexNet's formula, one image at a time
        np.testing.assert_allclose(out[i, :, 2, 3], shift, rtol=1e-5)
        assert np.all(out[i] == out[i, :, :1, :1])  # the same shift at every pixel
    with pytest.raises(ValueError, match="RGB"):
        T.PCALighting()(np.zeros((1, 1, 2, 2)), np.random.default_rng(0))


def test_compose_applies_in_order():
    pipeline = T.Compose([T.ToFloat(), T.Pad(1), T.Normalize([0.5], [0.5])])
    out = pipeline(np.full((1, 1, 2, 2), 255, np.uint8), np.random.default_rng(0))
    assert out.shape == (1, 1, 4, 4) and out[0, 0, 0, 0] == -1 and out[0, 0, 1, 1] == 1


# --------------------------------------------------------------------------- synthetic detection set


def test_synthetic_shapes_are_deterministic_and_boxes_hold_their_shapes():
    data = SyntheticShapes(n=20, image_size=64, seed=7)
    images, targets = data.get_batch(np.arange(20))
    again, targets2 = SyntheticShapes(n=20, image_size=64, seed=7).get_batch(np.arange(20))
    np.testing.assert_array_equal(images, again)
    other, _ = SyntheticShapes(n=20, image_size=64, seed=8).get_batch(np.arange(20))
    assert not np.array_equal(images, other)
    assert images.shape == (20, 3, 64, 64) and images.dtype == np.uint8
    assert len(data.classes) == 9
    for image, target, target2 in zip(images, targets, targets2):
        boxes, labels = target["boxes"], target["labels"]
        np.testing.assert_array_equal(boxes, target2["boxes"])
        assert 1 <= len(boxes) == len(labels) <= 3
        assert np.all((boxes[:, :2] >= 0) & (boxes[:, 2:] <= 64) & (boxes[:, 2:] > boxes[:, :2]))
        assert np.all((labels >= 0) & (labels < 9))
        # The box's centre pixel has the colour of some object there (background stays below 70).
        for x0, y0, x1, y1 in boxes.astype(int):
            assert image[:, (y0 + y1) // 2, (x0 + x1) // 2].max() >= 200
    assert images.max(axis=1).min() < 70  # the background is dark

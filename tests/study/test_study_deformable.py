"""study deformable: the geometric task, the sampling-point trace and the effective dilation checked on cases whose
answer is known by hand, the verdict rule, and the whole study at a tiny size through the CLI."""
import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import study
from scratchnet.nn import DeformConv2dPack
from scratchnet.study.deformable import (SCALES, build_net, deformable_layers, effective_dilation, trace,
                                         transformed_fashion, verdict, warp)


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))


def test_warp_places_scales_and_rotates_the_item(rng):
    items = rng.uniform(0, 1, (2, 28, 28))
    ones, zeros = np.ones(2), np.zeros(2)
    same = warp(items, ones, zeros, np.zeros((2, 2)), 28)
    np.testing.assert_allclose(same, items, atol=1e-6)  # float32
    placed = warp(items, ones, zeros, np.array([[3.0, -2.0], [0.0, 0.0]]), 36)  # centre moved 3 down, 2 left
    np.testing.assert_allclose(placed[0, 7:35, 2:30], items[0], atol=1e-6)
    np.testing.assert_allclose(placed[1, 4:32, 4:32], items[1], atol=1e-6)
    assert placed[0, :7].max() == 0 and placed[0, :, 30:].max() == 0
    turned = warp(items, ones, np.full(2, np.pi / 2), np.zeros((2, 2)), 28)
    assert np.allclose(turned[0], np.rot90(items[0]), atol=1e-5) or np.allclose(turned[0], np.rot90(items[0], -1),
                                                                               atol=1e-5)
    bright = np.zeros((1, 28, 28))
    bright[0, 13:15, 13:15] = 1  # a 2x2 dot at the centre: twice the size covers about four times the area
    area = [warp(bright, np.array([s]), np.zeros(1), np.zeros((1, 2)), 36).sum() for s in (1.0, 2.0)]
    assert area[0] == pytest.approx(4, abs=1e-5) and area[1] == pytest.approx(16, rel=0.05)


def test_transformed_fashion_is_seeded_and_keeps_items_on_the_canvas():
    a = transformed_fashion(False, 50, 36, np.random.default_rng(3))
    b = transformed_fashion(False, 50, 36, np.random.default_rng(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    images, labels, scales = a
    assert images.shape == (50, 1, 36, 36) and images.dtype == np.float32 and labels.shape == (50,)
    assert scales.min() >= SCALES[0] and scales.max() <= SCALES[1]
    assert images.min() >= 0 and images.max() <= 1 and (images.reshape(50, -1).max(axis=1) > 0.3).all()


def _layers(strides=(1, 1, 1)):
    return [DeformConv2dPack(1, 1, 3, stride=s, padding=1) for s in strides]


def test_trace_of_zero_offsets_is_the_regular_receptive_field():
    """Three stride-1 3x3 layers: 9**3 points covering the 7x7 box around the pixel; a point's multiplicity is the
    number of ways three taps (each -1, 0 or 1 per axis) add up to it: 7 * 7 for the pixel itself."""
    layers = _layers()
    fields = [np.zeros((18, 11, 11)) for _ in layers]
    points = trace(layers, fields, np.array([5, 5]))
    assert points.shape == (729, 2)
    assert set(map(tuple, points.astype(int))) == {(r, c) for r in range(2, 9) for c in range(2, 9)}
    assert sum(tuple(p) == (5.0, 5.0) for p in points) == 7 * 7  # ways three taps per axis sum to 0: 7, squared


def test_trace_follows_offsets_and_strides():
    """Every tap moved one row down in every layer: the points move three rows down. A stride-2 middle layer
    samples its input at twice its output position."""
    layers = _layers()
    down = np.zeros((18, 11, 11))
    down[0::2] = 1.0  # dy of every tap
    moved = trace(layers, [down] * 3, np.array([5, 5]))
    still = trace(layers, [np.zeros_like(down)] * 3, np.array([5, 5]))
    np.testing.assert_array_equal(moved, still + [3, 0])
    strided = _layers((1, 2, 1))
    fields = [np.zeros((18, 12, 12)), np.zeros((18, 6, 6)), np.zeros((18, 6, 6))]
    points = trace(strided, fields, np.array([3, 3]))
    # last layer: rows 2..4; middle (stride 2): 2*(2..4) - 1 .. +1 = 3..9; first: 2..10
    assert points[:, 0].min() == 2 and points[:, 0].max() == 10


def test_effective_dilation_of_a_regular_and_of_a_stretched_grid():
    layer = DeformConv2dPack(1, 1, 3, padding=1)
    zero = np.zeros((2, 18, 4, 5))
    np.testing.assert_allclose(effective_dilation(layer, zero), 1.0)
    stretched = np.zeros((2, 9, 2, 4, 5))
    taps = np.arange(9)
    stretched[:, :, 0] = (taps // 3 - 1)[None, :, None, None]  # tap (i, j) moved to 2 * (i - 1, j - 1)
    stretched[:, :, 1] = (taps % 3 - 1)[None, :, None, None]
    np.testing.assert_allclose(effective_dilation(layer, stretched.reshape(2, 18, 4, 5)), 2.0)


def _runs(regular, deformable):
    return [dict(seed=i, regular=dict(accuracy=r), deformable=dict(accuracy=d))
            for i, (r, d) in enumerate(zip(regular, deformable))]


def test_verdict_compares_the_gap_with_the_seeds_spread():
    better = verdict(_runs([0.70, 0.71, 0.72], [0.80, 0.79, 0.81]))
    assert better["verdict"] == "deformable better"
    assert better["gap"] == pytest.approx(0.09) and better["spread"] == pytest.approx(0.01)
    assert verdict(_runs([0.70, 0.75, 0.80], [0.72, 0.77, 0.82]))["verdict"] == "within the spread"
    assert verdict(_runs([0.80, 0.81, 0.80], [0.70, 0.71, 0.70]))["verdict"] == "regular better"
    assert verdict(_runs([0.8], [0.9]))["verdict"].startswith("one seed")


def test_the_pair_starts_from_the_same_function(rng):
    """With the regular net loaded from the deformable one's weights (as the study does), v1's zero offsets make the two
    nets equal before training."""
    sn.manual_seed(0)
    regular, deformable = build_net(False), build_net(True, "v1")
    regular.load_state_dict({k: v for k, v in deformable.state_dict().items() if "conv_offset" not in k})
    x = sn.tensor(rng.standard_normal((2, 1, 36, 36)).astype(np.float32))
    regular.eval(), deformable.eval()
    np.testing.assert_allclose(deformable(x).numpy(), regular(x).numpy(), rtol=1e-5, atol=1e-5)
    assert len(deformable_layers(deformable)) == 4 and not deformable_layers(regular)


def test_the_study_runs_at_a_tiny_size_through_the_cli(tmp_path):
    argv = ["--out", str(tmp_path), "deformable", "--seeds", "2", "--steps", "2", "--batch-size", "4",
            "--train-images", "16", "--test-images", "24", "--stats-images", "12", "--version", "v2"]
    assert study.main(argv) == 0
    data = json.loads((tmp_path / "deformable.json").read_text())
    for png in ("deformable_sampling.png", "deformable_statistics.png"):
        assert (tmp_path / png).stat().st_size > 0
    assert [r["seed"] for r in data["runs"]] == [0, 1] and data["settings"]["offset_lr_mult"] == 0.1
    accuracy = np.array([[r["regular"]["accuracy"], r["deformable"]["accuracy"]] for r in data["runs"]])
    assert ((0 <= accuracy) & (accuracy <= 1)).all()
    assert data["summary"]["regular_mean"] == pytest.approx(accuracy[:, 0].mean())
    assert data["summary"]["gap"] == pytest.approx(accuracy[:, 1].mean() - accuracy[:, 0].mean())
    assert list(data["dilation"]) == ["layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"]
    for case in data["sampling"]:
        assert len(case["learned"]) == len(case["regular"]) == 729 and np.array(case["image"]).shape == (36, 36)


@pytest.mark.parametrize("option,value,says", [("--canvas", "30", "canvas must be a multiple of 4"),
                                               ("--seeds", "0", "argument --seeds: must be a positive int, got 0"),
                                               ("--lr", "0", "argument --lr: must be a finite number > 0"),
                                               ("--stats-images", "5000", "must not exceed test_images")])
def test_bad_options_are_one_line(tmp_path, capsys, option, value, says):
    assert study.main(["--out", str(tmp_path), "deformable", option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err

"""YOLOv1 / Fast YOLO: architecture (Figure 3), the loss (Eq. 3), targets, decoding, IoU, NMS and VOC mAP.

Reference numbers are computed in this file from the paper's Figure 3 (and darknet's
yolo-tiny.cfg for Fast YOLO), and the loss/NMS/mAP against independent loop implementations
or hand-worked cases.
"""
import itertools

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.models import get_model, list_models, yolo
from scratchnet.models.yolo import (YOLOLoss, average_precision, box_iou, decode, encode_targets,
                                    mean_average_precision, nms, yolo_loss)
from scratchnet.nn import BatchNorm2d, Conv2d, Dropout, LeakyReLU, Linear, MaxPool2d


# --------------------------------------------------------------------------- architecture


def conv_and_fc_param_count(convs, fc, in_channels=3):
    """Weights + biases of a stack of (kernel, filters) convs and (in, out) FC layers."""
    total, c = 0, in_channels
    for k, f in convs:
        total += k * k * c * f + f
        c = f
    return total + sum(i * o + o for i, o in fc)


# Figure 3, written out layer by layer: (kernel, filters)
FIGURE_3 = ([(7, 64), (3, 192), (1, 128), (3, 256), (1, 256), (3, 512)] + [(1, 256), (3, 512)] * 4
            + [(1, 512), (3, 1024)] + [(1, 512), (3, 1024)] * 2 + [(3, 1024)] * 4)
FIGURE_3_FC = [(7 * 7 * 1024, 4096), (4096, 7 * 7 * 30)]
# darknet cfg/yolo-tiny.cfg (v1): 9 3x3 convs, then connected 256, 4096, 1470
FAST_YOLO = [(3, f) for f in (16, 32, 64, 128, 256, 512, 1024, 1024, 1024)]
FAST_YOLO_FC = [(7 * 7 * 1024, 256), (256, 4096), (4096, 1470)]


@pytest.fixture(scope="module")
def full_yolov1():
    # ~1 GB of float32 weights, built once; torch's init (drawn once in the layers) halves the build time
    model = yolo.yolov1(init="torch")
    model.eval()
    return model


def test_registry_names():
    names = list_models()
    assert "yolov1" in names and "fast_yolov1" in names
    tiny = dict(width_mult=1 / 64, image_size=64)
    aliased = get_model("yolo", hidden_features=(2,), **tiny)
    assert sum(isinstance(m, Conv2d) for m in aliased.modules()) == 24
    fast = get_model("fast_yolo", hidden_features=(2, 2), **tiny)
    assert sum(isinstance(m, Conv2d) for m in fast.modules()) == 9
    assert (fast.S, fast.B, fast.num_classes) == (7, 2, 20)


def test_yolov1_figure3_params_and_forward_at_448(full_yolov1):
    model = full_yolov1
    assert len(FIGURE_3) == 24
    expected = conv_and_fc_param_count(FIGURE_3, FIGURE_3_FC)
    assert expected == 271_703_550
    assert model.num_parameters() == expected
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    assert [(m.kernel_size[0], m.out_channels) for m in convs] == FIGURE_3
    assert [m.stride[0] for m in convs] == [2] + [1] * 20 + [2, 1, 1]  # 7x7/2 first, 3x3/2 fourth from last
    assert all(m.padding == (m.kernel_size[0] // 2,) * 2 for m in convs)
    assert sum(isinstance(m, MaxPool2d) for m in model.modules()) == 4
    leaky = [m for m in model.modules() if isinstance(m, LeakyReLU)]
    assert len(leaky) == 25 and all(m.negative_slope == 0.1 for m in leaky)  # every layer but the last
    assert list(model.head)[-1].out_features == 7 * 7 * 30  # the linear output layer
    assert model.input_size == (3, 448, 448) and model.feature_shape == (1024, 7, 7)
    x = sn.tensor(np.random.default_rng(0).standard_normal((1, 3, 448, 448)).astype(np.float32))
    with sn.no_grad():
        out = model(x)
    assert out.shape == (1, 7, 7, 30)
    assert np.isfinite(out.numpy()).all()


def test_fast_yolov1_params_and_forward_at_448():
    model = yolo.fast_yolov1(init="torch").eval()
    expected = conv_and_fc_param_count(FAST_YOLO, FAST_YOLO_FC)
    assert expected == 45_089_374
    assert model.num_parameters() == expected
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    assert [(m.kernel_size[0], m.out_channels) for m in convs] == FAST_YOLO
    assert sum(isinstance(m, MaxPool2d) for m in model.modules()) == 6
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == FAST_YOLO_FC
    # the 256 layer is linear in the cfg: only convs and the 4096 layer are followed by leaky ReLU
    assert sum(isinstance(m, LeakyReLU) for m in model.modules()) == 10
    x = sn.tensor(np.random.default_rng(0).standard_normal((1, 3, 448, 448)).astype(np.float32))
    with sn.no_grad():
        assert model(x).shape == (1, 7, 7, 30)


def test_batch_norm_variant_drops_conv_bias_and_adds_bn():
    bn = yolo.fast_yolov1(batch_norm=True, init="torch")
    filters = sum(f for _, f in FAST_YOLO)
    assert bn.num_parameters() == conv_and_fc_param_count(FAST_YOLO, FAST_YOLO_FC) - filters + 2 * filters
    convs = [m for m in bn.modules() if isinstance(m, Conv2d)]
    assert all(m.bias is None for m in convs)
    assert sum(isinstance(m, BatchNorm2d) for m in bn.modules()) == 9
    tiny = dict(width_mult=1 / 64, hidden_features=(4,), image_size=64)
    plain, bn = yolo.yolov1(**tiny), yolo.yolov1(batch_norm=True, **tiny)
    filters = sum(max(1, round(f / 64)) for _, f in FIGURE_3)
    assert bn.num_parameters() == plain.num_parameters() + filters


@pytest.mark.parametrize("S,B,C", [(7, 2, 20), (4, 3, 5), (1, 1, 1)])
def test_output_shape_options(S, B, C):
    model = yolo.yolov1(num_classes=C, S=S, B=B, in_channels=1, image_size=64, width_mult=1 / 32,
                        hidden_features=(16,)).eval()
    assert model.input_size == (1, 64, 64)
    x = sn.tensor(np.zeros((2, 1, 64, 64), np.float32))
    assert model(x).shape == (2, S, S, B * 5 + C)
    assert list(model.head)[-1].out_features == S * S * (B * 5 + C)


def test_wrong_input_size_is_a_clear_error():
    model = yolo.fast_yolov1(width_mult=1 / 64, hidden_features=(2, 2), image_size=64)
    with pytest.raises(ValueError, match="image_size"):
        model(sn.tensor(np.zeros((1, 3, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="too small"):
        yolo.yolov1(image_size=16, width_mult=1 / 64)
    with pytest.raises(ValueError, match="hidden_features"):
        yolo.fast_yolov1(hidden_features=(8,))


TINY = dict(num_classes=3, S=2, B=2, image_size=64, width_mult=1 / 64)


@pytest.mark.parametrize("build, hidden", [(yolo.yolov1, (6,)), (yolo.fast_yolov1, (4, 6))])
def test_gradcheck_tiny(build, hidden, device):
    model = build(hidden_features=hidden, **TINY).to(device=device).double().eval()
    x = sn.tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)), requires_grad=True, device=device)
    assert sn.gradcheck(lambda x: model(x), [x], params=list(model.parameters()), max_elements=0)


def test_gradcheck_tiny_batch_norm_training_mode():
    # BN uses batch statistics in train mode (deterministic); dropout off so fn is repeatable
    model = yolo.yolov1(hidden_features=(6,), batch_norm=True, dropout=0.0, **TINY).double().train()
    x = sn.tensor(np.random.default_rng(2).standard_normal((3, 3, 64, 64)), requires_grad=True)
    assert sn.gradcheck(lambda x: model(x), [x], params=list(model.parameters()), max_elements=0)


def test_darknet_and_torch_initialisation():
    model = yolo.fast_yolov1(width_mult=1 / 4, hidden_features=(64, 512), image_size=64)
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    big = convs[-1]  # 256 x 256 x 3 x 3 weights: the sample std is within 1% of N(0, 2 / fan_in)'s
    assert np.std(big.weight.data) == pytest.approx(np.sqrt(2 / (256 * 9)), rel=0.01)
    for fc in linears:  # U(-sqrt(2 / in), sqrt(2 / in))
        bound = np.sqrt(2 / fc.in_features)
        assert np.abs(fc.weight.data).max() <= bound and np.abs(fc.weight.data).max() > 0.99 * bound
    assert all(not m.bias.data.any() for m in convs + linears)
    torch_style = yolo.fast_yolov1(width_mult=1 / 4, hidden_features=(64, 512), image_size=64, init="torch")
    assert all(m.bias.data.any() for m in torch_style.modules() if isinstance(m, (Conv2d, Linear)))
    with pytest.raises(ValueError, match="init"):
        yolo.fast_yolov1(width_mult=1 / 64, hidden_features=(2, 2), image_size=64, init="xavier")


def test_dropout_only_in_training():
    model = yolo.fast_yolov1(hidden_features=(8, 64), **TINY)
    dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5
    x = sn.tensor(np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32))
    model.train()
    assert not np.allclose(model(x).numpy(), model(x).numpy())
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


# --------------------------------------------------------------------------- IoU and NMS


def scalar_iou(a, b):
    """IoU of two corner boxes, written out longhand (the reference)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(rng, n):
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.02, 0.4, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def clustered_boxes(rng, n, clusters=4):
    """Boxes jittered around a few objects, as a detector's raw output: many heavy overlaps."""
    objects = random_boxes(rng, clusters)
    jitter = rng.normal(0, 0.03, (n, 4))
    return np.sort((objects[rng.integers(0, clusters, n)] + jitter).reshape(n, 2, 2), axis=1).reshape(n, 4)


def test_box_iou_hand_cases_and_reference():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 0, 0]], dtype=float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2]], dtype=float)
    expected = [[1 / 7, 1.0], [0.0, 0.25], [0.0, 0.0], [0.0, 0.0]]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=0, atol=1e-15)
    rng = np.random.default_rng(0)
    p, q = random_boxes(rng, 13), random_boxes(rng, 7)
    reference = [[scalar_iou(x, y) for y in q] for x in p]
    np.testing.assert_allclose(box_iou(p, q), reference, rtol=1e-12, atol=1e-15)
    assert box_iou(np.zeros((0, 4)), q).shape == (0, 7)


def brute_force_nms(boxes, scores, threshold, classes=None):
    """Reference: take the best remaining box, drop everything (of its class) overlapping it > threshold."""
    remaining = list(range(len(boxes)))
    kept = []
    while remaining:
        best = max(remaining, key=lambda i: (scores[i], -i))
        kept.append(best)
        remaining = [i for i in remaining if i != best and not (
            scalar_iou(boxes[i], boxes[best]) > threshold and (classes is None or classes[i] == classes[best]))]
    return kept


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("per_class", [False, True])
def test_nms_matches_brute_force(threshold, per_class):
    rng = np.random.default_rng(int(threshold * 10) + per_class)
    for _ in range(5):
        boxes, scores = clustered_boxes(rng, 40), rng.uniform(0, 1, 40)
        classes = rng.integers(0, 3, 40) if per_class else None
        got = nms(boxes, scores, threshold, classes=classes).tolist()
        assert got == brute_force_nms(boxes, scores, threshold, classes)
        assert 0 < len(got) < 40


def test_nms_hand_case_strictness_and_ties():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.5], [0, 0.5, 1, 1], [2, 2, 3, 3]], dtype=float)
    # box 1 and 2 overlap box 0 with IoU exactly 0.5 and each other not at all
    assert nms(boxes, [0.9, 0.8, 0.7, 0.6], 0.5).tolist() == [0, 1, 2, 3]  # 0.5 is not > 0.5
    assert nms(boxes, [0.9, 0.8, 0.7, 0.6], 0.49).tolist() == [0, 3]
    assert nms(boxes, [0.5, 0.8, 0.7, 0.6], 0.49).tolist() == [1, 2, 3]  # 0 is suppressed by 1
    assert nms(boxes, [0.5, 0.5, 0.5, 0.5], 0.49).tolist() == [0, 3]  # equal scores: input order
    assert nms(boxes, [0.9, 0.8, 0.7, 0.6], 0.49, classes=[0, 1, 0, 0]).tolist() == [0, 1, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


# --------------------------------------------------------------------------- average precision


def test_average_precision_hand_worked():
    # ranked detections: TP, FP (duplicate), TP, FP, TP over 3 ground truths
    recall = np.array([1, 1, 2, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    # envelope: 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1
    assert average_precision(recall, precision) == pytest.approx(34 / 45, abs=1e-15)
    # 11-point: t = 0..0.3 -> 1, t = 0.4..0.6 -> 2/3, t = 0.7..1 -> 3/5
    assert average_precision(recall, precision, use_07_metric=True) == pytest.approx(8.4 / 11, abs=1e-15)
    assert average_precision([0.5, 0.5], [1.0, 0.5]) == 0.5  # half the objects found, never the rest


def hand_case():
    gts = [(np.array([[0, 0, .5, .5], [.5, .5, 1, 1]]), np.array([0, 0])),
           (np.array([[0, 0, .4, .4]]), np.array([0]))]
    dets = [
        (np.array([[0, 0, .5, .5], [0, 0, .5, .49], [.5, .5, 1, .75]]), np.array([.9, .8, .5]), np.array([0, 0, 0])),
        (np.array([[0, 0, .4, .4], [.6, .6, .9, .9]]), np.array([.7, .6]), np.array([0, 0])),
    ]
    return dets, gts


def test_mean_average_precision_hand_case():
    # scores .9 TP, .8 duplicate of the same object -> FP, .7 TP, .6 no overlap -> FP,
    # .5 IoU exactly 0.5 with the second object -> TP (VOCevaldet: ovmax >= minoverlap)
    dets, gts = hand_case()
    assert mean_average_precision(dets, gts, num_classes=1) == pytest.approx(34 / 45, abs=1e-12)
    assert mean_average_precision(dets, gts, num_classes=1, use_07_metric=True) == pytest.approx(8.4 / 11, abs=1e-12)
    # a stricter threshold loses the last match: recall tops at 2/3; envelope 1 then 2/3
    assert mean_average_precision(dets, gts, iou_threshold=0.6) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3, abs=1e-12)


def test_mean_average_precision_classes_and_edge_cases():
    dets, gts = hand_case()
    # perfect detections of every ground truth -> 1
    perfect = [(b, np.linspace(1, 0.5, len(b)), c) for b, c in gts]
    assert mean_average_precision(perfect, gts) == 1.0
    # no detections -> 0; a class without ground truth is left out of the mean
    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2
    assert mean_average_precision(empty, gts, num_classes=1) == 0.0
    extra = [(np.concatenate([b, [[0, 0, 1, 1]]]), np.append(s, 0.99), np.append(c, 2)) for b, s, c in dets]
    aps = yolo.average_precisions(extra, gts, num_classes=3)
    assert np.isnan(aps[1]) and np.isnan(aps[2]) and aps[0] == pytest.approx(34 / 45)
    assert mean_average_precision(extra, gts, num_classes=3) == pytest.approx(34 / 45)
    # two classes: class 1 found perfectly, class 0 as in the hand case -> the mean of the two
    gts2 = [(np.concatenate([b, [[.1, .1, .2, .2]]]), np.append(c, 1)) for b, c in gts]
    dets2 = [(np.concatenate([b, [[.1, .1, .2, .2]]]), np.append(s, 0.1), np.append(c, 1)) for b, s, c in dets]
    assert mean_average_precision(dets2, gts2) == pytest.approx((34 / 45 + 1) / 2)


def test_map_duplicates_do_not_fall_back_and_difficult_is_ignored():
    gt = [(np.array([[0, 0, 1, 1], [0, 0, 1, .8]]), np.array([0, 0]))]
    # both detections match gt 0 best; the second also has IoU 0.8 with gt 1 but is still a duplicate (FP)
    det = [(np.array([[0, 0, 1, 1], [0, 0, 1, .99]]), np.array([.9, .8]), np.array([0, 0]))]
    assert mean_average_precision(det, gt) == pytest.approx(0.5)
    # marking gt 1 difficult: it no longer counts, so recall 1 at the first detection
    gt_difficult = [(gt[0][0], gt[0][1], np.array([False, True]))]
    assert mean_average_precision(det, gt_difficult) == 1.0
    # a detection matching only a difficult object is ignored (neither TP nor FP)
    det_on_difficult = [(np.array([[0, 0, 1, .8], [0, 0, 1, 1]]), np.array([.9, .8]), np.array([0, 0]))]
    gt_d = [(np.array([[0, 0, 1, 1], [0, 0, 1, .8]]), np.array([0, 0]), np.array([False, True]))]
    assert mean_average_precision(det_on_difficult, gt_d) == 1.0


# --------------------------------------------------------------------------- targets and decoding


def test_encode_targets_hand_case():
    boxes = [np.array([[0.1, 0.2, 0.3, 0.6]]),                          # centre (0.2, 0.4) -> S=4 cell row 1, col 0
             np.array([[0.5, 0.5, 1.0, 1.0], [0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]])]
    labels = [np.array([2]), np.array([1, 0, 0])]
    t = encode_targets(boxes, labels, S=4, C=3, dtype=np.float64)
    assert t.shape == (2, 4, 4, 8)
    np.testing.assert_allclose(t[0, 1, 0], [0.8, 0.6, 0.2, 0.4, 1, 0, 0, 1], atol=1e-12)
    assert t[0].sum() == pytest.approx(t[0, 1, 0].sum())
    # image 1: centre (0.75, 0.75) -> cell (3, 3) offsets (0, 0); the second box's centre falls into the same
    # cell: the first listed wins; the full-image box's centre (0.5, 0.5) -> cell (2, 2)
    np.testing.assert_allclose(t[1, 3, 3], [0, 0, 0.5, 0.5, 1, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(t[1, 2, 2], [0, 0, 1, 1, 1, 1, 0, 0], atol=1e-12)
    assert t[1, ..., 4].sum() == 2
    cxcywh = [yolo.box_xyxy_to_cxcywh(b) for b in boxes]
    np.testing.assert_array_equal(encode_targets(cxcywh, labels, S=4, C=3, box_format="cxcywh", dtype=np.float64), t)
    # a centre exactly on the far edge stays in the last cell
    edge = encode_targets([np.array([[1.0, 1.0, 0.5, 1.0]])], [np.array([0])], S=2, C=1, box_format="cxcywh")
    np.testing.assert_allclose(edge[0, 1, 1, :5], [1, 1, 0.5, 1.0, 1], atol=1e-7)
    assert encode_targets([np.zeros((0, 4))], [np.zeros(0, int)], S=2, C=1).sum() == 0


def test_encode_targets_errors():
    with pytest.raises(ValueError, match="labels"):
        encode_targets([np.array([[0, 0, .5, .5]])], [np.array([3])], S=2, C=3)
    with pytest.raises(ValueError, match="normalised"):
        encode_targets([np.array([[0, 0, 50, 50]])], [np.array([0])], S=2, C=3)
    with pytest.raises(ValueError, match="box_format"):
        encode_targets([np.array([[0, 0, .5, .5]])], [np.array([0])], box_format="xywh")


def perfect_prediction(target, B, C):
    """A network output that predicts the targets exactly with its first box (sqrt of w, h)."""
    n, S = target.shape[:2]
    pred = np.zeros((n, S, S, 5 * B + C))
    pred[..., 0:2] = target[..., 0:2]
    pred[..., 2:4] = np.sqrt(target[..., 2:4])
    pred[..., 4] = target[..., 4]
    pred[..., 5 * B:] = target[..., 5:]
    return pred


def test_decode_inverts_encode():
    rng = np.random.default_rng(0)
    centres = (np.array([[0, 0], [1, 2], [2, 1]]) + rng.uniform(0.35, 0.65, (3, 2))) / 3
    sizes = rng.uniform(0.05, 0.2, (3, 2))  # inside the image: decode clips to it
    boxes = yolo.box_cxcywh_to_xyxy(np.concatenate([centres, sizes], axis=1))
    labels = np.array([1, 0, 3])
    t = encode_targets([boxes], [labels], S=3, C=4, dtype=np.float64)
    pred = perfect_prediction(t, B=2, C=4)
    [(got_boxes, scores, classes)] = decode(pred, S=3, B=2, C=4, conf_threshold=0.5)
    assert len(got_boxes) == 3
    order = np.argsort(classes)
    np.testing.assert_allclose(got_boxes[order], boxes[np.argsort(labels)], atol=1e-12)
    np.testing.assert_array_equal(scores, 1.0)
    # and those detections score mAP 1 against the ground truth
    assert mean_average_precision(decode(pred, S=3, B=2, C=4), [(boxes, labels)]) == 1.0


def test_decode_scores_threshold_clipping_and_nms():
    S, B, C = 2, 2, 2
    pred = np.zeros((1, S, S, 5 * B + C))
    # cell (0, 0): box 0 centred (0.25, 0.25), 0.5 x 0.5; box 1 almost the same; class 1 prob 0.8
    pred[0, 0, 0, :5] = [0.5, 0.5, np.sqrt(0.5), np.sqrt(0.5), 0.9]
    pred[0, 0, 0, 5:10] = [0.5, 0.55, np.sqrt(0.5), np.sqrt(0.5), 0.6]
    pred[0, 0, 0, 10:] = [0.1, 0.8]
    # cell (1, 1) (row 1, col 1): a box hanging over the image edge, clipped; class 0
    pred[0, 1, 1, :5] = [0.9, 0.5, 0.6, 0.2, 0.5]
    pred[0, 1, 1, 10:] = [0.7, 0.2]
    [(boxes, scores, classes)] = decode(pred, S, B, C, conf_threshold=0.2)
    np.testing.assert_allclose(scores, [0.72, 0.48, 0.35])
    np.testing.assert_array_equal(classes, [1, 1, 0])
    np.testing.assert_allclose(boxes[0], [0, 0, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(boxes[1], [0, 0.025, 0.5, 0.525], atol=1e-12)
    cx, cy, w, h = (1 + 0.9) / 2, (1 + 0.5) / 2, 0.36, 0.04
    np.testing.assert_allclose(boxes[2], [cx - w / 2, cy - h / 2, 1.0, cy + h / 2], atol=1e-12)
    [(_, scores, _)] = decode(pred, S, B, C, conf_threshold=0.4)
    np.testing.assert_allclose(scores, [0.72, 0.48])
    [(_, scores, _)] = decode(sn.tensor(pred.reshape(1, -1)), S, B, C, conf_threshold=0.2, nms_threshold=0.5)
    np.testing.assert_allclose(scores, [0.72, 0.35])  # the near-duplicate is suppressed


# --------------------------------------------------------------------------- the loss


def reference_loss(pred, target, S, B, C, lambda_coord=5.0, lambda_noobj=0.5, confidence_target="iou"):
    """Eq. (3) written with loops over images, cells and predictors (independent of the vectorised code)."""
    def corners(x, y, w, h, i, j):
        cx, cy = (j + x) / S, (i + y) / S
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]

    total = 0.0
    for n, i, j in itertools.product(range(pred.shape[0]), range(S), range(S)):
        p, t = pred[n, i, j], target[n, i, j]
        has_object = t[4] == 1
        responsible = -1
        if has_object:
            truth = corners(t[0], t[1], t[2], t[3], i, j)
            ious, errors = [], []
            for b in range(B):
                x, y, sw, sh = p[5 * b:5 * b + 4]
                box = corners(x, y, sw ** 2, sh ** 2, i, j)
                ious.append(scalar_iou(box, truth))
                centre = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, sw ** 2, sh ** 2]
                errors.append(np.sqrt(sum((a - c) ** 2 for a, c in zip(centre, [(truth[0] + truth[2]) / 2,
                                                                          (truth[1] + truth[3]) / 2, t[2], t[3]]))))
            responsible = int(np.argmax(ious)) if max(ious) > 0 else int(np.argmin(errors))
            x, y, sw, sh, c = p[5 * responsible:5 * responsible + 5]
            total += lambda_coord * ((x - t[0]) ** 2 + (y - t[1]) ** 2)
            total += lambda_coord * ((sw - np.sqrt(t[2])) ** 2 + (sh - np.sqrt(t[3])) ** 2)
            goal = ious[responsible] if confidence_target == "iou" else 1.0
            total += (c - goal) ** 2
            total += sum((p[5 * B + k] - t[5 + k]) ** 2 for k in range(C))
        for b in range(B):
            if b != responsible:
                total += lambda_noobj * p[5 * b + 4] ** 2
    return total / pred.shape[0]


def loss_case(seed=0, n=3, S=3, B=2, C=4):
    rng = np.random.default_rng(seed)
    boxes = [random_boxes(rng, k) for k in (3, 1, 4)[:n]]
    labels = [rng.integers(0, C, len(b)) for b in boxes]
    target = encode_targets(boxes, labels, S=S, C=C, dtype=np.float64)
    pred = rng.uniform(0.05, 0.95, (n, S, S, 5 * B + C))  # positive sqrt(w), sqrt(h) and offsets in the cell
    return pred, target


@pytest.mark.parametrize("confidence_target", ["iou", "one"])
def test_loss_matches_loop_reference(confidence_target, device):
    pred, target = loss_case()
    got = yolo_loss(sn.tensor(pred, device=device), target, S=3, B=2, C=4, confidence_target=confidence_target)
    expected = reference_loss(pred, target, 3, 2, 4, confidence_target=confidence_target)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    module = YOLOLoss(S=3, B=2, C=4, lambda_coord=2.0, lambda_noobj=0.25, confidence_target=confidence_target)
    flat = sn.tensor(pred.reshape(3, -1), device=device)
    expected = reference_loss(pred, target, 3, 2, 4, 2.0, 0.25, confidence_target)
    assert module(flat, sn.tensor(target, device=device)).item() == pytest.approx(expected, rel=1e-12)


def test_loss_components_and_hand_case():
    # one image, S=1, B=2, C=1: truth centred, 0.5 x 0.5. Predictor 0 matches it exactly; predictor 1 is off.
    target = encode_targets([np.array([[0.25, 0.25, 0.75, 0.75]])], [np.array([0])], S=1, C=1, dtype=np.float64)
    pred = np.array([0.5, 0.5, np.sqrt(0.5), np.sqrt(0.5), 0.7,    # IoU 1 -> responsible
                     0.6, 0.5, 0.5, 0.5, 0.4,                       # 0.25 x 0.25 box: IoU 1/4
                     0.3]).reshape(1, 1, 1, 11)
    total, parts = yolo_loss(sn.tensor(pred), target, S=1, B=2, C=1, return_components=True)
    assert parts["xy"] == 0 and parts["wh"] == pytest.approx(0, abs=1e-25)
    assert parts["obj"] == pytest.approx((0.7 - 1.0) ** 2)      # confidence goal = IoU = 1
    assert parts["noobj"] == pytest.approx(0.5 * 0.4 ** 2)      # predictor 1 is not responsible
    assert parts["class"] == pytest.approx((0.3 - 1) ** 2)
    assert total.item() == pytest.approx(sum(parts.values()))
    # swap roles: predictor 1 exact, predictor 0 off -> predictor 1 becomes responsible
    swapped = pred.copy()
    swapped[0, 0, 0, :5], swapped[0, 0, 0, 5:10] = pred[0, 0, 0, 5:10], pred[0, 0, 0, :5]
    _, parts = yolo_loss(sn.tensor(swapped), target, S=1, B=2, C=1, return_components=True)
    assert parts["noobj"] == pytest.approx(0.5 * 0.4 ** 2) and parts["obj"] == pytest.approx(0.09)


def test_responsible_predictor_falls_back_to_rmse_without_overlap():
    target = encode_targets([np.array([[0.4, 0.4, 0.6, 0.6]])], [np.array([0])], S=1, C=1, dtype=np.float64)
    pred = np.zeros((1, 1, 1, 11))
    pred[0, 0, 0, :4] = [0.0, 0.0, 0.1, 0.1]   # tiny box at the corner, far away
    pred[0, 0, 0, 5:9] = [0.2, 0.2, 0.1, 0.1]  # tiny box, no overlap either, but closer
    mask, iou = yolo.responsible_predictors(pred[..., :10].reshape(1, 1, 1, 2, 5), target, S=1)
    np.testing.assert_array_equal(iou, 0)
    np.testing.assert_array_equal(mask[0, 0, 0], [0, 1])
    # no object in the cell: nobody is responsible
    mask, _ = yolo.responsible_predictors(pred[..., :10].reshape(1, 1, 1, 2, 5), np.zeros_like(target), S=1)
    assert mask.sum() == 0


def ties_are_far(pred, target, S, B):
    """True when no object cell is close to switching its responsible predictor (gradcheck is valid)."""
    boxes = pred[..., :5 * B].reshape(pred.shape[:3] + (B, 5))
    _, iou = yolo.responsible_predictors(boxes, target, S)
    top2 = np.sort(iou, axis=-1)[..., -2:]
    gaps = (top2[..., 1] - top2[..., 0])[target[..., 4] > 0]
    return (gaps > 1e-3).all() and (top2[..., 1][target[..., 4] > 0] > 1e-3).all()


def test_loss_gradcheck_confidence_one(device):
    pred, target = loss_case(seed=1)
    assert ties_are_far(pred, target, 3, 2)
    x = sn.tensor(pred, requires_grad=True, device=device)
    assert sn.gradcheck(lambda p: yolo_loss(p, target, S=3, B=2, C=4, confidence_target="one"), [x])


def test_loss_gradcheck_confidence_iou():
    # the IoU goal is a constant computed from the box coordinates: perturbing those would move it, so the
    # coordinates are held fixed and the check runs over confidences and class scores (the "one" test above
    # covers the coordinates: their gradient does not depend on the confidence goal)
    pred, target = loss_case(seed=6)
    assert ties_are_far(pred, target, 3, 2)
    n, S, B, C = 3, 3, 2, 4
    coords = sn.tensor(pred[..., :5 * B].reshape(n, S, S, B, 5)[..., :4])
    confidence = sn.tensor(pred[..., :5 * B].reshape(n, S, S, B, 5)[..., 4:], requires_grad=True)
    classes = sn.tensor(pred[..., 5 * B:], requires_grad=True)

    def loss(confidence, classes):
        boxes = sn.cat([coords, confidence], dim=-1).reshape(n, S, S, 5 * B)
        return yolo_loss(sn.cat([boxes, classes], dim=-1), target, S=S, B=B, C=C)

    assert sn.gradcheck(loss, [confidence, classes])


def test_loss_backward_through_tiny_model():
    model = yolo.yolov1(hidden_features=(6,), **TINY).double().eval()
    rng = np.random.default_rng(4)
    x = sn.tensor(rng.standard_normal((2, 3, 64, 64)), requires_grad=True)
    target = encode_targets([random_boxes(rng, 2), random_boxes(rng, 1)], [[0, 2], [1]], S=2, C=3, dtype=np.float64)
    criterion = YOLOLoss(S=2, B=2, C=3, confidence_target="one")
    assert sn.gradcheck(lambda x: criterion(model(x), target), [x], params=list(model.parameters()),
                        max_elements=0)


def test_loss_errors():
    pred, target = loss_case()
    with pytest.raises(ValueError, match="S, S, B\\*5 \\+ C"):
        yolo_loss(sn.tensor(pred), target, S=3, B=2, C=5)
    with pytest.raises(ValueError, match="encode_targets"):
        yolo_loss(sn.tensor(pred), target[:2], S=3, B=2, C=4)
    with pytest.raises(ValueError, match="confidence_target"):
        yolo_loss(sn.tensor(pred), target, S=3, B=2, C=4, confidence_target="half")
    with pytest.raises(TypeError, match="Tensor"):
        yolo_loss(pred, target, S=3, B=2, C=4)

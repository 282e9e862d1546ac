"""Detection utilities shared by detectors: box conversions, IoU, greedy NMS, VOC mean average precision.

Boxes are rows ``(x1, y1, x2, y2)`` (corners) or ``(cx, cy, w, h)`` (centre
and size), in any consistent unit (YOLO uses coordinates normalised to the
image, [0, 1]). Everything here is evaluation and post-processing: it runs on
host NumPy arrays (device arrays and Tensors are copied to the host first) and
records no gradient.

Conventions (documented, since detectors differ on them):
* IoU of two boxes whose union has zero area is 0 (never NaN).
* Continuous coordinates: no "+1 pixel" in widths (the VOC devkit adds it
  because it works in integer pixel indices).
* ``nms`` suppresses a box whose IoU with a kept, higher-scoring box is
  strictly greater than ``iou_threshold`` (torchvision.ops.nms's rule).
* ``mean_average_precision`` matches a detection to a ground truth when
  IoU >= ``iou_threshold`` (VOCevaldet.m in the VOC2012 devkit: ``ovmax >= minoverlap``).
"""
import numpy as np

from .. import backend
from ..autograd import Tensor


def _host(array, dtype=None):
    """A NumPy array from a Tensor, a NumPy/CuPy array or a nested list."""
    if isinstance(array, Tensor):
        array = array.data
    array = backend.to_numpy(array) if not isinstance(array, (list, tuple)) else np.asarray(array)
    return array if dtype is None else array.astype(dtype, copy=False)


def _boxes(boxes, op):
    boxes = _host(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: boxes must have shape (K, 4), got {boxes.shape}")
    return boxes


# --------------------------------------------------------------------------- conversions


def box_cxcywh_to_xyxy(boxes):
    """(cx, cy, w, h) -> (x1, y1, x2, y2) along the last axis (any leading shape)."""
    boxes = _host(boxes)
    cx, cy, w, h = (boxes[..., k] for k in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_xyxy_to_cxcywh(boxes):
    """(x1, y1, x2, y2) -> (cx, cy, w, h) along the last axis (any leading shape)."""
    boxes = _host(boxes)
    x1, y1, x2, y2 = (boxes[..., k] for k in range(4))
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


# --------------------------------------------------------------------------- IoU


def elementwise_iou(a, b):
    """IoU of corresponding (x1, y1, x2, y2) boxes along the last axis; leading axes broadcast.

    Works on NumPy or CuPy arrays (the YOLO loss calls it on device arrays).
    """
    xp = backend.get_array_module(a, b)
    inter_w = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0)
    inter_h = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0)
    inter = inter_w * inter_h
    area_a = xp.maximum(a[..., 2] - a[..., 0], 0) * xp.maximum(a[..., 3] - a[..., 1], 0)
    area_b = xp.maximum(b[..., 2] - b[..., 0], 0) * xp.maximum(b[..., 3] - b[..., 1], 0)
    union = area_a + area_b - inter
    return xp.where(union > 0, inter / xp.where(union > 0, union, 1), 0)


def box_iou(boxes1, boxes2):
    """The (M, N) matrix of IoUs between (M, 4) and (N, 4) corner boxes (torchvision.ops.box_iou)."""
    boxes1, boxes2 = _boxes(boxes1, "box_iou"), _boxes(boxes2, "box_iou")
    return elementwise_iou(boxes1[:, None, :], boxes2[None, :, :])


# --------------------------------------------------------------------------- non-maximum suppression


def nms(boxes, scores, iou_threshold=0.5, classes=None):
    """Greedy non-maximum suppression; returns the kept indices, highest score first.

    Walk the boxes from the highest score down; keep a box unless a box already
    kept overlaps it with IoU > ``iou_threshold``. With ``classes`` (one label
    per box) boxes only suppress boxes of their own class (per-class NMS, as
    torchvision's ``batched_nms``). Equal scores keep their input order.
    """
    boxes = _boxes(boxes, "nms")
    scores = _host(scores, np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    if classes is not None:
        classes = _host(classes).reshape(-1)
        if len(classes) != len(boxes):
            raise ValueError(f"nms: {len(boxes)} boxes but {len(classes)} class labels")
        overlaps &= classes[order][:, None] == classes[order][None, :]
    keep = np.ones(len(order), dtype=bool)
    # sequential by nature (a suppressed box suppresses nothing); one vector step per box
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~overlaps[i, i + 1:]
    return order[keep]


# --------------------------------------------------------------------------- mean average precision


def average_precision(recall, precision, use_07_metric=False):
    """Area under a precision/recall curve, the PASCAL VOC way.

    All-point interpolation (VOC2010 onwards): make precision monotone
    (p(r) = max precision at any recall >= r), then sum p over every step of
    recall. ``use_07_metric``: the VOC2007 11-point version, the mean of
    p(r) at r = 0, 0.1, ..., 1 (0 where the recall is never reached).
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if use_07_metric:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def average_precisions(detections, ground_truths, iou_threshold=0.5, num_classes=None, use_07_metric=False):
    """Per-class VOC average precision; NaN for a class without ground truth.

    ``detections``: one entry per image, ``(boxes (K, 4), scores (K,), classes (K,))``
    (what ``yolo.decode`` returns). ``ground_truths``: one entry per image,
    ``(boxes (G, 4), classes (G,))`` or ``(boxes, classes, difficult (G,) bool)``;
    as in VOC, "difficult" objects are not counted and detections matching
    them are ignored (neither true nor false positives).

    Matching follows VOCevaldet.m: walk all detections of a class, over all
    images, in decreasing score; each looks only at the ground truth of its
    image with the highest IoU: if that IoU >= ``iou_threshold`` and this
    ground truth is not yet taken, a true positive (it takes it); otherwise
    (already taken, or IoU too low) a false positive. A duplicate does not
    fall back to the second-best ground truth.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"average_precisions: {len(detections)} images of detections but "
                         f"{len(ground_truths)} of ground truth")
    dets = [(_boxes(b, "average_precisions"), _host(s, np.float64).reshape(-1), _host(c).reshape(-1).astype(np.int64))
            for b, s, c in detections]
    gts = []
    for entry in ground_truths:
        boxes, labels = _boxes(entry[0], "average_precisions"), _host(entry[1]).reshape(-1).astype(np.int64)
        difficult = (_host(entry[2]).reshape(-1).astype(bool) if len(entry) > 2
                     else np.zeros(len(labels), dtype=bool))
        if not len(boxes) == len(labels) == len(difficult):
            raise ValueError(f"average_precisions: ground truth with {len(boxes)} boxes, {len(labels)} "
                             f"labels and {len(difficult)} difficult flags")
        gts.append((boxes, labels, difficult))
    if num_classes is None:
        labels = [c for _, _, c in dets] + [c for _, c, _ in gts]
        num_classes = int(max((c.max() for c in labels if len(c)), default=-1)) + 1

    aps = np.full(num_classes, np.nan)
    for cls in range(num_classes):
        n_positive = sum(int(((labels == cls) & ~difficult).sum()) for _, labels, difficult in gts)
        if n_positive == 0:
            continue
        # every detection of this class: (image, score, box); gt boxes of this class per image
        image_ids = np.concatenate([np.full(int((c == cls).sum()), i) for i, (_, _, c) in enumerate(dets)]
                                   + [np.zeros(0, np.int64)]).astype(np.int64)
        det_scores = np.concatenate([s[c == cls] for _, s, c in dets] + [np.zeros(0)])
        det_boxes = np.concatenate([b[c == cls] for b, _, c in dets] + [np.zeros((0, 4))])
        gt_of_image = [(b[labels == cls], difficult[labels == cls]) for b, labels, difficult in gts]
        taken = [np.zeros(len(b), dtype=bool) for b, _ in gt_of_image]

        order = np.argsort(-det_scores, kind="stable")
        true_pos, false_pos = np.zeros(len(order)), np.zeros(len(order))
        for rank, d in enumerate(order):
            gt_boxes, gt_difficult = gt_of_image[image_ids[d]]
            if len(gt_boxes) == 0:
                false_pos[rank] = 1
                continue
            ious = box_iou(det_boxes[d:d + 1], gt_boxes)[0]
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                if gt_difficult[best]:
                    continue  # ignored, as in VOC
                if not taken[image_ids[d]][best]:
                    true_pos[rank] = 1
                    taken[image_ids[d]][best] = True
                else:
                    false_pos[rank] = 1  # a duplicate detection
            else:
                false_pos[rank] = 1
        tp, fp = np.cumsum(true_pos), np.cumsum(false_pos)
        recall = tp / n_positive
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[cls] = average_precision(recall, precision, use_07_metric)
    return aps


def mean_average_precision(detections, ground_truths, iou_threshold=0.5, num_classes=None, use_07_metric=False):
    """VOC-style mAP: the mean of ``average_precisions`` over the classes that have ground truth.

    ``iou_threshold=0.5`` gives mAP@0.5; all-point interpolation (VOC2010+) by
    default, the VOC2007 11-point metric with ``use_07_metric=True``.
    Returns NaN when no class has ground truth.
    """
    aps = average_precisions(detections, ground_truths, iou_threshold, num_classes, use_07_metric)
    present = aps[~np.isnan(aps)]
    return float(present.mean()) if len(present) else float("nan")

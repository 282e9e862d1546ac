"""YOLOv1 and Fast YOLO (Redmon, Divvala, Girshick, Farhadi, "You Only Look Once", CVPR 2016).

The image is divided into an S x S grid; each cell predicts B boxes (x, y,
w, h, confidence) and C class probabilities, so the network ends in an
S x S x (B*5 + C) tensor: 7 x 7 x 30 for PASCAL VOC (S=7, B=2, C=20, Sec. 2).

Per cell the last axis holds, in order (our layout, documented because
implementations differ; darknet's detection layer stores all classes first):

    [x, y, sqrt(w), sqrt(h), confidence] * B, then C class probabilities

* x, y: the box centre as an offset inside its cell, in [0, 1] (Sec. 2);
* sqrt(w), sqrt(h): the network predicts the SQUARE ROOT of the box width and
  height (relative to the image) directly, as darknet does with ``sqrt=1`` in
  its detection layer. The loss's sqrt(w) term (Eq. 3) then needs no sqrt of
  a prediction (which could be negative), and decoding squares it: w = out^2.
* every output is linear (no sigmoid/softmax in v1): the last layer has a
  linear activation, every other layer leaky ReLU 0.1 (Sec. 2.2).

Grid indexing: ``pred[n, i, j]`` is the cell in row i (y) and column j (x);
box centre cx = (j + x) / S, cy = (i + y) / S.

Figure 3, the 24 convolutional layers of YOLOv1 (448 x 448 x 3 input), is
``YOLOV1_CONVS`` below; Fast YOLO's 9 layers follow darknet's config. After
the tables: the blocks and the model, target encoding, the loss (Eq. 3) and
decoding. Box IoU, NMS and VOC mAP live in ``detection.py`` and are
re-exported here, so a training loop needs only this module.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..functional.conv import conv_output_size
from ..functional.math import check_float
from ..nn import init as nn_init
from ..nn.layers import BatchNorm2d, Conv2d, Dropout, Flatten, LeakyReLU, Linear, MaxPool2d
from ..nn.module import Module, Sequential
from .detection import (average_precision, average_precisions, box_cxcywh_to_xyxy, box_iou,  # noqa: F401
                        box_xyxy_to_cxcywh, elementwise_iou, mean_average_precision, nms)
from .registry import Recipe, register_model

__all__ = [
    "YOLOv1", "yolov1", "fast_yolov1", "yolo_loss", "YOLOLoss", "encode_targets", "decode", "nms", "box_iou",
    "mean_average_precision", "average_precisions", "average_precision", "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
]

# --------------------------------------------------------------------------- architecture tables

M = "M"  # 2x2 max pool, stride 2

# Figure 3 of the paper, top to bottom: (kernel, filters, stride) per conv, padding kernel // 2.
YOLOV1_CONVS = [
    (7, 64, 2), M,                                                # 448 -> 224 -> 112
    (3, 192, 1), M,                                               # -> 56
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), M,        # -> 28
    *[(1, 256, 1), (3, 512, 1)] * 4, (1, 512, 1), (3, 1024, 1), M,  # -> 14
    *[(1, 512, 1), (3, 1024, 1)] * 2, (3, 1024, 1), (3, 1024, 2),   # -> 7
    (3, 1024, 1), (3, 1024, 1),
]
# Then two fully connected layers: 4096 (leaky ReLU, dropout 0.5 after it, Sec. 2.2) and the
# linear 7*7*30 output. Head tables: (out_features, activation) per hidden layer;
# "dropout" marks where the paper puts its dropout(0.5).
YOLOV1_HEAD = [(4096, "leaky"), "dropout"]

# Fast YOLO (Sec. 2: "9 convolutional layers instead of 24, and fewer filters in those layers";
# the paper gives no table). Source: darknet's cfg/yolo-tiny.cfg as of the v1 release
# (github.com/pjreddie/darknet, commit eaf033c0570308dfcd381ed61d274c7f5add7cfc): 3x3 convs of
# 16-32-64-128-256-512 each followed by a 2x2/2 max pool, then 1024-1024-1024 at 7x7, all leaky
# ReLU 0.1, no batch norm; then connected 256 (linear), connected 4096 (leaky), dropout 0.5,
# connected 1470 (linear). (The later cfg/yolov1-tiny.cfg is another net: BN, 1024-256 last convs,
# one connected layer.)
FAST_YOLOV1_CONVS = [
    (3, 16, 1), M, (3, 32, 1), M, (3, 64, 1), M, (3, 128, 1), M, (3, 256, 1), M, (3, 512, 1), M,
    (3, 1024, 1), (3, 1024, 1), (3, 1024, 1),
]
FAST_YOLOV1_HEAD = [(256, "linear"), (4096, "leaky"), "dropout"]

LEAKY_SLOPE = 0.1  # Sec. 2.2: phi(x) = x if x > 0 else 0.1 x


# --------------------------------------------------------------------------- blocks


class ConvBlock(Sequential):
    """Conv (+ BatchNorm) + leaky ReLU 0.1. The paper's convs have biases and no BN; with
    ``batch_norm`` (the darknet/YOLOv2-style variant) the conv drops its bias, BN's beta replaces it."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, batch_norm=False):
        layers = [Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                         bias=not batch_norm)]
        if batch_norm:
            layers.append(BatchNorm2d(out_channels))
        layers.append(LeakyReLU(LEAKY_SLOPE))
        super().__init__(*layers)


class YOLOv1(Module):
    """A YOLOv1-family detector: conv features, fully connected head, output (N, S, S, B*5 + C).

    ``convs`` / ``head``: tables as above. Options: ``S``, ``B``, ``num_classes``;
    ``in_channels``; ``image_size`` (square input side; the first FC layer's
    size depends on it); ``width_mult`` (scales every conv's filters,
    ``max(1, round(c * width_mult))``) and ``hidden_features`` (replaces the
    hidden FC sizes) for tiny configurations; ``batch_norm``; ``dropout``;
    ``init``: "darknet" (default, the authors' code) or "torch" (torch's layer defaults).
    """

    def __init__(self, convs, head, num_classes=20, S=7, B=2, in_channels=3, image_size=448, width_mult=1.0,
                 hidden_features=None, batch_norm=False, dropout=0.5, init="darknet"):
        super().__init__()
        if min(S, B, num_classes, in_channels, image_size) < 1 or width_mult <= 0:
            raise ValueError(f"YOLOv1: S={S}, B={B}, num_classes={num_classes}, in_channels={in_channels}, "
                             f"image_size={image_size} must be >= 1 and width_mult={width_mult} > 0")
        self.S, self.B, self.num_classes = S, B, num_classes
        self.input_size = (in_channels, image_size, image_size)

        layers, channels, size = [], in_channels, image_size
        for entry in convs:
            if entry == M:
                layers.append(MaxPool2d(2, 2))
                size = conv_output_size(size, 2, 2, 0)
            else:
                kernel, filters, stride = entry
                filters = max(1, int(round(filters * width_mult)))
                layers.append(ConvBlock(channels, filters, kernel, stride, batch_norm))
                channels, size = filters, conv_output_size(size, kernel, stride, kernel // 2)
            if size < 1:
                raise ValueError(f"YOLOv1: image_size={image_size} is too small for this network "
                                 f"(the feature map vanishes); use at least 32")
        self.features = Sequential(*layers)
        self.feature_shape = (channels, size, size)

        hidden = [entry for entry in head if entry != "dropout"]
        if hidden_features is not None:
            if len(hidden_features) != len(hidden):
                raise ValueError(f"YOLOv1: hidden_features={tuple(hidden_features)} must give "
                                 f"{len(hidden)} sizes (one per hidden FC layer)")
            hidden = [(n, act) for n, (_, act) in zip(hidden_features, hidden)]
        fc, features, next_hidden = [Flatten()], channels * size * size, iter(hidden)
        for entry in head:
            if entry == "dropout":
                fc.append(Dropout(dropout))
                continue
            out_features, activation = next(next_hidden)
            fc.append(Linear(features, out_features))
            if activation == "leaky":
                fc.append(LeakyReLU(LEAKY_SLOPE))
            features = out_features
        fc.append(Linear(features, S * S * (B * 5 + num_classes)))  # linear output layer
        self.head = Sequential(*fc)
        if init not in ("darknet", "torch"):
            raise ValueError(f"YOLOv1: init must be 'darknet' or 'torch', got {init!r}")
        if init == "darknet":
            self._darknet_init()

    def _darknet_init(self):
        """darknet's initialisation (the paper pretrains on ImageNet and does not say; this is its code):
        conv weights N(0, 2 / fan_in) (He), connected weights U(-sqrt(2 / in), sqrt(2 / in)), biases 0.
        Torch's defaults (variance 1 / (3 fan_in), 6x smaller) leave a 9-24 layer leaky-ReLU stack
        trained from scratch stuck near "predict the mean" for hundreds of steps."""
        for module in self.modules():
            if isinstance(module, Conv2d):
                fan_in = module.weight.size // module.out_channels
                nn_init.normal_(module.weight, 0.0, np.sqrt(2.0 / fan_in))
            elif isinstance(module, Linear):
                bound = np.sqrt(2.0 / module.in_features)
                nn_init.uniform_(module.weight, -bound, bound)
            else:
                continue
            if module.bias is not None:
                nn_init.zeros_(module.bias)

    def forward(self, x):
        if tuple(x.shape[1:]) != self.input_size:
            raise ValueError(f"YOLOv1 was built for inputs (N, {', '.join(map(str, self.input_size))}) "
                             f"but got {x.shape}; build it with in_channels=/image_size= to match")
        out = self.head(self.features(x))
        return out.reshape(x.shape[0], self.S, self.S, self.B * 5 + self.num_classes)

    # -- the output contract (nn.Module.loss): a detector's loss, on a target from encode_targets
    def loss(self, output, target):
        """The sum-squared loss of Eq. (3), ``yolo_loss``, against the (N, S, S, 5 + C) ``target``."""
        return yolo_loss(output, target, S=self.S, B=self.B, C=self.num_classes)

    def extra_repr(self):
        return f"S={self.S}, B={self.B}, num_classes={self.num_classes}, input_size={self.input_size}"


# Sec. 2.2: momentum 0.9, decay 5e-4, a warm-up from a low rate, then steps; here on the synthetic shapes
YOLO_RECIPE = Recipe("yolo", dataset="shapes", epochs=30, batch_size=16, lr=1e-3, momentum=0.9, weight_decay=5e-4,
                     optimizer="sgd", schedule="step", warmup=1.0, augment=(), task="detection")


@register_model("yolov1", "yolo", recipe=YOLO_RECIPE)
def yolov1(num_classes=20, **options):
    """YOLOv1 (Figure 3): 24 conv layers + 2 FC, 448x448 input, output (N, 7, 7, 30) for VOC."""
    return YOLOv1(YOLOV1_CONVS, YOLOV1_HEAD, num_classes=num_classes, **options)


@register_model("fast_yolov1", "fast_yolo", "tiny_yolov1", recipe=YOLO_RECIPE)
def fast_yolov1(num_classes=20, **options):
    """Fast YOLO: 9 conv layers (darknet's v1 yolo-tiny.cfg), same output format as YOLOv1."""
    return YOLOv1(FAST_YOLOV1_CONVS, FAST_YOLOV1_HEAD, num_classes=num_classes, **options)


# --------------------------------------------------------------------------- targets


def encode_targets(boxes, labels, S=7, C=20, box_format="xyxy", dtype=None):
    """Ground-truth boxes of each image -> the (N, S, S, 5 + C) target the loss takes.

    ``boxes``: one (K, 4) array per image, normalised to the image ([0, 1]),
    as corners ``"xyxy"`` (x1, y1, x2, y2) or ``"cxcywh"``; ``labels``: one
    (K,) integer array per image, in [0, C). Each object goes to the cell that
    holds its centre (Sec. 2); its row there is
    ``[x, y, w, h, 1, one-hot class]`` with x, y the centre's offset in the
    cell and w, h the size relative to the image (NOT square-rooted: the loss
    takes the square roots). A cell holds one object: when two centres fall
    into the same cell the first one listed wins (as darknet's
    fill_truth_region skips a filled cell); YOLOv1 can predict only one class
    per cell anyway.
    """
    if box_format not in ("xyxy", "cxcywh"):
        raise ValueError(f"encode_targets: box_format must be 'xyxy' or 'cxcywh', got {box_format!r}")
    if len(boxes) != len(labels):
        raise ValueError(f"encode_targets: {len(boxes)} images of boxes but {len(labels)} of labels")
    dtype = np.dtype(dtype or backend.get_default_dtype())
    target = np.zeros((len(boxes), S, S, 5 + C), dtype=dtype)
    per_image = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
    per_labels = [np.asarray(c).reshape(-1) for c in labels]
    for i, (b, c) in enumerate(zip(per_image, per_labels)):
        if len(b) != len(c):
            raise ValueError(f"encode_targets: image {i} has {len(b)} boxes but {len(c)} labels")
    if not any(len(b) for b in per_image):
        return target
    image = np.concatenate([np.full(len(b), i) for i, b in enumerate(per_image)])
    all_boxes, all_labels = np.concatenate(per_image), np.concatenate(per_labels).astype(np.int64)
    cxcywh = box_xyxy_to_cxcywh(all_boxes) if box_format == "xyxy" else all_boxes
    cx, cy, w, h = cxcywh.T
    if (all_labels < 0).any() or (all_labels >= C).any():
        raise ValueError(f"encode_targets: labels must lie in [0, C={C}), got {sorted(set(all_labels.tolist()))}")
    if (w < 0).any() or (h < 0).any() or (cx < 0).any() or (cx > 1).any() or (cy < 0).any() or (cy > 1).any():
        raise ValueError("encode_targets: boxes must be normalised to [0, 1] with centres inside the image and "
                         f"w, h >= 0 (box_format={box_format!r}); divide pixel boxes by the image size")
    col = np.minimum((cx * S).astype(np.int64), S - 1)  # a centre on the right/bottom edge stays in the grid
    row = np.minimum((cy * S).astype(np.int64), S - 1)
    _, first = np.unique((image * S + row) * S + col, return_index=True)  # first object per cell
    image, row, col = image[first], row[first], col[first]
    target[image, row, col, 0] = cx[first] * S - col
    target[image, row, col, 1] = cy[first] * S - row
    target[image, row, col, 2] = w[first]
    target[image, row, col, 3] = h[first]
    target[image, row, col, 4] = 1
    target[image, row, col, 5 + all_labels[first]] = 1
    return target


# --------------------------------------------------------------------------- loss (Eq. 3)


def _cell_boxes_to_xyxy(xy, wh, S):
    """Cell-relative centres (N, S, S, B, 2) and image-relative sizes (N, S, S, B, 2) -> image corners."""
    xp = backend.get_array_module(xy)
    grid = xp.arange(S, dtype=xy.dtype)
    cx = (xy[..., 0] + grid.reshape(1, 1, S, 1)) / S  # column j is axis 2
    cy = (xy[..., 1] + grid.reshape(1, S, 1, 1)) / S  # row i is axis 1
    return xp.stack([cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], axis=-1)


def responsible_predictors(pred_boxes, target, S):
    """Which of the B predictors of each object cell is "responsible" for its object (Sec. 2.2).

    ``pred_boxes``: raw (N, S, S, B, 5) array; ``target``: raw (N, S, S, 5 + C).
    The responsible predictor has the highest current IoU with the ground truth.
    When no predictor overlaps it at all (IoU 0 for every one, common early in
    training) the one with the smallest RMSE between (cx, cy, w, h) is chosen,
    as darknet's detection layer does, rather than always predictor 0.
    Returns (mask (N, S, S, B) of 0/1 in the prediction's dtype, IoU (N, S, S, B)).
    Not differentiable (a selection); the loss uses it as a constant mask.
    """
    xp = backend.get_array_module(pred_boxes)
    pred_wh = pred_boxes[..., 2:4] ** 2
    pred = _cell_boxes_to_xyxy(pred_boxes[..., 0:2], pred_wh, S)
    truth = _cell_boxes_to_xyxy(target[..., None, 0:2], target[..., None, 2:4], S)
    iou = elementwise_iou(pred, truth)
    pred_centre = xp.concatenate([(pred[..., :2] + pred[..., 2:]) / 2, pred_wh], axis=-1)
    truth_centre = xp.concatenate([(truth[..., :2] + truth[..., 2:]) / 2, target[..., None, 2:4]], axis=-1)
    rmse = xp.sqrt(((pred_centre - truth_centre) ** 2).sum(axis=-1))
    best = xp.where(iou.max(axis=-1) > 0, iou.argmax(axis=-1), rmse.argmin(axis=-1))
    B = pred_boxes.shape[-2]
    mask = (xp.arange(B) == best[..., None]) & (target[..., None, 4] > 0)
    return mask.astype(pred_boxes.dtype), iou


def yolo_loss(pred, target, S=7, B=2, C=20, lambda_coord=5.0, lambda_noobj=0.5, confidence_target="iou",
              return_components=False):
    """The YOLOv1 sum-squared loss, Eq. (3) of the paper, summed over the batch and divided by N.

        lambda_coord * sum_obj,resp [(x - x^)^2 + (y - y^)^2]
      + lambda_coord * sum_obj,resp [(sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
      +                sum_obj,resp (C - C^)^2
      + lambda_noobj * sum_noobj     C^2          (every predictor not responsible for an object)
      +                sum_obj cells sum_c (p(c) - p^(c))^2

    ``pred``: (N, S, S, B*5 + C) Tensor (or (N, S*S*(B*5 + C))), laid out as in
    the module docstring, i.e. predicting sqrt(w), sqrt(h) directly.
    ``target``: (N, S, S, 5 + C) from ``encode_targets`` (array or Tensor, any device).
    ``confidence_target``: "iou" (the paper, and darknet's rescore=1: the
    confidence of the responsible box is trained towards its IoU with the
    ground truth, taken as a constant) or "one" (towards 1). The
    responsible-box mask and the IoU are computed on raw arrays: no gradient
    flows through them. Differentiable everywhere except where two
    predictors tie for responsibility. With ``return_components`` also
    returns a dict of the five terms (floats, already weighted, divided by N).
    """
    if confidence_target not in ("iou", "one"):
        raise ValueError(f"yolo_loss: confidence_target must be 'iou' or 'one', got {confidence_target!r}")
    if not isinstance(pred, Tensor):
        raise TypeError(f"yolo_loss: pred must be a Tensor (the network's output), got {type(pred).__name__}")
    check_float("yolo_loss", pred)
    depth = B * 5 + C
    n = pred.shape[0]
    if pred.shape[1:] == (S * S * depth,):
        pred = pred.reshape(n, S, S, depth)
    if pred.shape[1:] != (S, S, depth):
        raise ValueError(f"yolo_loss: pred has shape {pred.shape} but S={S}, B={B}, C={C} needs "
                         f"(N, {S}, {S}, {depth}) = (N, S, S, B*5 + C)")
    xp = backend.get_array_module(pred.data)
    target = xp.asarray(target.data if isinstance(target, Tensor) else target, dtype=pred.dtype)
    if target.shape != (n, S, S, 5 + C):
        raise ValueError(f"yolo_loss: target has shape {target.shape} but pred {pred.shape} needs "
                         f"({n}, {S}, {S}, {5 + C}) = (N, S, S, 5 + C); build it with encode_targets")

    boxes, class_probs = F.split(pred, [5 * B, C], dim=-1)
    boxes = boxes.reshape(n, S, S, B, 5)
    xy, sqrt_wh, confidence = F.split(boxes, [2, 2, 1], dim=-1)
    confidence = confidence.reshape(n, S, S, B)

    responsible, iou = responsible_predictors(boxes.data, target, S)
    has_object = target[..., 4:5]  # (N, S, S, 1): the class term's 1_i^obj
    confidence_goal = iou if confidence_target == "iou" else xp.ones_like(iou)

    resp = Tensor(responsible[..., None])
    xy_term = F.sum(resp * (xy - target[..., None, 0:2]) ** 2)
    wh_term = F.sum(resp * (sqrt_wh - xp.sqrt(target[..., None, 2:4])) ** 2)
    obj_term = F.sum(Tensor(responsible) * (confidence - confidence_goal) ** 2)
    noobj_term = F.sum(Tensor(1 - responsible) * confidence ** 2)
    class_term = F.sum(Tensor(has_object) * (class_probs - target[..., 5:]) ** 2)

    terms = {"xy": xy_term * (lambda_coord / n), "wh": wh_term * (lambda_coord / n),
             "obj": obj_term * (1.0 / n), "noobj": noobj_term * (lambda_noobj / n), "class": class_term * (1.0 / n)}
    total = terms["xy"] + terms["wh"] + terms["obj"] + terms["noobj"] + terms["class"]
    if return_components:
        return total, {name: float(term.item()) for name, term in terms.items()}
    return total


class YOLOLoss(Module):
    """``yolo_loss`` as a module: ``YOLOLoss(S=model.S, B=model.B, C=model.num_classes)(pred, target)``."""

    def __init__(self, S=7, B=2, C=20, lambda_coord=5.0, lambda_noobj=0.5, confidence_target="iou"):
        super().__init__()
        self.S, self.B, self.C = S, B, C
        self.lambda_coord, self.lambda_noobj, self.confidence_target = lambda_coord, lambda_noobj, confidence_target

    def forward(self, pred, target, return_components=False):
        return yolo_loss(pred, target, self.S, self.B, self.C, self.lambda_coord, self.lambda_noobj,
                         self.confidence_target, return_components)

    def extra_repr(self):
        return (f"S={self.S}, B={self.B}, C={self.C}, lambda_coord={self.lambda_coord}, "
                f"lambda_noobj={self.lambda_noobj}, confidence_target={self.confidence_target!r}")


# --------------------------------------------------------------------------- decoding


def decode(pred, S=7, B=2, C=20, conf_threshold=0.1, nms_threshold=None):
    """Network output -> detections per image: a list of ``(boxes (K, 4), scores (K,), classes (K,))``.

    Boxes are corners (x1, y1, x2, y2) in [0, 1] (clipped to the image),
    w = sqrt_w^2 and h = sqrt_h^2. Each of the S*S*B boxes gets its cell's most
    likely class and the class-specific confidence of Sec. 2 (test time):
    score = Pr(class | object) * confidence. Boxes with score > ``conf_threshold``
    are kept, highest score first; with ``nms_threshold`` per-class NMS
    (``nms(..., classes=...)``) is applied too. NumPy arrays on the host.
    """
    out = pred.data if isinstance(pred, Tensor) else pred
    out = backend.to_numpy(out).astype(np.float64)
    depth = B * 5 + C
    if out.size % (S * S * depth) or out.ndim not in (2, 4):
        raise ValueError(f"decode: pred of shape {out.shape} is not (N, {S}, {S}, {depth}) = (N, S, S, B*5 + C) "
                         f"for S={S}, B={B}, C={C}")
    out = out.reshape(-1, S, S, depth)
    boxes = out[..., :5 * B].reshape(-1, S, S, B, 5)
    class_probs = out[..., 5 * B:]
    classes = np.broadcast_to(class_probs.argmax(axis=-1)[..., None], boxes.shape[:-1])
    scores = boxes[..., 4] * class_probs.max(axis=-1)[..., None]
    corners = np.clip(_cell_boxes_to_xyxy(boxes[..., 0:2], boxes[..., 2:4] ** 2, S), 0, 1)

    detections = []
    for image_corners, image_scores, image_classes in zip(corners, scores, classes):
        keep = image_scores.reshape(-1) > conf_threshold
        b = image_corners.reshape(-1, 4)[keep]
        s = image_scores.reshape(-1)[keep]
        c = image_classes.reshape(-1)[keep].astype(np.int64)
        order = (nms(b, s, nms_threshold, classes=c) if nms_threshold is not None
                 else np.argsort(-s, kind="stable"))
        detections.append((b[order], s[order], c[order]))
    return detections

"""What a run learns and how it is scored: one class per task, so the loop never asks which it runs.

A task answers, for the loop (loop.py):
    loss(output, targets)        the batch's loss, through the model's output contract (nn.Module.loss)
    correct(output, targets)     the count the loop sums with the loss every step (classification:
                                 right answers; detection: 0, it is scored on the test set only)
    train_scores(stats)          the epoch's training scores, for metrics.json
    progress(stats)              extra fields of the progress bar
    test_forward(x)              the model's output on a test batch (classification: ten patches per image,
                                 (N, 10, C, H, W), become one output per image, their softmax averaged)
    evaluate(batches, ranks)     (test loss, test scores) over (output, targets) pairs, summed over ranks
    report(record)               the epoch's losses and scores, one line
    plot(ax, metrics)            the score panel of curves.png
and ``metric`` names the test score, ``record["test_" + metric]``, that picks best.npz.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..models.yolo import decode, encode_targets, mean_average_precision


class CropAverage:
    """The test output of an image seen as several patches (AlexNet's ten): the mean of the patches'
    softmax probabilities, (N, classes) on the host (Krizhevsky et al. 2012, Sec. 4.1)."""

    def __init__(self, probabilities):
        self.probabilities = probabilities


class Classification:
    """Top-1 accuracy of the model's class scores (``model.scores``), and top-1 / top-5 error on the test set
    (the papers' ImageNet numbers: top-5 counts an image right when its class is among the five best scores)."""
    metric = "acc"

    def __init__(self, model, device):
        self.model, self.device = model, device

    def loss(self, output, targets):
        if isinstance(output, CropAverage):  # the negative log of the averaged probability of the right class
            chosen = output.probabilities[np.arange(len(targets)), targets]
            return Tensor(np.asarray(-np.log(np.maximum(chosen, np.finfo(chosen.dtype).tiny)).mean()))
        return self.model.loss(output, Tensor(backend.to_device(targets, self.device)))

    def class_scores(self, output):
        """Higher is better, on the host: the model's scores, or a crop average's probabilities."""
        if isinstance(output, CropAverage):
            return output.probabilities
        scores = self.model.scores(output)
        return backend.to_numpy(scores.data if isinstance(scores, Tensor) else scores)

    def correct(self, output, targets):
        return int((self.class_scores(output).argmax(axis=1) == targets).sum())

    def top5_correct(self, output, targets):
        """Images whose class is among the five highest scores (all classes when there are fewer than five)."""
        scores = self.class_scores(output)
        k = min(5, scores.shape[1])
        target_score = scores[np.arange(len(targets)), targets]
        return int(((scores > target_score[:, None]).sum(axis=1) < k).sum())

    def test_forward(self, x):
        if x.ndim != 5:
            return self.model(x)
        n, crops = x.shape[:2]
        scores = self.model.scores(self.model.main_output(self.model(x.reshape(n * crops, *x.shape[2:]))))
        probabilities = backend.to_numpy(F.softmax(scores, dim=1).data).reshape(n, crops, -1)
        return CropAverage(probabilities.mean(axis=1))

    def train_scores(self, stats):
        return {"train_acc": stats["correct"] / max(stats["seen"], 1)}

    def progress(self, stats):
        return {"acc": f"{100 * stats['correct'] / stats['seen']:.2f}%"}

    def evaluate(self, batches, ranks):
        loss_sum, correct, top5, seen = 0.0, 0, 0, 0
        for output, targets in batches:
            loss_sum += float(self.loss(output, targets).item()) * len(targets)
            correct += self.correct(output, targets)
            top5 += self.top5_correct(output, targets)
            seen += len(targets)
        loss_sum, correct, top5, seen = ranks.sum(loss_sum, correct, top5, seen)  # data parallel: over the shards
        seen = max(seen, 1)
        return loss_sum / seen, {"test_acc": correct / seen, "test_top1_error": 1 - correct / seen,
                                 "test_top5_error": 1 - top5 / seen}

    def report(self, r):
        return (f"train loss {r['train_loss']:.4f} acc {100 * r['train_acc']:.2f}%  "
                f"test loss {r['test_loss']:.4f} acc {100 * r['test_acc']:.2f}% "
                f"(top-1 error {100 * r['test_top1_error']:.2f}%, top-5 {100 * r['test_top5_error']:.2f}%)")

    def plot(self, ax, metrics):
        epochs = [m["epoch"] for m in metrics]
        ax.plot(epochs, [100 * m["train_acc"] for m in metrics], "o-", label="train")
        ax.plot(epochs, [100 * m["test_acc"] for m in metrics], "o-", label="test")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")


class Detection:
    """YOLOv1 on VOC-style targets: the sum-squared loss to train, mAP@0.5 to evaluate."""
    metric = "map50"

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.S, self.B, self.C = model.S, model.B, model.num_classes
        self.side = model.input_size[-1]

    def loss(self, output, targets):
        target = encode_targets([t["boxes"] / self.side for t in targets], [t["labels"] for t in targets],
                                S=self.S, C=self.C, dtype=output.dtype)
        return self.model.loss(output, backend.to_device(target, self.device))

    def correct(self, output, targets):
        return 0

    def train_scores(self, stats):
        return {"train_acc": None}

    def progress(self, stats):
        return {}

    def test_forward(self, x):
        return self.model(x)

    def detections(self, output):
        return decode(output, S=self.S, B=self.B, C=self.C, conf_threshold=0.01, nms_threshold=0.5)

    def ground_truth(self, targets):
        return [(t["boxes"] / self.side, t["labels"]) for t in targets]

    def evaluate(self, batches, ranks):
        loss_sum, seen, detections, truths = 0.0, 0, [], []
        for output, targets in batches:
            loss_sum += float(self.loss(output, targets).item()) * len(targets)
            seen += len(targets)
            detections += self.detections(output)
            truths += self.ground_truth(targets)
        loss_sum, seen = ranks.sum(loss_sum, seen)  # data parallel: over the test shards
        detections, truths = ranks.gather(detections), ranks.gather(truths)
        return loss_sum / max(seen, 1), {"test_acc": None, "test_map50": mean_average_precision(
            detections, truths, 0.5, num_classes=self.C)}

    def report(self, r):
        return f"train loss {r['train_loss']:.4f}  test loss {r['test_loss']:.4f} mAP@0.5 {100 * r['test_map50']:.2f}%"

    def plot(self, ax, metrics):
        ax.plot([m["epoch"] for m in metrics], [100 * m["test_map50"] for m in metrics], "o-", label="test")
        ax.set(xlabel="epoch", ylabel="mAP@0.5 (%)", title="mAP@0.5")


TASKS = {"classification": Classification, "detection": Detection}

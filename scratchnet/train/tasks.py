"""What a run learns and how it is scored: one class per task, so the loop never asks which it runs.

A task answers, for the loop (loop.py):
    loss(output, targets)        the batch's loss, through the model's output contract (nn.Module.loss)
    correct(output, targets)     the count the loop sums with the loss every step (classification:
                                 right answers; detection: 0, it is scored on the test set only)
    train_scores(stats)          the epoch's training scores, for metrics.json
    progress(stats)              extra fields of the progress bar
    evaluate(batches, ranks)     (test loss, test scores) over (output, targets) pairs, summed over ranks
    report(record)               the epoch's losses and scores, one line
    plot(ax, metrics)            the score panel of curves.png
and ``metric`` names the test score, ``record["test_" + metric]``, that picks best.npz.
"""
from .. import backend
from ..autograd import Tensor
from ..models.yolo import decode, encode_targets, mean_average_precision


class Classification:
    """Top-1 accuracy of the model's class scores (``model.scores``)."""
    metric = "acc"

    def __init__(self, model, device):
        self.model, self.device = model, device

    def loss(self, output, targets):
        return self.model.loss(output, Tensor(backend.to_device(targets, self.device)))

    def correct(self, output, targets):
        scores = self.model.scores(output)
        scores = scores.data if isinstance(scores, Tensor) else scores
        return int((backend.to_numpy(scores).argmax(axis=1) == targets).sum())

    def train_scores(self, stats):
        return {"train_acc": stats["correct"] / max(stats["seen"], 1)}

    def progress(self, stats):
        return {"acc": f"{100 * stats['correct'] / stats['seen']:.2f}%"}

    def evaluate(self, batches, ranks):
        loss_sum, correct, seen = 0.0, 0, 0
        for output, targets in batches:
            loss_sum += float(self.loss(output, targets).item()) * len(targets)
            correct += self.correct(output, targets)
            seen += len(targets)
        loss_sum, correct, seen = ranks.sum(loss_sum, correct, seen)  # data parallel: over the test shards
        return loss_sum / max(seen, 1), {"test_acc": correct / max(seen, 1)}

    def report(self, r):
        return (f"train loss {r['train_loss']:.4f} acc {100 * r['train_acc']:.2f}%  "
                f"test loss {r['test_loss']:.4f} acc {100 * r['test_acc']:.2f}%")

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

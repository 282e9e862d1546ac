"""Evaluation as the papers report it: top-1 and top-5 error in metrics.json and --eval-only, AlexNet's
ten-patch test (--ten-crop: the softmax averaged over the four corners, the centre and their mirror images),
and AlexNet's training data (random patches of rescaled images, flips, PCA lighting from the training set)."""
import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import train
from scratchnet.data import load_cifar10
from scratchnet.data import transforms as T
from scratchnet.distributed.training import SingleProcess
from scratchnet.nn import Linear, Sequential
from scratchnet.train.tasks import Classification, CropAverage
from conftest import write_cifar

TINY_ALEXNET = ["alexnet", "--no-download", "--model-arg", "channels=(4, 4, 6, 6, 4)", "--model-arg", "hidden=8",
                "--batch-size", "8", "--no-progress", "--prefetch", "0"]


@pytest.fixture(autouse=True)
def _env(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_top5_counts_a_class_among_the_five_best_scores():
    task = Classification(Sequential(Linear(2, 7)), "cpu")
    scores = sn.tensor(np.array([[7.0, 6, 5, 4, 3, 2, 1],      # class 0 first
                                 [7.0, 6, 5, 4, 3, 2, 1],      # class 4 fifth: top-5 right, top-1 wrong
                                 [7.0, 6, 5, 4, 3, 2, 1],      # class 5 sixth: both wrong
                                 [1.0, 1, 1, 1, 1, 1, 1]]))    # ties: the class is among the five best
    targets = np.array([0, 4, 5, 6])
    assert task.correct(scores, targets) == 1
    assert task.top5_correct(scores, targets) == 3
    three = Classification(Sequential(Linear(2, 3)), "cpu")
    assert three.top5_correct(sn.tensor(np.eye(3)), np.array([2, 1, 0])) == 3  # fewer than five classes: all


def test_evaluate_reports_top1_and_top5_error():
    task = Classification(Sequential(Linear(2, 6)), "cpu")
    logits = sn.tensor(np.log(np.array([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.04, 0.06, 0.1, 0.1, 0.2, 0.5]])))
    loss, scores = task.evaluate([(logits, np.array([0, 0])), (logits, np.array([1, 5]))], SingleProcess())
    assert scores["test_acc"] == 0.5 and scores["test_top1_error"] == 0.5 and scores["test_top5_error"] == 0.25
    assert loss == pytest.approx(-(np.log(0.5) + np.log(0.04) + np.log(0.2) + np.log(0.5)) / 4)


def test_ten_crop_output_averages_the_softmax_of_the_patches(rng):
    model = Sequential(Linear(12, 4)).double()
    model.input_size = (3, 2, 2)
    task = Classification(_Flatten(model), "cpu")
    x = rng.standard_normal((3, 10, 3, 2, 2))
    out = task.test_forward(sn.tensor(x))
    assert isinstance(out, CropAverage)
    logits = model(sn.tensor(x.reshape(30, 12))).numpy().reshape(3, 10, 4)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(out.probabilities, probabilities.mean(1), rtol=1e-12)
    targets = np.array([0, 3, 1])
    assert task.correct(out, targets) == int((probabilities.mean(1).argmax(1) == targets).sum())
    expected_loss = -np.log(probabilities.mean(1)[np.arange(3), targets]).mean()
    assert task.loss(out, targets).item() == pytest.approx(expected_loss, rel=1e-12)


class _Flatten(Sequential):
    def __init__(self, inner):
        super().__init__(inner)

    def forward(self, x):
        return super().forward(x.reshape(x.shape[0], -1))


class _FakeModel:
    def __init__(self, input_size):
        self.input_size = input_size


def test_alexnet_pipelines_cut_patches_of_rescaled_images(rng):
    """Train: rescale 32 -> round(side * 256/224), a random side x side patch, flips, PCA lighting from the training
    images; test: the centre patch, or ten of them."""
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    config = {"dataset": "cifar10", "augment": ["patches", "flip", "lighting"], "model": "m"}
    train_tf, test_tf = train.pipelines(config, _FakeModel((3, 56, 56)), images)
    assert [type(t).__name__ for t in train_tf.transforms] == [
        "ToFloat", "Resize", "RandomCrop", "RandomHorizontalFlip", "PCALighting", "Normalize"]
    assert train_tf.transforms[1].size == (64, 64) and train_tf.transforms[2].size == (56, 56)
    np.testing.assert_array_equal(train_tf.transforms[4].eigval, T.rgb_principal_components(images)[0])
    assert train_tf(images, np.random.default_rng(0)).shape == (6, 3, 56, 56)
    assert [type(t).__name__ for t in test_tf.transforms] == ["ToFloat", "Resize", "CenterCrop", "Normalize"]
    assert test_tf(images).shape == (6, 3, 56, 56)
    ten_tf = train.pipelines(dict(config, ten_crop=True), _FakeModel((3, 56, 56)), images)[1]
    patches = ten_tf(images)
    assert patches.shape == (6, 10, 3, 56, 56) and patches.dtype == np.float32
    np.testing.assert_array_equal(patches[:, 4], test_tf(images))  # the centre patch is the single-crop test
    gray = train.pipelines({"dataset": "fashion-mnist", "augment": ["patches"], "model": "m", "ten_crop": True},
                           _FakeModel((3, 32, 32)))
    assert gray[0](rng.integers(0, 256, (2, 1, 28, 28), dtype=np.uint8), np.random.default_rng(0)).shape == (
        2, 3, 32, 32)
    assert gray[1](rng.integers(0, 256, (2, 1, 28, 28), dtype=np.uint8)).shape == (2, 10, 3, 32, 32)


def test_bad_augmentation_choices_fail_in_one_line():
    for argv, message in ((["lenet", "--augment", "crop,patches"], "choose one"),
                          (["lenet", "--augment", "zoom"], "patches"),
                          (["fast_yolov1", "--ten-crop"], "not for detection")):
        with pytest.raises(train.UsageError, match=message):
            train.make_config(train.build_parser().parse_args(argv))


def test_alexnet_recipe_trains_on_patches_and_tests_on_ten(tmp_path, capsys):
    """The default recipe's augmentation (patches, flip, PCA lighting from the training set), then --eval-only
    --ten-crop: its accuracy, loss and top-5 error are those of the averaged softmax computed here by hand."""
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", [8, 8, 8, 8, 8, 12])
    out = tmp_path / "run"
    args = [*TINY_ALEXNET, "--data-dir", tmp_path / "data", "--limit", "16", "--epochs", "1", "--out", out]
    assert train.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["augment"] == ["patches", "flip", "lighting"] and config["ten_crop"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[0]["test_top1_error"] == pytest.approx(1 - metrics[0]["test_acc"])
    assert 0 <= metrics[0]["test_top5_error"] <= metrics[0]["test_top1_error"]
    capsys.readouterr()
    assert train.main([*TINY_ALEXNET, "--eval-only", "--resume", out, "--ten-crop"]) == 0
    printed = capsys.readouterr().out
    assert "ten patches each" in printed and "top-5" in printed
    record = json.loads((out / "eval.json").read_text())

    model = sn.models.get_model("alexnet", num_classes=10, in_channels=3, channels=(4, 4, 6, 6, 4), hidden=8)
    model.load_state_dict(train.load_checkpoint(out / "checkpoint.npz")["model"])
    model.eval()
    test = load_cifar10(False, tmp_path / "data", download=False)
    _, test_tf = train.pipelines({**config, "ten_crop": True}, model)
    patches = test_tf(test.inputs)
    with sn.no_grad():
        logits = model(sn.tensor(patches.reshape(-1, *patches.shape[2:]))).numpy().astype(np.float64)
    logits = logits.reshape(len(test), 10, -1)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(-1, keepdims=True)).mean(1)
    targets = np.asarray(test.targets)
    assert record["test_acc"] == (probabilities.argmax(1) == targets).mean()
    rank = (probabilities > probabilities[np.arange(len(targets)), targets][:, None]).sum(1)
    assert record["test_top5_error"] == 1 - (rank < 5).mean()
    assert record["test_loss"] == pytest.approx(-np.log(probabilities[np.arange(len(targets)), targets]).mean(),
                                                rel=1e-5)

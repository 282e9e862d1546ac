"""What the training tools rely on from a model: its recipe, declared beside it, and the output contract
(nn.Module.main_output / loss / scores) that replaced hasattr checks and tuple unpacking."""
import re
from dataclasses import asdict

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import functional as F
from scratchnet import train
from scratchnet.distributed import DistributedDataParallel
from scratchnet.models import get_model, get_recipe, list_models, registry
from scratchnet.models.googlenet import GoogLeNetOutputs
from scratchnet.models.lenet import rbf_loss
from scratchnet.models.yolo import encode_targets, yolo_loss
from scratchnet.nn import Linear, Module, Sequential
from scratchnet.study.common import classification_loss

# --------------------------------------------------------------------------- recipes beside the models

# The recipes as train.py held them before they moved beside the models, and its regex that picked one;
# since then AlexNet's augmentation became the paper's (patches of rescaled images, not CIFAR's pad and crop)
# and the nets added since brought their recipes (the CIFAR DenseNets: Huang et al. Sec. 4.2).
BEFORE = {
    "lenet": dict(dataset="fashion-mnist", epochs=10, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                  optimizer="sgd", schedule="cosine", warmup=0.0, augment=()),
    "lenet_classic": dict(dataset="fashion-mnist", epochs=10, batch_size=64, lr=0.005, momentum=0.9,
                          weight_decay=5e-4, optimizer="sgd", schedule="cosine", warmup=0.0, augment=()),
    "cifar": dict(dataset="cifar10", epochs=160, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                  optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip")),
    "imagenet": dict(dataset="cifar10", epochs=90, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4,
                     optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip")),
    "alexnet": dict(dataset="cifar10", epochs=90, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4,
                    optimizer="sgd", schedule="step", warmup=0.0, augment=("patches", "flip", "lighting")),
    "densenet_cifar": dict(dataset="cifar10", epochs=300, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
                           optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip")),
    "yolo": dict(dataset="shapes", epochs=30, batch_size=16, lr=1e-3, momentum=0.9, weight_decay=5e-4,
                 optimizer="sgd", schedule="step", warmup=1.0, augment=()),
}


def recipe_name_before(name):
    if name == "lenet5_classic":
        return "lenet_classic"
    if name.startswith("lenet"):
        return "lenet"
    if "yolo" in name:
        return "yolo"
    if re.fullmatch(r"(se_resnet|resnet|plain|preact_resnet)(20|32|44|56|110|164|1001|1202)(_dcn|_dcnv2)?", name):
        return "cifar"
    if name.startswith("densenet_bc_"):
        return "densenet_cifar"
    if name in ("alexnet", "zfnet"):
        return "alexnet"
    return "imagenet"


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_the_recipe_it_had(name):
    recipe = get_recipe(name)
    expected = recipe_name_before(name)
    assert recipe.name == expected
    values = asdict(recipe)
    assert values.pop("name") == expected
    assert values.pop("task") == ("detection" if expected == "yolo" else "classification")
    assert values == BEFORE[expected]
    assert train.RECIPES[expected] == BEFORE[expected]


def test_recipes_follow_aliases_and_unknown_names_fail_in_one_line(monkeypatch):
    assert get_recipe("LeNet") is get_recipe("lenet5") and get_recipe("tiny_yolov1") is get_recipe("fast_yolov1")
    with pytest.raises(ValueError, match="unknown model 'nosuchnet'"):
        get_recipe("nosuchnet")
    with pytest.raises(train.UsageError, match="cannot build model 'nosuchnet': unknown model"):
        train.recipe_for("nosuchnet")
    monkeypatch.setitem(registry._MODELS, "recipeless", lambda **options: None)
    monkeypatch.setitem(registry._RECIPES, "recipeless", None)
    with pytest.raises(ValueError, match="registered without a training recipe"):
        get_recipe("recipeless")


# --------------------------------------------------------------------------- the output contract


def cross_entropy_value(logits, target):
    return F.cross_entropy(logits, sn.tensor(target)).item()


def test_a_plain_module_is_a_cross_entropy_classifier(rng):
    model = Sequential(Linear(4, 3)).double()
    out = model(sn.tensor(rng.standard_normal((5, 4))))
    target = np.array([0, 2, 1, 1, 0])
    assert model.main_output(out) is out and model.scores(out) is out
    assert model.loss(out, sn.tensor(target)).item() == cross_entropy_value(out, target)
    task = train.Classification(model, "cpu")
    assert task.loss(out, target).item() == cross_entropy_value(out, target)
    assert task.correct(out, target) == int((out.numpy().argmax(1) == target).sum())


def test_googlenet_trains_with_its_aux_heads_and_is_scored_on_its_logits(rng, skip_random_init):
    model = get_model("googlenet", width=1 / 16, num_classes=5)  # its heads' outputs, made up: no forward needed
    out = GoogLeNetOutputs(*(sn.tensor(rng.standard_normal((2, 5))) for _ in range(3)))
    target = np.array([1, 4])
    assert model.main_output(out) is out.logits and model.scores(out) is out.logits
    main, aux1, aux2 = (cross_entropy_value(o, target) for o in out)
    full = train.Classification(model, "cpu").loss(out, target).item()
    assert abs(full - (main + 0.3 * (aux1 + aux2))) < 1e-12
    assert model.loss(out.logits, sn.tensor(target)).item() == main  # eval mode: the logits alone
    # the studies measure the network's own path: the main head's loss alone
    assert classification_loss(model, out, sn.tensor(target)).item() == main


def test_classic_lenet_is_scored_by_its_nearest_prototype():
    distances = sn.tensor(np.array([[3.0, 1.0, 2.0], [0.5, 5.0, 5.0]]))
    target = np.array([1, 0])
    classic, modern = get_model("lenet5_classic", num_classes=3), get_model("lenet5", num_classes=3)
    assert train.Classification(classic, "cpu").correct(distances, target) == 2  # argmin distance
    assert train.Classification(modern, "cpu").correct(distances, target) == 0  # argmax logit
    expected = rbf_loss(distances, sn.tensor(target)).item()
    assert train.Classification(classic, "cpu").loss(distances, target).item() == expected
    assert classification_loss(classic, distances, sn.tensor(target)).item() == expected


def test_yolo_loss_is_the_detection_loss(rng):
    model = get_model("fast_yolov1", image_size=64, width_mult=0.0625, hidden_features=(32, 32)).double()
    out = model(sn.tensor(rng.standard_normal((2, 3, 64, 64))))
    targets = [{"boxes": np.array([[8.0, 8.0, 40.0, 30.0]]), "labels": np.array([3])},
               {"boxes": np.array([[0.0, 20.0, 64.0, 60.0], [30.0, 2.0, 50.0, 12.0]]), "labels": np.array([0, 19])}]
    encoded = encode_targets([t["boxes"] / 64 for t in targets], [t["labels"] for t in targets], S=7, C=20,
                             dtype=out.dtype)
    expected = yolo_loss(out, encoded, S=7, B=2, C=20).item()
    assert model.loss(out, encoded).item() == expected
    assert train.Detection(model, "cpu").loss(out, targets).item() == expected


class _OneRank:
    """The communicator of a one-process job: broadcasting changes nothing."""
    rank, size = 0, 1

    def broadcast(self, array, root=0):
        return array

    def allgather_object(self, obj):
        return [obj]


def test_data_parallel_wrapper_keeps_the_wrapped_models_contract(rng):
    model = get_model("lenet5_classic", num_classes=3).double()
    wrapped = DistributedDataParallel(model, _OneRank())
    distances = sn.tensor(np.array([[3.0, 1.0, 2.0]]))
    target = sn.tensor(np.array([1]))
    assert wrapped.loss(distances, target).item() == model.loss(distances, target).item()
    np.testing.assert_array_equal(wrapped.scores(distances).numpy(), -distances.numpy())
    assert type(wrapped).loss is not Module.loss  # not the default cross-entropy

"""Every family of the zoo on an empty batch (torch's shapes, zero gradients), and constructors that refuse
sizes no network can have, in one sentence, before building anything."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.models import get_model
from scratchnet.models.densenet import densenet121
from scratchnet.models.efficientnet import efficientnet_b0

# one model per family (the smallest), with the output an empty batch must give: (0, classes), as torchvision's
FAMILIES = {"lenet5": (0, 10), "lenet5_classic": (0, 10), "alexnet": (0, 1000), "zfnet": (0, 1000),
            "vgg11_bn": (0, 1000), "googlenet": (0, 1000), "resnet18": (0, 1000), "resnet50": (0, 1000),
            "resnet20": (0, 10), "plain20": (0, 10), "densenet121": (0, 1000), "se_resnet20": (0, 10),
            "mobilenet_v1": (0, 1000), "efficientnet_b0": (0, 1000), "fast_yolov1": (0, 7, 7, 30)}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_an_empty_batch_in_eval_mode(name, skip_random_init):
    model = get_model(name).eval()
    x = sn.tensor(np.zeros((0, *model.input_size), np.float32), requires_grad=True)
    out = model.main_output(model(x))
    assert out.shape == FAMILIES[name]
    out.sum().backward()
    assert x.grad.shape == x.shape
    for key, p in model.named_parameters():
        if p.grad is None:  # not on the path in eval mode (GoogLeNet's auxiliary heads), as in torch
            continue
        grad = p.grad.numpy() if isinstance(p.grad, sn.Tensor) else np.asarray(p.grad)
        assert grad.shape == p.shape and not grad.any(), key


@pytest.mark.parametrize("build, message", [
    (lambda: efficientnet_b0(num_classes=0), "efficientnet_b0: num_classes must be a positive int, got 0"),
    (lambda: efficientnet_b0(0), "efficientnet_b0: num_classes must be a positive int, got 0"),
    (lambda: densenet121(in_channels=0), "densenet121: in_channels must be a positive int, got 0"),
    (lambda: get_model("lenet", num_classes=-3), "lenet5: num_classes must be a positive int, got -3"),
    (lambda: get_model("resnet20", num_classes=2.5), "resnet20: num_classes must be an int, got 2.5"),
])
def test_constructors_refuse_impossible_sizes(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()
    assert get_model("resnet20", num_classes=np.int64(3)).fc.out_features == 3  # NumPy ints are ints

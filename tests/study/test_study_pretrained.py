"""The DeconvNet, features and SE studies on ImageNet-trained nets: --weights DEFAULT (served from the cache:
a tiny net's .pth written by torch.save under torchvision's file name) or a .pth file, looking at the
sample photographs instead of Fashion-MNIST."""
import dataclasses
import hashlib
import io
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from scratchnet import study
from scratchnet.data import imagenet_classes
from scratchnet.models import get_model, pretrained
from scratchnet.models.efficientnet import TINY_STAGES
from scratchnet.study.features import measure as features_measure

TINY_VGG = dict(width=1 / 32, hidden=16)
TINY_EFFICIENTNET = dict(stages=TINY_STAGES, width_mult=1.0, depth_mult=1.0)


def torch_file(model):
    torch.manual_seed(0)
    state = OrderedDict((k, torch.from_numpy(v) + 0.1 * torch.rand(v.shape).to(torch.from_numpy(v).dtype))
                        for k, v in model.state_dict().items())
    stream = io.BytesIO()
    torch.save(state, stream)
    return stream.getvalue()


@pytest.fixture
def cache_with(tmp_path, monkeypatch):
    """cache_with(name, model): ``name``'s DEFAULT weights are ``model``'s, in the cache (no server anywhere)."""
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(pretrained, "SERVER", "http://127.0.0.1:9/")
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)

    def put(name, model):
        body = torch_file(model)
        entry = dataclasses.replace(pretrained.resolve(name, "DEFAULT"),
                                    file=f"{name}-{hashlib.sha256(body).hexdigest()[:8]}.pth")
        monkeypatch.setattr(pretrained, "WEIGHTS", [entry] + [w for w in pretrained.WEIGHTS if w.model != name])
        (folder / entry.file).write_bytes(body)
        return body
    return put


def test_deconv_and_features_of_an_imagenet_vgg_on_the_sample_photographs(cache_with, tmp_path):
    cache_with("vgg11_bn", get_model("vgg11_bn", **TINY_VGG))
    projections, order = study.deconv("vgg11_bn", weights="DEFAULT", layer=2, top=4, out=tmp_path, **TINY_VGG)
    assert projections.shape == (4, 3, 224, 224) and len(order) == 4
    assert all(0 <= image < 3 for image, _ in order)  # three photographs: astronaut, chelsea, coffee
    assert np.abs(projections).sum() > 0
    saved = json.loads((tmp_path / "deconv.json").read_text())
    assert saved["model"] == "vgg11_bn" and saved["layer"] == 2
    stats = study.features("vgg11_bn", weights="DEFAULT", layer=1, image=1, out=tmp_path, **TINY_VGG)
    assert stats["filters"] == [2, 3, 3, 3] and stats["maps"] == [2, 224, 224]
    result = features_measure("vgg11_bn", weights="DEFAULT", layer=1, image=1, **TINY_VGG)
    index, name = result["target"].split(" ", 1)
    assert name == imagenet_classes()[int(index)]  # the class chelsea.jpg is predicted as
    for png in ("deconv.png", "filters.png", "feature_maps.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_a_pth_file_of_1000_classes_is_studied_on_photographs(tmp_path):
    (tmp_path / "vgg.pth").write_bytes(torch_file(get_model("vgg11", **TINY_VGG)))
    projections, _ = study.deconv("vgg11", weights=str(tmp_path / "vgg.pth"), layer=1, top=2, out=tmp_path,
                                  **TINY_VGG)
    assert projections.shape == (2, 3, 224, 224)


def test_se_excitations_of_an_imagenet_efficientnet(cache_with, tmp_path):
    cache_with("efficientnet_b0", get_model("efficientnet_b0", **TINY_EFFICIENTNET))
    per_class = study.se_weights("efficientnet_b0", weights="DEFAULT", out=tmp_path, **TINY_EFFICIENTNET)
    assert len(per_class) == 4  # one SE block per MBConv of TINY_STAGES
    for gates in per_class.values():
        assert 1 <= gates.shape[0] <= 3 and np.all((gates > 0) & (gates < 1))
    assert (tmp_path / "se_weights.png").stat().st_size > 0


def test_models_without_imagenet_weights_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    assert study.main(["--out", str(tmp_path), "deconv", "--model", "alexnet", "--weights", "DEFAULT"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study deconv: --weights DEFAULT: alexnet has no pretrained weights")
    assert err.count("\n") == 1

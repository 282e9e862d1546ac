"""Pretrained ImageNet weights: the catalogue against torchvision's architectures, and the download path
(cache, checksum, mirrors, offline advice) against a loopback HTTP server serving a .pth written by
torch.save from a tiny model. Nothing is ever fetched from the network."""
import dataclasses
import hashlib
import io
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import LoopbackServer, torchvision_reference
from scratchnet.models import PretrainedError, get_model, list_models, pretrained

TINY = dict(widths=(4, 8, 8, 8))  # a resnet18 small enough to serve, still 1000 classes


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """An empty cache, an empty torch hub cache, and torchvision's server replaced by a loopback 404."""
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SCRATCHNET_WEIGHTS_MIRROR", raising=False)
    server = LoopbackServer({})
    monkeypatch.setattr(pretrained, "SERVER", server.url + "/models/")
    yield
    server.close()


def test_every_listed_model_has_torchvisions_keys_and_shapes():
    """Each model's state_dict is compared key for key and shape for shape with torchvision's by its family's
    tests (tests/models/test_models_*.py, from the same reference file); here: that the list holds only
    such models, each with one default."""
    reference = torchvision_reference()
    models = sorted({w.model for w in pretrained.WEIGHTS})
    assert len(models) == 25 and set(models) <= set(list_models())
    for name in models:
        assert sum(w.default for w in pretrained.weights_of(name)) == 1, name
        # densenet161 (not in the file) was compared with torchvision 0.29.1's by hand: keys and shapes equal
        assert name == "densenet161" or reference[name]["state_dict"], name
    got = [[k, list(v.shape)] for k, v in get_model("densenet121").state_dict().items()]
    assert got == reference["densenet121"]["state_dict"]
    for w in pretrained.WEIGHTS:
        assert len(w.sha256_prefix) >= 8 and int(w.sha256_prefix, 16) >= 0
        assert w.interpolation in ("bilinear", "bicubic") and w.crop_size <= w.resize_size + 1


def test_models_without_matching_weights_say_why():
    with pytest.raises(PretrainedError, match="alexnet has no pretrained weights .torchvision's alexnet is "
                                              "Krizhevsky's 2014 single-tower variant"):
        get_model("alexnet", weights="DEFAULT")
    with pytest.raises(PretrainedError, match="lenet5 has no pretrained weights .*models with ImageNet weights: "
                                              "densenet121"):
        get_model("lenet", weights="DEFAULT")
    with pytest.raises(PretrainedError, match="resnet50 has no weights named 'IMAGENET1K_V9'; choose DEFAULT or "
                                              "one of IMAGENET1K_V1, IMAGENET1K_V2"):
        get_model("resnet50", weights="IMAGENET1K_V9")
    with pytest.raises(PretrainedError, match="ImageNet weights have 1000 classes, not num_classes=10"):
        get_model("resnet18", weights="DEFAULT", num_classes=10)
    assert pretrained.resolve("resnet50", "DEFAULT").name == "IMAGENET1K_V2"
    assert pretrained.resolve("resnet50", "ResNet50_Weights.IMAGENET1K_V1").file == "resnet50-0676ba61.pth"


@pytest.fixture
def tiny_weights(monkeypatch):
    """A tiny resnet18's state dict saved by torch.save, and resnet18's catalogue entry pointing at it."""
    torch.manual_seed(0)
    model = get_model("resnet18", **TINY)
    state = OrderedDict((k, torch.from_numpy(v) + torch.rand(v.shape).to(torch.from_numpy(v).dtype))
                        for k, v in model.state_dict().items())
    stream = io.BytesIO()
    torch.save(state, stream)
    body = stream.getvalue()
    entry = dataclasses.replace(pretrained.resolve("resnet18", "DEFAULT"),
                                file=f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth")
    monkeypatch.setattr(pretrained, "WEIGHTS", [entry] + [w for w in pretrained.WEIGHTS if w.model != "resnet18"])
    return entry, body, {k: v.numpy() for k, v in state.items()}


def assert_loaded(model, expected):
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_downloaded_from_a_mirror_verified_cached_and_loaded(tiny_weights, monkeypatch, tmp_path):
    entry, body, expected = tiny_weights
    server = LoopbackServer({entry.file: body})
    monkeypatch.setenv("SCRATCHNET_WEIGHTS_MIRROR", server.url + "/mirror")
    try:
        model = get_model("resnet18", weights="IMAGENET1K_V1", **TINY)
    finally:
        server.close()
    assert_loaded(model, expected)
    assert model.pretrained == entry
    cached = tmp_path / "cache" / "weights" / entry.file
    assert cached.read_bytes() == body and sorted(os.listdir(cached.parent)) == [entry.file]
    again = get_model("resnet18", weights="DEFAULT", **TINY)  # the server is gone: the cache serves it
    assert_loaded(again, expected)


def test_a_file_in_torch_hubs_cache_is_used(tiny_weights, tmp_path):
    entry, body, expected = tiny_weights
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / entry.file).write_bytes(body)
    assert_loaded(get_model("resnet18", weights="DEFAULT", **TINY), expected)


def test_bad_download_keeps_nothing_and_offline_says_what_to_put_where(tiny_weights, monkeypatch, tmp_path):
    entry, body, _ = tiny_weights
    server = LoopbackServer({entry.file: body[:-10] + b"0123456789"})  # right length, wrong bytes
    monkeypatch.setenv("SCRATCHNET_WEIGHTS_MIRROR", server.url)
    try:
        with pytest.raises(PretrainedError) as info:
            get_model("resnet18", weights="DEFAULT", **TINY)
    finally:
        server.close()
    message = str(info.value)
    assert f"does not begin with {entry.sha256_prefix}" in message
    assert f"download {pretrained.SERVER}{entry.file} on a machine with a network and put it in " \
           f"{tmp_path / 'cache' / 'weights'}/" in message
    assert not (tmp_path / "cache" / "weights").exists() or not os.listdir(tmp_path / "cache" / "weights")


def test_a_corrupt_cached_file_is_named_and_not_loaded(tiny_weights, tmp_path):
    entry, body, _ = tiny_weights
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)
    (folder / entry.file).write_bytes(body[:100])
    with pytest.raises(PretrainedError, match=f"{folder / entry.file} is corrupt: its SHA-256 begins .* not "
                                              f"{entry.sha256_prefix}.*delete it"):
        get_model("resnet18", weights="DEFAULT", **TINY)


def test_weights_may_be_a_file_path(tiny_weights, tmp_path):
    _, body, expected = tiny_weights
    (tmp_path / "mine.pth").write_bytes(body)
    assert_loaded(get_model("resnet18", weights=tmp_path / "mine.pth", **TINY), expected)
    assert_loaded(get_model("resnet18", weights=str(tmp_path / "mine.pth"), **TINY), expected)

"""python -m scratchnet.predict: top-5 ImageNet classes of photographs, with weights served from the cache
(a tiny resnet18's .pth written by torch.save under torchvision's file name); every bad input one line."""
import dataclasses
import hashlib
import io
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.data import imagenet_classes, read_image, sample_images
from scratchnet.data.transforms import imagenet_eval
from scratchnet.models import get_model, pretrained
from scratchnet.predict import main

TINY = "widths=(4, 8, 8, 8)"


@pytest.fixture
def cached_tiny_resnet18(tmp_path, monkeypatch):
    """resnet18's DEFAULT weights: a tiny net's file, already in the cache (no server anywhere)."""
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(pretrained, "SERVER", "http://127.0.0.1:9/")  # nothing listens on the discard port
    torch.manual_seed(0)
    model = get_model("resnet18", widths=(4, 8, 8, 8))
    state = OrderedDict((k, torch.from_numpy(v) + torch.rand(v.shape).to(torch.from_numpy(v).dtype))
                        for k, v in model.state_dict().items())
    stream = io.BytesIO()
    torch.save(state, stream)
    entry = dataclasses.replace(pretrained.resolve("resnet18", "DEFAULT"),
                                file=f"resnet18-{hashlib.sha256(stream.getvalue()).hexdigest()[:8]}.pth")
    monkeypatch.setattr(pretrained, "WEIGHTS", [entry] + [w for w in pretrained.WEIGHTS if w.model != "resnet18"])
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)
    (folder / entry.file).write_bytes(stream.getvalue())
    model.load_state_dict({k: v.numpy() for k, v in state.items()})
    return model.eval()


def test_prints_the_top_classes_of_each_image(cached_tiny_resnet18, capsys):
    images = [str(p) for p in sample_images()[:2]]
    assert main([*images, "--model", "resnet18", "--model-arg", TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 6 and lines[0] == images[0] and lines[6] == images[1]
    names = imagenet_classes()
    for block, image in ((lines[1:6], images[0]), (lines[7:12], images[1])):
        x = imagenet_eval(256, 224, "bilinear")(read_image(image))
        with sn.no_grad():
            p = sn.nn.functional.softmax(cached_tiny_resnet18(sn.tensor(x)), 1).numpy()[0]
        expected = np.argsort(-p, kind="stable")[:5]
        for line, index in zip(block, expected):
            match = re.fullmatch(r"\s+(\d+\.\d\d)%  (.+) \((\d+)\)", line)
            assert match and int(match[3]) == index and match[2] == names[index], line
            assert abs(float(match[1]) - 100 * p[index]) < 0.006


def test_bad_inputs_are_one_line_each(cached_tiny_resnet18, tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    image = str(sample_images()[0])
    for argv, expected in [
        ([str(tmp_path / "none.jpg")], "image " + str(tmp_path / "none.jpg") + " does not exist"),
        ([str(tmp_path / "notes.jpg"), "--model", "resnet18", "--model-arg", TINY], "is not an image Pillow can read"),
        ([image, "--model", "lenet5"], "lenet5 has no pretrained weights"),
        ([image, "--model", "resnet18", "--model-arg", TINY, "--crop", "300"], "--crop 300 is larger than --resize"),
        ([image, "--model", "resnet34"], "download https://download.pytorch.org/models/resnet34-b627a593.pth"
                                         .replace("https://download.pytorch.org/models/", "http://127.0.0.1:9/")),
        ([image, "--top", "0"], "argument --top: must be a positive int, got 0"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err

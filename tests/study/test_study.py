"""The study tools: each runs on tiny models, writes its files, and its numbers mean what they say."""
import importlib
import json

import numpy as np
import pytest
import torch

import scratchnet as sn
from conftest import assert_close
from scratchnet import study
from scratchnet.data import load_mnist
from scratchnet.models import get_model
from scratchnet.models.senet import SEBlock
from scratchnet.nn import Conv2d, MaxPool2d
from scratchnet.study.common import fashion_batches
from scratchnet.study.features import measure as measure_features

TF = torch.nn.functional
degradation_study = importlib.import_module("scratchnet.study.degradation")  # the package exports the function


pytestmark = pytest.mark.usefixtures("data_env")


def test_gradflow_shows_vanishing_sigmoid_gradients(tmp_path):
    results = study.gradflow(["deep_sigmoid", "deep_relu"], steps=2, batch_size=8, out=tmp_path)
    assert (tmp_path / "gradflow.png").stat().st_size > 0
    saved = json.loads((tmp_path / "gradflow.json").read_text())
    assert saved == results  # every number written is the one returned
    assert set(saved) == {"deep_sigmoid", "deep_relu"}
    for name, r in results.items():
        assert len(r["at_init"]) == 20 and len(r["after_steps"]) == 20
        assert all(rec["weight_grad"] > 0 and rec["activation_grad"] > 0 for rec in r["at_init"])
    first_over_last = {n: r["at_init"][0]["weight_grad"] / r["at_init"][-1]["weight_grad"] for n, r in results.items()}
    # sigma' <= 1/4 per layer: 19 sigmoid layers shrink the gradient by many orders of magnitude
    assert first_over_last["deep_sigmoid"] < 1e-6
    assert first_over_last["deep_relu"] > 1e-2


def test_joins_split_residual_gradient_into_shortcut_and_branch(tmp_path):
    model = get_model("resnet20", num_classes=10, in_channels=1)
    results = study.joins([model], batch_size=2, out=tmp_path)
    records = results["cifarresnet"]
    assert {r["path"] for r in records} == {"shortcut", "residual"}
    assert len(records) == 2 * 9  # 9 residual units, one record per path
    assert all(r["norm"] > 0 for r in records)
    assert (tmp_path / "joins.png").exists()


def test_max_unpool_matches_torch():
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7))
    pool = MaxPool2d(3, 2, padding=1)
    y, switches = study.max_pool_with_switches(x, pool)
    ty, idx = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    expected = torch.nn.functional.max_unpool2d(ty, idx, 3, 2, 1, output_size=(7, 7)).numpy()
    np.testing.assert_array_equal(study.max_unpool(y, switches, pool, x.shape), expected)


def test_deconv_of_one_conv_projects_the_filter():
    """Through a single conv, a lone activation projects back to that filter, scaled and placed."""
    conv = Conv2d(1, 4, 3).double()
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8))
    projections, order = study.deconv_project([conv], x, 0, top=1)
    (image, channel), = order
    fmap = conv(sn.tensor(x)).data
    i, j = np.unravel_index(fmap[image, channel].argmax(), fmap.shape[2:])
    expected = np.zeros((1, 8, 8))
    expected[:, i:i + 3, j:j + 3] = fmap[image, channel, i, j] * conv.weight.data[channel]
    np.testing.assert_allclose(projections[0], expected, rtol=1e-12)


def test_deconv_features_and_se_tools_write_their_files(tmp_path):
    projections, order = study.deconv("lenet", steps=3, batch_size=8, images=8, top=4, out=tmp_path)
    assert projections.shape == (4, 1, 32, 32) and len(order) == 4
    assert all(np.abs(p).sum() > 0 for p in projections)
    saved = json.loads((tmp_path / "deconv.json").read_text())
    assert saved == dict(model="lenet", layer=2, activations=[list(o) for o in order],
                         projection_abs_sum=[float(np.abs(p).sum()) for p in projections])
    stats = study.features("lenet", steps=3, batch_size=8, out=tmp_path)
    assert stats["filters"] == [6, 1, 5, 5] and stats["maps"] == [6, 28, 28]
    assert json.loads((tmp_path / "features.json").read_text()) == stats and len(stats["map_mean"]) == 6
    model = get_model("resnet20", num_classes=10, in_channels=1, se_layer=lambda c: SEBlock(c, reduction=4))
    per_class = study.se_weights(model, steps=2, batch_size=8, images=40, out=tmp_path)
    assert len(per_class) == 9
    for gates in per_class.values():
        assert gates.shape[0] == 10 and ((gates > 0) & (gates < 1)).all()
    saved = json.loads((tmp_path / "se_weights.json").read_text())
    assert saved["per_class"] == {name: gates.tolist() for name, gates in per_class.items()}
    assert saved["class_spread"] == {name: float(gates.std(axis=0).mean()) for name, gates in per_class.items()}
    for name in ("deconv.png", "filters.png", "feature_maps.png", "se_weights.png", "se_weights.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_se_gates_are_each_blocks_sigmoid_output_averaged_per_label(tmp_path):
    """The gates recomputed by torch from each SE block's input (hooked on the block itself), grouped by the
    labels of the images the model was fed."""
    model = get_model("resnet20", num_classes=10, in_channels=1, se_layer=lambda c: SEBlock(c, reduction=4))
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, SEBlock)}
    block_inputs, fed = {}, []
    for name, block in blocks.items():
        block.register_forward_hook(lambda m, args, out, name=name: block_inputs.__setitem__(name, args[0].data))
    model.register_forward_hook(lambda m, args, out: fed.append(args[0].data))
    per_class = study.se_weights(model, steps=0, images=40, out=tmp_path)
    (x, labels), = fashion_batches(model, 1, 40, seed=1, train=False)
    assert len(fed) == 1 and np.array_equal(fed[0], x)  # the labels below are those of the images fed
    assert set(labels) == set(range(10))
    assert list(per_class) == list(blocks) and len(blocks) == 9
    for name, block in blocks.items():
        pooled = torch.tensor(block_inputs[name]).mean((2, 3), keepdim=True)
        hidden = torch.relu(TF.conv2d(pooled, torch.tensor(block.fc1.weight.data), torch.tensor(block.fc1.bias.data)))
        gates = torch.sigmoid(TF.conv2d(hidden, torch.tensor(block.fc2.weight.data),
                                        torch.tensor(block.fc2.bias.data)))[:, :, 0, 0]
        expected = torch.stack([gates[torch.tensor(labels == c)].mean(0) for c in range(10)])
        assert_close(per_class[name], expected, what=name)
        spread = json.loads((tmp_path / "se_weights.json").read_text())["class_spread"][name]
        assert spread == pytest.approx(expected.std(0, correction=0).mean().item(), rel=1e-5)


def test_feature_maps_are_the_chosen_conv_output_of_the_chosen_image(tmp_path):
    """LeNet's second conv (c3) on image 3, recomputed by torch from the weights file the study loaded."""
    sn.manual_seed(3)
    lenet = get_model("lenet", num_classes=10)
    sn.save(lenet, tmp_path / "lenet.npz")
    w = {k: torch.tensor(v) for k, v in lenet.state_dict().items()}
    result = measure_features("lenet", weights=tmp_path / "lenet.npz", layer=2, image=3)
    (x, labels), = fashion_batches(lenet, 1, 4, seed=1, train=False)
    assert np.array_equal(result["input"], x[3]) and result["target"] == str(labels[3])  # a class index here
    c1 = TF.max_pool2d(torch.relu(TF.conv2d(torch.tensor(x[3:4]), w["c1.weight"], w["c1.bias"])), 2)
    maps = TF.conv2d(c1, w["c3.weight"], w["c3.bias"])[0]
    assert_close(result["maps"], maps, what="c3 maps")
    assert_close(result["filters"], w["c1.weight"], what="first-layer filters")
    stats = study.features("lenet", weights=tmp_path / "lenet.npz", layer=2, image=3, out=tmp_path)
    assert stats["maps"] == [16, 10, 10] and stats["filters"] == [6, 1, 5, 5]
    np.testing.assert_allclose(stats["map_mean"], maps.mean((1, 2)).numpy(), rtol=1e-5, atol=1e-6)


def test_feature_maps_are_the_conv_output_before_an_in_place_relu(tmp_path):
    """VGG's ReLU(inplace=True) writes over conv1's output array: the study keeps the conv's output (with its
    negative values), not the activation (an ImageNet model: the sample photographs)."""
    sn.manual_seed(0)
    small = dict(width=1 / 32, hidden=16)
    vgg = get_model("vgg11", **small)
    sn.save(vgg, tmp_path / "vgg.npz")
    result = measure_features("vgg11", weights=tmp_path / "vgg.npz", layer=1, image=0, **small)
    conv = vgg.features[0]
    maps = TF.conv2d(torch.tensor(result["input"][None]), torch.tensor(conv.weight.numpy()),
                     torch.tensor(conv.bias.numpy()), padding=1)[0]
    assert (result["maps"] < 0).mean() > 0.1
    assert_close(result["maps"], maps, what="conv1 maps")


def test_an_untrained_imagenet_model_sees_the_photographs_at_its_own_input_size(tmp_path):
    """The paper's AlexNet takes 227x227: the photographs are cropped to that (a 224 crop left its classifier
    6400 features where it expects 9216, and the study ended in a traceback)."""
    small = dict(channels=(4, 4, 6, 6, 4), hidden=8)
    sn.manual_seed(0)
    sn.save(get_model("alexnet", **small), tmp_path / "alexnet.npz")
    result = measure_features("alexnet", weights=tmp_path / "alexnet.npz", layer=1, image=0, **small)
    assert result["input"].shape == (3, 227, 227) and result["maps"].shape == (4, 55, 55)


def test_cost_tool_uses_the_summary_numbers(tmp_path):
    rows = study.cost(["lenet5", "alexnet"], out=tmp_path)
    assert json.loads((tmp_path / "cost.json").read_text()) == rows and (tmp_path / "cost.png").exists()
    by_name = {r["model"]: r for r in rows}
    for name, row in by_name.items():
        model = get_model(name)
        s = sn.summary(model, model.input_size, print_table=False)
        assert (row["params"], row["macs"], row["input"]) == (s.total_params, s.total_macs, list(model.input_size))
        assert row["params"] == model.num_parameters()
    # against the papers' tables: AlexNet's 60,965,224 weights (two-GPU groups), and LeNet-5's multiply-adds
    # layer by layer (C1 6x28x28x25, full C3 16x10x10x150, C5 120x400, F6 84x120, output 10x84)
    assert by_name["alexnet"]["params"] == 60_965_224
    assert by_name["lenet5"]["macs"] == 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84


def raw_fashion_labels(train, count):
    """{image bytes: label} of the first ``count`` Fashion-MNIST images, read from the dataset files."""
    images, labels = load_mnist("fashion-mnist", train=train, progress=False).get_batch(np.arange(count))
    table = {image.tobytes(): int(label) for image, label in zip(images, labels)}
    assert len(table) == count  # no two images alike: an image names its label
    return table


def label_of(table, padded):
    """The label of a degradation input (normalised, padded to 32x32), recovered from its pixels."""
    from scratchnet.study.common import FASHION_MEAN, FASHION_STD
    raw = np.rint((padded[:, 2:30, 2:30] * FASHION_STD + FASHION_MEAN) * 255).astype(np.uint8)
    return table[raw.tobytes()]


def test_degradation_records_the_misclassification_rates_it_saw(tmp_path, monkeypatch):
    """Every forward of the nets is watched (predictions, inputs, train or eval mode) and the error rates
    are counted again here: training error over each window of ``log_every`` iterations, test error over
    all 48 test images (batches of 32 and 16), labels looked up by image in the dataset files."""
    forwards = {}
    make_net = degradation_study.cifar_net

    def watched(name, study_name, **options):
        net = make_net(name, study_name, **options)
        net.register_forward_hook(lambda module, args, output: forwards.setdefault(name, []).append(
            (module.training, output.data.argmax(1), args[0].data.copy())))
        return net

    monkeypatch.setattr(degradation_study, "cifar_net", watched)
    results = study.degradation(["plain20", "resnet20"], epochs=2, limit=64, batch_size=32, test_limit=48,
                                log_every=2, out=tmp_path)
    assert set(results) == {"plain20", "resnet20"}
    train_labels, test_labels = raw_fashion_labels(True, 64), raw_fashion_labels(False, 48)
    for name, curve in results.items():
        assert curve["iteration"] == [2, 4] and curve["epoch_end"] == [2, 4]
        wrong = {True: [], False: []}  # per forward: how many it got wrong
        for training, predicted, images in forwards[name]:
            table = train_labels if training else test_labels
            wrong[training].append(sum(int(p != label_of(table, image)) for p, image in zip(predicted, images)))
        assert len(wrong[True]) == 4 and len(wrong[False]) == 2 * 2  # 4 steps; 32 + 16 test images per epoch
        assert curve["train_error"] == [sum(wrong[True][:2]) / 64, sum(wrong[True][2:]) / 64]
        assert curve["test_error"] == [sum(wrong[False][:2]) / 48, sum(wrong[False][2:]) / 48]
        assert json.loads((tmp_path / "degradation" / f"{name}.json").read_text()) == curve  # read back
    assert json.loads((tmp_path / "degradation.json").read_text()) == results
    assert (tmp_path / "degradation.png").exists()


def test_degradation_saves_weights_the_landscape_study_loads(tmp_path):
    """The trained nets are saved as NAME.npz; the landscape study drawn around them (--weights-dir) starts
    from the same seeded initialisation and ends at exactly those weights."""
    from scratchnet.nn.serialization import load
    from scratchnet.study.landscape import landscape_of
    study.degradation(["resnet20"], epochs=1, limit=64, batch_size=32, test_limit=32, log_every=1, out=tmp_path)
    saved = load(tmp_path / "degradation" / "resnet20.npz")
    sn.manual_seed(0)
    initial = get_model("resnet20", num_classes=10, in_channels=1).state_dict()
    assert any(not np.array_equal(saved[k], initial[k]) for k in initial)  # trained: the weights moved
    result = landscape_of("resnet20", weights=tmp_path / "degradation" / "resnet20.npz", points=3,
                                    grid=3, hessian_iterations=1, eval_images=16, eval_batch=16, recalibrate=False,
                                    save_weights=tmp_path / "end.npz")
    end = load(tmp_path / "end.npz")
    assert all(np.array_equal(end[k], saved[k]) for k in saved)  # measured at the degradation run's weights
    assert result["trained_steps"] == 0


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert study.main(["--out", str(tmp_path), "deconv", "--model", "lenet", "--layer", "9", "--steps", "0"]) == 2
    assert "--layer must be between 1 and 3" in capsys.readouterr().err

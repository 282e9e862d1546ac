"""The loss-landscape study: filter-normalised directions, the loss along them and between two weight
sets, and the Hessian's top eigenvalue, each checked against numbers known independently."""
import json

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.models.resnet import CifarResNet
from scratchnet.nn import BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential, Tanh
from scratchnet.study.landscape import (eigenvalue_by_step, eval_batches, evaluate, exact_hessian_vector_function,
                                       filter_normalized_direction, gradient_function, hessian_vector_product,
                                       interpolate, landscape, losses_along, power_iteration, recalibrate_batch_norm,
                                       symmetric_axis, top_hessian_eigenvalue)
from scratchnet.study import main
from scratchnet.study.common import train_briefly


pytestmark = pytest.mark.usefixtures("data_env")


def tiny_net(shortcut="A", seed=0):
    """A 4-conv-layer CIFAR net (one unit per stage, widths 4 and 8) on 8x8 inputs: milliseconds a step."""
    sn.manual_seed(seed)
    net = CifarResNet(1, widths=(4, 8), in_channels=1, shortcut=shortcut)
    net.input_size = (1, 8, 8)
    return net


def random_batches(n=2, size=6, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 1, 8, 8)).astype(dtype), rng.integers(0, 10, size)) for _ in range(n)]


def test_filter_normalised_direction_matches_each_filters_norm():
    net = tiny_net()
    direction = filter_normalized_direction(net, np.random.default_rng(0))
    seen_conv = seen_linear = 0
    for name, p in net.named_parameters():
        w, d = p.data.astype(np.float64), direction[name]
        assert d.shape == w.shape
        if w.ndim == 1:  # biases and BN weight/bias: no direction (the paper's appendix)
            assert not d.any()
            continue
        seen_conv += w.ndim == 4
        seen_linear += w.ndim == 2
        for filter_w, filter_d in zip(w, d):  # a conv output channel, or a linear layer's row
            np.testing.assert_allclose(np.linalg.norm(filter_d), np.linalg.norm(filter_w), rtol=1e-12)
        assert not np.allclose(d / np.linalg.norm(d), w / np.linalg.norm(w))  # random, not the weights
    assert seen_conv == 5 and seen_linear == 1  # stem + 2 units x 2 convs, and fc


def test_power_iteration_recovers_the_top_eigenvalue_of_a_quadratic():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    for eigenvalues in ([7.0, 3.0, -2.0, 1.0, 0.5, 0.1], [-9.0, 4.0, 2.0, 1.0, 0.0, -1.0]):
        a = q @ np.diag(eigenvalues) @ q.T
        b = rng.standard_normal(6)
        grad = lambda w: a @ w + b  # noqa: E731 - the gradient of w.Aw/2 + b.w
        w0 = rng.standard_normal(6)
        top, v, history = top_hessian_eigenvalue(grad, w0, iterations=200, step=1e-2, tol=1e-14)
        assert top == pytest.approx(eigenvalues[0], rel=1e-9)  # the largest magnitude, sign included
        assert abs(v @ q[:, 0]) == pytest.approx(1, rel=1e-6)
        assert len(history) < 200  # converged, stopped early
        # central differences are exact for a quadratic: the same number at every step
        by_step = eigenvalue_by_step(grad, w0, v, (1e-4, 1e-2, 1.0))
        np.testing.assert_allclose(list(by_step.values()), eigenvalues[0], rtol=1e-9)


def test_finite_difference_hessian_vector_product_matches_torch_exact_hvp():
    """On a smooth net (tanh, float64) the central difference equals torch's double-backward H v."""
    sn.manual_seed(1)
    net = Sequential(Linear(5, 7), Tanh(), Linear(7, 3)).double()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    w, grad = gradient_function(net, [(x[:4], y[:4]), (x[4:], y[4:])])  # two batches: the mean over all
    v = rng.standard_normal(w.shape)
    v /= np.linalg.norm(v)
    ours = hessian_vector_product(grad, w, v, 1e-4)

    shapes = [p.shape for p in net.parameters()]
    def loss(flat):
        pieces, start = [], 0
        for shape in shapes:
            pieces.append(flat[start:start + int(np.prod(shape))].reshape(shape))
            start += int(np.prod(shape))
        w1, b1, w2, b2 = pieces
        hidden = torch.tanh(torch.tensor(x) @ w1.T + b1)
        return torch.nn.functional.cross_entropy(hidden @ w2.T + b2, torch.tensor(y))
    _, exact = torch.autograd.functional.hvp(loss, torch.tensor(w), torch.tensor(v))
    np.testing.assert_allclose(grad(w), torch.autograd.functional.jacobian(loss, torch.tensor(w)).numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours, exact.numpy(), rtol=1e-6, atol=1e-9)
    assert np.array_equal(np.concatenate([p.data.ravel() for p in net.parameters()]), w)  # grad put w back
    # and scratchnet's own exact H v (double backward) equals torch's to rounding
    exact_ours = exact_hessian_vector_function(net, [(x[:4], y[:4]), (x[4:], y[4:])])(v)
    np.testing.assert_allclose(exact_ours, exact.numpy(), rtol=1e-10, atol=1e-12)


def test_exact_power_iteration_finds_the_top_eigenvalue_of_a_small_net():
    """On a float64 net small enough to build its whole Hessian from exact H v products, the power
    iteration's eigenvalue is the dense Hessian's eigenvalue of largest magnitude."""
    sn.manual_seed(2)
    net = Sequential(Linear(3, 4), Tanh(), Linear(4, 2)).double()
    rng = np.random.default_rng(4)
    batches = [(rng.standard_normal((6, 3)), rng.integers(0, 2, 6))]
    hvp = exact_hessian_vector_function(net, batches)
    n = sum(p.size for p in net.parameters())
    hessian = np.stack([hvp(e) for e in np.eye(n)])
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)  # symmetric, as a Hessian is
    eigenvalues = np.linalg.eigvalsh(hessian)
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    found, v, _ = power_iteration(hvp, n, iterations=500, tol=1e-13)
    assert found == pytest.approx(top, rel=1e-8) and np.linalg.norm(v) == pytest.approx(1)


def test_evaluate_is_torchs_mean_cross_entropy_over_all_images():
    """Batches of 8, 8 and 4 images (eval_batches' uneven split of 20): the loss is the mean over the 20
    images (not the mean of the three batch means) and the accuracy the fraction of the 20 right, both
    computed here by a torch twin on all 20 at once."""
    sn.manual_seed(5)  # an untrained net that gets 3 of the 20 right
    net = Sequential(Conv2d(1, 3, 3), BatchNorm2d(3), ReLU(), Flatten(), Linear(3 * 6 * 6, 10))
    net.input_size = (1, 8, 8)
    net[1].running_mean.data = np.float32([0.1, -0.2, 0.3])  # eval mode: BN uses these, not batch statistics
    net[1].running_var.data = np.float32([0.5, 2.0, 1.5])
    batches = eval_batches(net, 20, 8, None, seed=0)
    assert [len(y) for _, y in batches] == [8, 8, 4]
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 10)).eval()
    twin.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    x = torch.tensor(np.concatenate([x for x, _ in batches]))
    y = torch.tensor(np.concatenate([y for _, y in batches]))
    with torch.no_grad():
        logits = twin(x)
    loss, accuracy = evaluate(net, batches)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert accuracy == (logits.argmax(1) == y).sum().item() / 20 == 3 / 20
    assert not net.training


def test_interpolation_endpoints_are_the_two_weight_sets_losses():
    net, batches = tiny_net(), random_batches()
    start = net.state_dict()
    net.train()
    for x, _ in batches:  # train-mode forwards move the BN running statistics too
        net(sn.Tensor(x * 3 + 1))
    for p in net.parameters():
        p.data = p.data * 1.5 + 0.01
    end = net.state_dict()
    assert not np.allclose(start["bn1.running_mean"], end["bn1.running_mean"])
    losses, accuracies = interpolate(net, start, end, [0.0, 0.5, 1.0], batches)
    for alpha, state in ((0, start), (2, end)):
        fresh = tiny_net(seed=5)
        fresh.load_state_dict(state)
        assert (losses[alpha], accuracies[alpha]) == evaluate(fresh, batches)
    middle = tiny_net(seed=5)
    middle.load_state_dict({k: (s + end[k]) / 2 if s.dtype.kind == "f" else end[k] for k, s in start.items()})
    assert losses[1] == pytest.approx(evaluate(middle, batches)[0], rel=1e-6)
    assert all(np.array_equal(a, end[k]) for k, a in net.state_dict().items())  # left at the end point
    # beyond the ends the weights extrapolate, the running statistics stay at the nearer end
    beyond = tiny_net(seed=5)
    beyond.load_state_dict({k: s if "running" in k else 1.5 * s - 0.5 * end[k] if s.dtype.kind == "f" else end[k]
                            for k, s in start.items()})
    assert interpolate(net, start, end, [-0.5], batches)[0] == [evaluate(beyond, batches)[0]]


def test_batch_norm_recalibration_averages_the_batch_statistics():
    net, batches = tiny_net(), random_batches(n=3)
    inputs = []
    net.bn1.register_forward_hook(lambda module, args, output: inputs.append(args[0].data.astype(np.float64)))
    net.train()
    net(sn.Tensor(batches[0][0] * 5))  # stale statistics to be replaced
    inputs.clear()
    recalibrate_batch_norm(net, batches)
    assert not net.training and net.bn1.momentum == 0.1 and int(net.bn1.num_batches_tracked.data) == 3
    np.testing.assert_allclose(net.bn1.running_mean.data, np.mean([x.mean(axis=(0, 2, 3)) for x in inputs], 0),
                               rtol=1e-5, atol=1e-7)
    unbiased = [x.var(axis=(0, 2, 3), ddof=1) for x in inputs]  # torch's running_var keeps the unbiased one
    np.testing.assert_allclose(net.bn1.running_var.data, np.mean(unbiased, 0), rtol=1e-5)


def test_brief_training_runs_in_train_mode_after_a_recalibration():
    net = tiny_net()
    recalibrate_batch_norm(net, random_batches(n=1))  # leaves the net in eval mode
    train_briefly(net, 2, 4, None, seed=0)
    assert net.training and int(net.bn1.num_batches_tracked.data) == 1 + 2  # batch statistics were used


def test_losses_along_directions_start_at_the_weights_and_restore_them():
    net, batches = tiny_net(), random_batches()
    before = net.state_dict()
    rng = np.random.default_rng(0)
    dx, dy = filter_normalized_direction(net, rng), filter_normalized_direction(net, rng)
    line = losses_along(net, [dx], [(-0.5,), (0.0,), (0.5,)], batches)
    plane = losses_along(net, [dx, dy], [(-0.5, 0.0), (0.0, 0.0), (0.5, 0.0), (0.0, 0.5)], batches)
    assert line[1] == evaluate(net, batches)[0]
    assert plane[:3] == line  # the plane's x axis is the line
    assert len({line[0], line[2], plane[3], line[1]}) == 4  # the directions do move the loss
    assert all(np.array_equal(a, before[k]) for k, a in net.state_dict().items())
    manual = tiny_net(seed=7)
    manual.load_state_dict({k: v + 0.5 * dx[k] if k in dx else v for k, v in before.items()})
    assert line[2] == pytest.approx(evaluate(manual, batches)[0], rel=1e-6)


def test_symmetric_axis_has_zero_on_it():
    for n in (3, 9, 11, 21):
        axis = symmetric_axis(1.0, n)
        assert axis[0] == -1 and axis[-1] == 1 and axis[n // 2] == 0 and np.allclose(np.diff(axis), 2 / (n - 1))


def test_landscape_writes_json_pictures_and_weights_that_read_back(tmp_path, capsys):
    nets = {"plain_tiny": tiny_net(shortcut=None), "res_tiny": tiny_net()}
    results = landscape(nets, steps=3, batch_size=8, eval_images=20, eval_batch=8, points=6, grid=3,
                          hessian_iterations=3, out=tmp_path)
    saved = json.loads((tmp_path / "landscape.json").read_text())
    assert saved == results  # every number written is the number returned
    for name, r in saved.items():
        assert r["model"] == name and r["trained_steps"] == 3 and len(r["train_loss"]) == 3
        interp = dict(zip(r["interpolation"]["alpha"], r["interpolation"]["loss"]))
        assert interp[1.0] == r["loss"]  # alpha = 1 is the trained net
        assert len(r["interpolation"]["alpha"]) == 6 + 2 and min(interp) < 0 and max(interp) > 1
        assert r["surface"]["loss"][1][1] == r["loss"] and np.shape(r["surface"]["loss"]) == (3, 3)
        h = r["hessian"]
        assert h["top_eigenvalue"] == h["history"][-1] and len(h["history"]) <= 3
        assert set(h["by_step"]) == {"0.0001", "0.001", "0.01"} and h["relative_spread"] >= 0
        # the finite-difference quotient at the exact top eigenvector (ReLU kinks within the step can move it far)
        assert h["finite_difference_error"] == pytest.approx(abs(h["by_step"]["0.001"] / h["top_eigenvalue"] - 1))
        assert r["parameters"] == sum(p.data.size for p in nets[name].parameters())
        assert r["eval_images"] == 20 and r["recalibrated"] and r["loss_before_recalibration"] > 0
        assert json.loads((tmp_path / "landscape" / f"{name}.json").read_text()) == r  # written as it finished
        # the weights written are the trained ones
        np.testing.assert_array_equal(sn.load(tmp_path / "landscape" / f"{name}.npz")["fc.weight"],
                                      nets[name].fc.weight.data)
    # alpha = 0 is the seeded initialisation (its BN statistics re-estimated on other images), on the same
    # evaluation images
    initial = tiny_net(shortcut=None)
    batches = eval_batches(initial, 20, 8, None, seed=0)
    recalibrate_batch_norm(initial, eval_batches(initial, 20, 8, None, seed=1))
    assert [len(y) for _, y in batches] == [8, 8, 4]
    plain = dict(zip(saved["plain_tiny"]["interpolation"]["alpha"], saved["plain_tiny"]["interpolation"]["loss"]))
    assert plain[0.0] == evaluate(initial, batches)[0]
    for name in ("landscape_1d.png", "landscape_2d.png"):
        assert (tmp_path / name).stat().st_size > 0
    table = capsys.readouterr().out
    assert "plain_tiny" in table and "res_tiny" in table and "spread" in table


def test_landscape_cli_runs_a_zoo_net_and_loads_weights(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "landscape", "resnet20", "--steps", "1", "--batch-size", "2",
            "--eval-images", "4", "--points", "3", "--grid", "2", "--hessian-iterations", "1"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "landscape.json").read_text())["resnet20"]
    assert first["trained_steps"] == 1 and first["parameters"] == 269434
    # the written weights loaded back: no training, the same loss
    assert main(argv + ["--weights-dir", str(tmp_path / "landscape"), "--steps", "0"]) == 0
    second = json.loads((tmp_path / "landscape.json").read_text())["resnet20"]
    assert second["trained_steps"] == 0 and second["loss"] == first["loss"]
    assert main(["--out", str(tmp_path), "landscape", "resnet20", "--grid", "1"]) == 2
    assert "argument --grid: must be an int >= 2, got 1" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "landscape", "resnet20", "--weights-dir", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err

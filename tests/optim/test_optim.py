"""optim: SGD/Adam/AdamW step for step against torch, parameter groups, state_dict resume, schedulers."""
import copy

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet import nn, optim
from scratchnet.optim import lr_scheduler
from conftest import SGD_CONFIGS

SHAPES = [(3, 4), (4,), (2, 1, 3)]


def twin_params(seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    return ours, theirs


def run_side_by_side(make, tmake, steps=8, groups=None, seed=0):
    """Feed both optimizers the same gradients for `steps` steps; return both parameter lists."""
    ours, theirs = twin_params(seed)
    if groups is None:
        opt, topt = make(ours), tmake(theirs)
    else:
        opt = make([dict(g, params=[ours[i] for i in g["params"]]) for g in groups])
        topt = tmake([dict(g, params=[theirs[i] for i in g["params"]]) for g in groups])
    rng = np.random.default_rng(seed + 1)
    for _ in range(steps):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad, tp.grad = sn.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    return ours, theirs, opt, topt


def assert_params_equal(ours, theirs, tol=1e-12):
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=tol, atol=tol)



@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(config):
    ours, theirs, _, _ = run_side_by_side(lambda p: optim.SGD(p, **config), lambda p: torch.optim.SGD(p, **config))
    assert_params_equal(ours, theirs)


ADAM_CONFIGS = [
    dict(),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=1e-2, weight_decay=0.1, amsgrad=True, maximize=True),
]


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_and_adamw_match_torch(name, config):
    ours, theirs, _, _ = run_side_by_side(lambda p: getattr(optim, name)(p, **config),
                                          lambda p: getattr(torch.optim, name)(p, foreach=False, **config))
    assert_params_equal(ours, theirs)


def test_adamw_default_weight_decay_is_torchs():
    p = [nn.Parameter(np.ones(2))]
    assert optim.AdamW(p).param_groups[0]["weight_decay"] == 1e-2
    assert optim.Adam(p).param_groups[0]["weight_decay"] == 0


@pytest.mark.parametrize("make, tmake", [
    (lambda g: optim.SGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9)),
    (lambda g: optim.AdamW(g, lr=1e-2), lambda g: torch.optim.AdamW(g, lr=1e-2)),
])
def test_parameter_groups_match_torch(make, tmake):
    groups = [{"params": [0, 2], "lr": 0.01, "weight_decay": 0.5}, {"params": [1]}]
    ours, theirs, opt, topt = run_side_by_side(make, tmake, groups=groups)
    assert_params_equal(ours, theirs)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in topt.param_groups]


def test_params_without_grad_are_skipped_and_zero_grad_sets_none():
    ours, _ = twin_params()
    opt = optim.Adam(ours, lr=0.1)
    before = ours[1].numpy()
    ours[0].grad = sn.tensor(np.ones(ours[0].shape))
    opt.step()
    np.testing.assert_array_equal(ours[1].numpy(), before)
    assert ours[1] not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in ours)


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda p: optim.Adam(p, lr=0.1, weight_decay=0.1),
                                  lambda p: optim.AdamW(p, lr=0.1)])
def test_step_never_mutates_grad_arrays(make):
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.full(3, 2.0))
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)  # each leaf its own gradient, as torch
    opt = make([a, b])
    for _ in range(3):
        opt.step()
        np.testing.assert_array_equal(a.grad, np.ones(3))
    np.testing.assert_array_equal(a.numpy() == b.numpy(), [False] * 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda ps: optim.Adam(ps, lr=0.1)], ids=["sgd", "adam"])
def test_step_updates_parameters_in_place_as_torch(make, dtype):
    """As torch: the step writes into p.data (a holder of the array sees it) and bumps p's version, so a
    graph that saved the parameter before the step refuses to backward; a read-only array is replaced."""
    w = nn.Parameter(np.arange(1.0, 7.0, dtype=dtype).reshape(2, 3))
    frozen = nn.Parameter(np.ones(3, dtype=dtype))
    frozen.data.setflags(write=False)
    opt = make([w, frozen])
    held, version = w.data, w._version
    x = sn.tensor(np.ones((3, 4), dtype=dtype), requires_grad=True)  # so that w @ x saves w
    (w @ x).sum().backward()
    frozen.grad = sn.tensor(np.ones(3, dtype=dtype))
    stale = (w @ x).sum()  # saved w before the step
    opt.step()
    assert w.data is held and w._version == version + 1 and w.dtype == dtype
    assert not np.array_equal(held, np.arange(1.0, 7.0).reshape(2, 3))  # the holder saw the update
    assert frozen.data.dtype == dtype and (frozen.data < 1).all()  # a new array, updated
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*optimizer.step"):
        stale.backward()
    tw = torch.nn.Parameter(torch.arange(1.0, 7.0, dtype=torch.float64).reshape(2, 3))
    tstale = (tw @ torch.ones(3, 4, dtype=torch.float64, requires_grad=True)).sum()
    tstale.backward(retain_graph=True)
    torch.optim.SGD([tw], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # torch, the same
        tstale.backward()


def test_state_dict_layout_matches_torch():
    ours, theirs, opt, topt = run_side_by_side(lambda p: optim.Adam(p, amsgrad=True),
                                               lambda p: torch.optim.Adam(p, amsgrad=True), steps=2)
    state, tstate = opt.state_dict(), topt.state_dict()
    assert set(state) == set(tstate) == {"state", "param_groups"}
    assert sorted(state["state"]) == sorted(tstate["state"])
    assert set(state["state"][0]) == set(tstate["state"][0])
    assert state["param_groups"][0]["params"] == tstate["param_groups"][0]["params"]
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert state["param_groups"][0][key] == tstate["param_groups"][0][key]
    np.testing.assert_allclose(state["state"][0]["exp_avg"], tstate["state"][0]["exp_avg"].numpy(), rtol=1e-12)
    assert state["state"][0]["step"] == 2


def _train(model, opt, scheduler, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) * (model(x) - y)).mean()
        loss.backward()
        opt.step()
        scheduler.step()


@pytest.mark.parametrize("make_opt", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                      lambda p: optim.Adam(p, lr=0.05, amsgrad=True),
                                      lambda p: optim.AdamW(p, lr=0.05)])
def test_resume_from_state_dicts_is_bit_identical(make_opt, tmp_path):
    rng = np.random.default_rng(0)
    x, y = sn.tensor(rng.standard_normal((8, 3))), sn.tensor(rng.standard_normal((8, 2)))

    def fresh():
        sn.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        opt = make_opt(model.parameters())
        sched = lr_scheduler.with_warmup(lr_scheduler.CosineAnnealingLR(opt, T_max=5), warmup_epochs=2)
        return model, opt, sched

    straight = fresh()
    _train(*straight, x, y, steps=7)

    first = fresh()
    _train(*first, x, y, steps=3)
    sn.save(first[0], tmp_path / "model.npz")
    opt_state, sched_state = copy.deepcopy(first[1].state_dict()), copy.deepcopy(first[2].state_dict())
    del first
    resumed = fresh()
    resumed[0].load_state_dict(sn.load(tmp_path / "model.npz"))
    resumed[1].load_state_dict(opt_state)
    resumed[2].load_state_dict(sched_state)
    _train(*resumed, x, y, steps=4)

    for (k, a), (_, b) in zip(straight[0].state_dict().items(), resumed[0].state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert straight[2].get_last_lr() == resumed[2].get_last_lr()


def test_load_state_dict_moves_state_to_the_parameters_dtype():
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.Adam([p])
    p.grad = sn.tensor(np.ones(3, dtype=np.float32))
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"].astype(np.float64)
    opt.load_state_dict(saved)
    assert opt.state[p]["exp_avg"].dtype == np.float32


def test_optimizer_errors_are_clear():
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="invalid learning rate: -1"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid beta parameter at index 1"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD(p, lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        optim.SGD([{"params": [p]}, {"params": [nn.Parameter(np.ones(1))]}], lr=0.1).load_state_dict(opt.state_dict())


# --------------------------------------------------------------------------- schedulers vs torch


def lr_sequences(make, tmake, epochs=25):
    lrs = (0.1, 0.03)
    opt = optim.SGD([{"params": [nn.Parameter(np.ones(1))], "lr": lr} for lr in lrs])
    topt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(1))], "lr": lr} for lr in lrs])
    scheduler, tscheduler = make(opt), tmake(topt)
    ours, theirs = [scheduler.get_last_lr()], [tscheduler.get_last_lr()]
    for _ in range(epochs):
        opt.step()
        topt.step()
        scheduler.step()
        tscheduler.step()
        ours.append(scheduler.get_last_lr())
        theirs.append(tscheduler.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == ours[-1]
    return ours, theirs


SCHEDULERS = [
    ("StepLR", lambda o, L: L.StepLR(o, step_size=4, gamma=0.5)),
    ("MultiStepLR", lambda o, L: L.MultiStepLR(o, milestones=[3, 7, 7, 12], gamma=0.3)),
    ("CosineAnnealingLR", lambda o, L: L.CosineAnnealingLR(o, T_max=8)),
    ("CosineAnnealingLR-eta_min", lambda o, L: L.CosineAnnealingLR(o, T_max=6, eta_min=1e-3)),
    ("LinearLR", lambda o, L: L.LinearLR(o, start_factor=0.1, total_iters=6)),
    ("LinearLR-decay", lambda o, L: L.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=10)),
    ("Warmup+Cosine", lambda o, L: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, total_iters=4),
                                                      L.CosineAnnealingLR(o, T_max=15)], milestones=[4])),
    ("Warmup+MultiStep", lambda o, L: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.5, total_iters=3),
                                                         L.MultiStepLR(o, [5, 10])], milestones=[3])),
]


@pytest.mark.parametrize("name, make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_lr_sequence_equals_torch(name, make):
    ours, theirs = lr_sequences(lambda o: make(o, lr_scheduler), lambda o: make(o, torch.optim.lr_scheduler))
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=0)


def test_with_warmup_equals_torchs_sequential_linear_warmup():
    ours, theirs = lr_sequences(
        lambda o: lr_scheduler.with_warmup(lr_scheduler.CosineAnnealingLR(o, T_max=10), warmup_epochs=3),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o, [torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)], milestones=[3]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name, make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_resumes_from_state_dict(name, make):
    def build():
        opt = optim.SGD([nn.Parameter(np.ones(1))], lr=0.1)
        return opt, make(opt, lr_scheduler)

    opt, scheduler = build()
    for _ in range(5):
        scheduler.step()
    saved_opt, saved = opt.state_dict(), scheduler.state_dict()
    expected = []
    for _ in range(6):
        scheduler.step()
        expected.append(scheduler.get_last_lr())
    opt2, scheduler2 = build()
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved)
    got = []
    for _ in range(6):
        scheduler2.step()
        got.append(scheduler2.get_last_lr())
    assert got == expected


def test_scheduler_errors_are_clear():
    opt = optim.SGD([nn.Parameter(np.ones(1))], lr=0.1)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="2 schedulers need 1 milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2), lr_scheduler.StepLR(opt, 3)], milestones=[])


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.AdamW(p)])
def test_float32_parameters_stay_float32(make):
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = make([p])
    for _ in range(2):
        p.grad = sn.tensor(np.ones(3, dtype=np.float32))
        opt.step()
    assert p.dtype == np.float32

"""Optimizers and schedules refuse what torch refuses (parameter groups, zero periods, state dicts that are
not dicts), and state from another model is refused instead of silently reshaping a parameter."""
import warnings

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet import nn, optim
from scratchnet.optim import lr_scheduler


def both(make, tmake):
    """(our exception, torch's exception or warning message) for the same bad call."""
    with pytest.raises(Exception) as ours:
        make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tmake()
        except Exception as exc:  # noqa: BLE001 (whatever torch raises is the reference)
            return ours.value, exc
    return ours.value, caught[0].message


def test_param_groups_are_checked_as_torch_checks_them():
    p, q = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    tp, tq = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    # a misspelled 'params' would train nothing: torch and we raise KeyError naming it
    ours, theirs = both(lambda: optim.SGD([{"parms": [p]}], lr=0.1), lambda: torch.optim.SGD([{"parms": [tp]}], lr=0.1))
    assert type(ours) is type(theirs) is KeyError and "'params'" in str(ours) and "'parms'" in str(ours)
    ours, theirs = both(lambda: optim.SGD([{"params": [p, 3]}], lr=0.1),
                        lambda: torch.optim.SGD([{"params": [tp, 3]}], lr=0.1))
    assert type(ours) is type(theirs) is TypeError
    assert str(theirs).startswith("optimizer can only optimize Tensors") and str(ours) == str(theirs).replace(
        "int", "builtins.int")
    ours, theirs = both(lambda: optim.SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1),
                        lambda: torch.optim.SGD([{"params": [tp]}, {"params": [tq, tp]}], lr=0.1))
    assert type(ours) is type(theirs) is ValueError and str(theirs) in str(ours)
    ours, theirs = both(lambda: optim.SGD([{"params": {p, q}}], lr=0.1),
                        lambda: torch.optim.SGD([{"params": {tp, tq}}], lr=0.1))
    assert type(ours) is type(theirs) is TypeError and str(ours) == str(theirs)
    # torch refuses a set in a group but takes a bare set (it becomes one group, in an order that changes
    # from run to run, and with it the state dict's indices): refused here too, with the same words
    with pytest.raises(TypeError, match="organized in ordered collections"):
        optim.SGD({p, q}, lr=0.1)
    ours, theirs = both(lambda: optim.SGD([p], lr=0.1).add_param_group([q]),
                        lambda: torch.optim.SGD([tp], lr=0.1).add_param_group([tq]))
    assert type(ours) is type(theirs) is TypeError and str(ours) == str(theirs)
    # the same tensor twice in one group: torch warns that this "will cause an error"; it is one here
    ours, theirs = both(lambda: optim.SGD([p, q, p], lr=0.1), lambda: torch.optim.SGD([tp, tq, tp], lr=0.1))
    assert "duplicate parameters" in str(theirs) and "in future, this will cause an error" in str(theirs)
    assert type(ours) is ValueError and "duplicate parameters" in str(ours)


def test_load_state_dict_of_a_non_mapping_is_a_type_error():
    opt = optim.SGD([nn.Parameter(np.ones(2))], lr=0.1)
    scheduler = lr_scheduler.StepLR(opt, 2)
    for bad in ("runs/x/checkpoint.npz", [1, 2], None):
        with pytest.raises(TypeError, match="expects the dict that state_dict"):
            opt.load_state_dict(bad)
        with pytest.raises(TypeError, match="expects the dict that state_dict"):
            scheduler.load_state_dict(bad)
    with pytest.raises(TypeError, match="to load a file, pass sn.load"):
        opt.load_state_dict("runs/x/checkpoint.npz")
    with pytest.raises(ValueError, match="lacks state and param_groups"):
        opt.load_state_dict({"lr": 0.1})


def stepped(model, make):
    optimizer = make(list(model.parameters()))
    for p in model.parameters():
        p.grad = sn.tensor(np.ones(p.shape, p.dtype))
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)])
def test_optimizer_state_of_another_model_is_refused_at_load(make):
    """Two models with the same number of parameters, other shapes: torch loads the state and fails (or
    worse) at the next step; the state is refused when it is loaded, naming the parameter."""
    a, b = nn.Linear(3, 4), nn.Linear(4, 3)
    state = stepped(a, make).state_dict()
    target = make(list(b.parameters()))
    with pytest.raises(ValueError, match=r"comes from another model: parameter 0 \(3, 4\) gets \w+ of shape \(4, 3\)"):
        target.load_state_dict(state)
    assert target.state == {}  # nothing loaded
    tstate = stepped_torch(torch.nn.Linear(3, 4)).state_dict()
    tb = torch.nn.Linear(4, 3)
    topt = torch.optim.SGD(tb.parameters(), lr=0.1, momentum=0.9)
    topt.load_state_dict(tstate)  # torch takes it ...
    for p in tb.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError):  # ... and fails at the step
        topt.step()


def stepped_torch(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)])
def test_state_that_would_reshape_a_parameter_is_refused_at_step(make):
    """State put in place by hand that broadcasts against the gradient: the step refuses it instead of
    replacing the (10,) parameter by a (5, 10) one."""
    p = nn.Parameter(np.ones(10))
    optimizer = make([p])
    p.grad = sn.tensor(np.ones(p.shape, p.dtype))
    optimizer.step()
    for key, value in optimizer.state[p].items():
        if getattr(value, "ndim", 0):
            optimizer.state[p][key] = np.ones((5, 10))
    p.grad = sn.tensor(np.ones(p.shape, p.dtype))
    with pytest.raises(RuntimeError, match=r"parameter of shape \(10,\) has shape \(5, 10\)"):
        optimizer.step()
    assert p.shape == (10,)


@pytest.mark.parametrize("name, period", [("StepLR", "step_size"), ("CosineAnnealingLR", "T_max")])
def test_zero_periods_are_refused(name, period):
    """torch fails on a zero period with a ZeroDivisionError at its first step; here it is refused when the
    schedule is made, in the words of torch's own check of a period (CosineAnnealingWarmRestarts' T_0)."""
    for value in (0, -2):
        with pytest.raises(ValueError, match=f"Expected positive integer {period}, but got {value}"):
            getattr(lr_scheduler, name)(optim.SGD([nn.Parameter(np.ones(1))], lr=0.1), **{period: value})
    topt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ZeroDivisionError):
        scheduler = getattr(torch.optim.lr_scheduler, name)(topt, **{period: 0})
        topt.step()
        scheduler.step()
    with pytest.raises(ValueError, match="Expected positive integer T_0, but got 0"):
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=0)

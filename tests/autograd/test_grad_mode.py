"""Grad mode as torch has it: sn.no_grad, sn.enable_grad and sn.set_grad_enabled as context managers, as
decorators and (set_grad_enabled) as a plain call, nested, and restored by an exception. Each scenario runs on
both frameworks and must observe the same modes and the same requires_grad flags."""
import pytest
import torch

import scratchnet as sn


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """A scenario that fails half-way must not leave either framework with grad mode off."""
    yield
    torch.set_grad_enabled(True)
    sn.set_grad_enabled(True)


def enable_grad_inside_no_grad(fw, seen):
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    with fw.no_grad():
        seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
        with fw.enable_grad():
            seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
        seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
    seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))


def decorators(fw, seen):
    x = fw.tensor([1.0], requires_grad=True)

    @fw.enable_grad()
    def recorded(t):
        return t * 2

    @fw.no_grad()
    def unrecorded(t):
        return t * 2

    @fw.set_grad_enabled(False)
    def also_unrecorded(t):
        return t * 2

    seen.append(fw.is_grad_enabled())  # decorating changes nothing by itself
    with fw.no_grad():
        seen.append(recorded(x).requires_grad)
        seen.append(fw.is_grad_enabled())
    seen += [unrecorded(x).requires_grad, also_unrecorded(x).requires_grad, fw.is_grad_enabled()]


def set_grad_enabled_as_a_call(fw, seen):
    x = fw.tensor([1.0], requires_grad=True)
    fw.set_grad_enabled(False)  # a statement: the mode changes here and stays changed
    seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
    fw.set_grad_enabled(True)
    seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))


def set_grad_enabled_as_a_context(fw, seen):
    x = fw.tensor([1.0], requires_grad=True)
    for training in (False, True):
        with fw.set_grad_enabled(training):
            seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
        seen.append(fw.is_grad_enabled())
    with fw.no_grad():
        with fw.set_grad_enabled(True):
            seen.append((fw.is_grad_enabled(), (x * 2).requires_grad))
        seen.append(fw.is_grad_enabled())  # back to the no_grad around it


def an_exception_restores_the_mode(fw, seen):
    for context in (fw.no_grad, fw.enable_grad, lambda: fw.set_grad_enabled(False)):
        with fw.no_grad():
            try:
                with context():
                    raise KeyError("inside")
            except KeyError:
                pass
            seen.append(fw.is_grad_enabled())
        seen.append(fw.is_grad_enabled())


def a_no_grad_object_acts_only_when_entered(fw, seen):
    context = fw.no_grad()
    seen.append(fw.is_grad_enabled())
    with context:
        seen.append(fw.is_grad_enabled())
    seen.append(fw.is_grad_enabled())


def backward_of_a_graph_built_in_enable_grad(fw, seen):
    x = fw.tensor([1.0, 2.0], requires_grad=True)
    with fw.no_grad():
        with fw.enable_grad():
            y = (x * x).sum()
        y.backward()  # backward runs whatever the mode
    grad = x.grad.numpy() if hasattr(x.grad, "numpy") else x.grad  # a Tensor, or a raw array
    seen.append(grad.tolist())


SCENARIOS = [enable_grad_inside_no_grad, decorators, set_grad_enabled_as_a_call, set_grad_enabled_as_a_context,
             an_exception_restores_the_mode, a_no_grad_object_acts_only_when_entered,
             backward_of_a_graph_built_in_enable_grad]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_grad_mode_as_torch(scenario):
    ours, theirs = [], []
    scenario(torch, theirs)
    scenario(sn, ours)
    assert ours == theirs
    assert sn.is_grad_enabled() and torch.is_grad_enabled()  # every scenario ends where it started

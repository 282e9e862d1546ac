"""`.grad`, backward(), sn.autograd.grad and grad mode, each side by side with what torch does."""
import threading

import numpy as np
import pytest
import torch

import scratchnet as sn


def pair(values, requires_grad=True):
    """The same float64 leaf in scratchnet and in torch."""
    a = np.asarray(values, dtype=np.float64)
    return sn.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


def same(ours, theirs):
    """Both None, or equal Tensors (ours a Tensor, never a raw array)."""
    if theirs is None:
        assert ours is None
        return
    assert isinstance(ours, sn.Tensor)
    np.testing.assert_array_equal(ours.numpy(), theirs.detach().numpy())


# --------------------------------------------------------------------------- .grad


def test_grad_is_none_before_backward_then_a_tensor():
    x, tx = pair([1.0, 2.0])
    same(x.grad, tx.grad)
    (x * x).sum().backward()
    (tx * tx).sum().backward()
    same(x.grad, tx.grad)
    assert not x.grad.requires_grad and x.grad.dtype == x.dtype


def test_each_leaf_gets_its_own_gradient_array():
    a, b = sn.tensor([1.0, 2.0], requires_grad=True), sn.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()  # Add hands the same gradient to both
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[0] = 7.0
    assert b.grad.numpy().tolist() == [1.0, 1.0]


def test_a_gradient_that_is_a_view_is_copied():
    x = sn.tensor(np.ones((2, 3)), requires_grad=True)
    w = sn.tensor(np.ones(6), requires_grad=True)
    (x.reshape(6) + w).sum().backward()  # x's gradient is w's, reshaped: a view
    assert not np.shares_memory(x.grad.data, w.grad.data)


def test_gradients_that_are_views_of_one_array_get_their_own():
    """cat's backward hands each input a view of the same gradient array."""
    a, b = sn.tensor(np.ones(2), requires_grad=True), sn.tensor(np.ones(3), requires_grad=True)
    (sn.cat([a, b]) * sn.tensor(np.arange(5.0))).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    assert a.grad.numpy().tolist() == [0.0, 1.0] and b.grad.numpy().tolist() == [2.0, 3.0, 4.0]


def test_the_seed_never_aliases_the_callers_array():
    x = sn.tensor([1.0, 2.0], requires_grad=True)
    seed = np.ones(2)
    x.backward(seed)
    seed[0] = 7.0
    assert x.grad.numpy().tolist() == [1.0, 1.0]
    y = sn.tensor([1.0, 2.0], requires_grad=True)
    seed_tensor = sn.tensor([1.0, 1.0])
    y.backward(seed_tensor)
    assert not np.shares_memory(y.grad.data, seed_tensor.data)


def test_a_seed_passed_on_uncopied_stays_the_callers():
    """The seed reaches backwards as the caller's own array (no copy), through Add (which returns it to both
    inputs) to two leaves and a retained output: none of them gets its memory, and accumulating a second
    backward into their .grad leaves the caller's array as it was."""
    a, b = sn.tensor([1.0, 2.0], requires_grad=True), sn.tensor([3.0, 4.0], requires_grad=True)
    seed = np.array([1.0, 2.0], dtype=a.dtype)  # the tensors' dtype: no conversion copies it
    for _ in range(2):
        y = a + b
        y.retain_grad()
        y.backward(seed)
        for t in (a, b, y):
            assert not np.shares_memory(t.grad.data, seed)
    assert seed.tolist() == [1.0, 2.0]
    assert a.grad.numpy().tolist() == b.grad.numpy().tolist() == [2.0, 4.0]
    (g,) = sn.autograd.grad(a * 1.0, a, grad_outputs=seed)
    assert not np.shares_memory(g.data, seed) and g.numpy().tolist() == [1.0, 2.0]


def test_a_strided_seed_is_compacted():
    x = sn.tensor(np.ones((2, 3)), requires_grad=True)
    seed = np.arange(12.0, dtype=x.dtype).reshape(2, 6)[:, ::2]
    (x * 2.0).backward(seed)
    assert x.grad.numpy().tolist() == (2 * seed).tolist()


def test_accumulation_is_in_place_as_torch():
    x, tx = pair([1.0, 2.0])
    (x * 2).sum().backward()
    (tx * 2).sum().backward()
    held, theirs = x.grad, tx.grad
    (x * 3).sum().backward()
    (tx * 3).sum().backward()
    assert (x.grad is held) == (tx.grad is theirs) is True  # the same tensor, now holding the sum
    same(held, theirs)
    assert held._version == theirs._version == 1


class _Returned(sn.FunctionHook):
    """Notes what each backward returned and received, by id only (holding the arrays would make them shared)."""

    def __init__(self, keep=False):
        self.keep, self.returned, self.received, self.kept = keep, {}, {}, []

    def backward_preprocess(self, function, grad_outputs):
        self.received[id(function)] = [id(g) for g in grad_outputs]

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        self.returned[id(function)] = [id(g) for g in grad_inputs if g is not None]
        if self.keep:  # as a user's hook may: the arrays, with a copy of their values now
            self.kept += [(g, g.copy()) for g in grad_inputs if g is not None]


def test_a_join_sums_into_the_first_gradient_when_nothing_else_holds_it(rng):
    """h feeds two products: their gradients meet at h's creator. The sum is made in the first one to arrive
    (as torch's engine does) when no one else holds it; an array a hook kept is never written: the sum is a
    new array then. Add's and Sub's gradients, one array sent to two inputs at once, are shared: a and b sum
    theirs out of place. Torch's numbers always."""
    x0 = rng.standard_normal((3, 4))
    for keep in (False, True):
        x = sn.tensor(x0, requires_grad=True)
        h = x * 2
        a, b = h * 3, h * h
        with _Returned(keep) as seen:
            ((a + b) * (a - b)).sum().backward()
        twin = torch.tensor(x0, requires_grad=True)
        th = twin * 2
        ta, tb = th * 3, th * th
        ((ta + tb) * (ta - tb)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), twin.grad.numpy(), rtol=1e-14)
        from_products = {i for fn in (a.creator, b.creator) for i in seen.returned[id(fn)]}
        assert (seen.received[id(h.creator)][0] in from_products) != keep  # summed in place unless kept
        for array, value in seen.kept:
            np.testing.assert_array_equal(array, value)


def test_grad_assignment_is_checked_as_torch():
    x, tx = pair([1.0, 2.0])
    x.grad = sn.tensor(np.array([1.0, 1.0]))
    with pytest.raises(TypeError, match="expected to be a Tensor or None but got grad of type numpy.ndarray"):
        x.grad = np.ones(2)
    with pytest.raises(RuntimeError, match=r"shape \(3,\) to a tensor of shape \(2,\)"):
        x.grad = sn.tensor(np.ones(3))
    with pytest.raises(RuntimeError, match="dtype float32 to a tensor with dtype float64"):
        x.grad = sn.tensor(np.ones(2, dtype=np.float32))
    for bad in (np.ones(2), torch.ones(3), torch.ones(2, dtype=torch.float32)):
        with pytest.raises((TypeError, RuntimeError)):
            tx.grad = bad
    x.grad = None
    assert x.grad is None


def test_zero_grad_keeps_the_tensor_with_set_to_none_false():
    layer, twin = sn.nn.Linear(2, 2).double(), torch.nn.Linear(2, 2).double()
    for module, lib in ((layer, sn), (twin, torch)):
        module(lib.tensor(np.ones((1, 2)))).sum().backward()
    held, theirs = layer.weight.grad, twin.weight.grad
    layer.zero_grad(set_to_none=False)
    twin.zero_grad(set_to_none=False)
    assert layer.weight.grad is held and twin.weight.grad is theirs
    same(held, theirs)
    layer.zero_grad()
    twin.zero_grad()
    same(layer.weight.grad, twin.weight.grad)


def test_retain_grad_on_non_leaves():
    for lib in (sn, torch):
        x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        h, plain = x * 2, x * 4
        h.retain_grad()
        assert h.retains_grad and not plain.retains_grad and not x.retains_grad
        (h * h + plain).sum().backward()
        assert plain.grad is None if lib is sn else True  # torch warns on reading a non-leaf's .grad
        np.testing.assert_array_equal(np.asarray(h.grad.detach() if lib is torch else h.grad), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="can't retain_grad on Tensor that has requires_grad=False"):
        sn.tensor([1.0]).retain_grad()


def test_tensor_hooks_receive_and_return_tensors():
    x, tx = pair([1.0, -2.0])
    seen = []
    for t, lib in ((x, sn), (tx, torch)):
        t.register_hook(lambda g: seen.append(type(g)) or g * 10)
        (t * 3).sum().backward()
    assert seen == [sn.Tensor, torch.Tensor]
    same(x.grad, tx.grad)
    y = sn.tensor([1.0], requires_grad=True)
    y.register_hook(lambda g: g.numpy())
    with pytest.raises(TypeError, match="returned a ndarray; a tensor hook returns a Tensor"):
        (y * 2).sum().backward()


def test_post_accumulate_grad_hook_sees_the_accumulated_leaf():
    for lib in (sn, torch):
        x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        seen = []
        handle = x.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.detach().numpy().copy()))
        (x * 2 + x * x).sum().backward()  # two uses: the hook fires once, after both are added
        (x * 3).sum().backward()
        handle.remove()
        (x * 3).sum().backward()
        np.testing.assert_array_equal(seen, [[4.0, 6.0], [7.0, 9.0]])
        with pytest.raises(RuntimeError, match="post accumulate grad hooks cannot be registered on non-leaf"):
            (x * 2).register_post_accumulate_grad_hook(print)


def test_post_accumulate_hooks_fire_while_backward_runs():
    """Data parallelism reduces a parameter's gradient while the rest of backward runs: the hook of a
    layer near the output fires before the first layer's backward."""
    model = sn.nn.Sequential(sn.nn.Linear(3, 3), sn.nn.ReLU(), sn.nn.Linear(3, 1)).double()
    order = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, name=name: order.append(name))

    class Watch(sn.FunctionHook):
        def backward_preprocess(self, function, grad_outputs):
            order.append(function.name)

    with Watch():
        model(sn.tensor(np.ones((2, 3)))).sum().backward()
    assert order.index("2.weight") < order.index("ReLU") < order.index("0.weight")
    assert sorted(n for n in order if "." in n) == sorted(name for name, _ in model.named_parameters())


# --------------------------------------------------------------------------- backward() and autograd.grad


def test_autograd_grad_returns_a_tuple_and_leaves_grad_alone():
    x, tx = pair([1.0, 2.0])
    for t, lib in ((x, sn), (tx, torch)):
        h = t * 2
        h.retain_grad()
        result = lib.autograd.grad((h * h).sum(), t)
        assert isinstance(result, tuple) and len(result) == 1
        same(t.grad, None)
        np.testing.assert_array_equal(np.asarray(h.grad.detach() if lib is torch else h.grad), [4.0, 8.0])
    same(sn.autograd.grad((x * x).sum(), [x])[0], torch.autograd.grad((tx * tx).sum(), [tx])[0])


def test_autograd_grad_of_non_leaves_and_several_outputs():
    x, tx = pair([1.0, 2.0, 3.0])
    results = []
    for t, lib in ((x, sn), (tx, torch)):
        h = t * t
        y1, y2 = (h * 3).sum(), (h * t).sum()
        results.append(lib.autograd.grad([y1, y2], [h, t]))
    for ours, theirs in zip(*results):
        same(ours, theirs)


def test_unused_inputs_and_inputs_that_do_not_require_grad():
    x, y = sn.tensor([1.0], requires_grad=True), sn.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="index 1 .* appears to not have been used in the graph. Set allow_unused"):
        sn.autograd.grad((x * 2).sum(), [x, y])
    gx, gy = sn.autograd.grad((x * 2).sum(), [x, y], allow_unused=True)
    assert gy is None and gx.numpy().tolist() == [2.0]
    with pytest.raises(RuntimeError, match="One of the differentiated Tensors does not require grad"):
        sn.autograd.grad((x * 2).sum(), [sn.tensor([1.0])])


def test_backward_inputs_restricts_accumulation():
    results = []
    for lib in (sn, torch):
        x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        w = lib.tensor(np.array([3.0, 4.0]), requires_grad=True)
        h = x * w
        (h * h).sum().backward(inputs=[w, h])
        results.append((x.grad, w.grad, h.grad))
    for ours, theirs in zip(*results):
        same(ours, theirs)
    with pytest.raises(RuntimeError, match="'inputs' argument to backward\\(\\) cannot be empty"):
        sn.tensor([1.0], requires_grad=True).sum().backward(inputs=[])


def test_backward_only_runs_what_the_inputs_need():
    x = sn.tensor([1.0, 2.0], requires_grad=True)
    w = sn.tensor([3.0, 4.0], requires_grad=True)
    ran = []

    class Watch(sn.FunctionHook):
        def backward_preprocess(self, function, grad_outputs):
            ran.append(function.name)

    loss = (x.exp() + w * 2).sum()
    with Watch():
        sn.autograd.grad(loss, [w])
    assert "Exp" not in ran and ran == ["Sum", "Add", "Mul"]


def test_retain_graph_defaults_to_create_graph():
    for lib in (sn, torch):
        x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        y = (x ** 3).sum()
        (g,) = lib.autograd.grad(y, x, create_graph=True)
        y.backward()  # the graph was kept by create_graph
        with pytest.raises(RuntimeError, match="(?i)backward through the graph a second time"):
            y.backward()


def test_create_graph_gives_gradients_with_a_graph():
    x, tx = pair([1.0, 2.0])
    grads = []
    for t, lib in ((x, sn), (tx, torch)):
        (g,) = lib.autograd.grad((t ** 3).sum(), t, create_graph=True)
        assert g.requires_grad
        g.sum().backward()
        grads.append((g, t.grad))
    same(grads[0][0], grads[1][0])
    same(grads[0][1], grads[1][1])  # 6x


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")  # torch's cycle note
def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x, tx = pair([1.0, 2.0])
    for t in (x, tx):
        (t ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad and x.grad.creator is not None
    same(x.grad, tx.grad)
    (hx,) = sn.autograd.grad(x.grad.sum(), x)
    (htx,) = torch.autograd.grad(tx.grad.sum(), tx)
    same(hx, htx)


def test_sn_autograd_is_a_namespace():
    assert sn.autograd.grad is not None and sn.autograd.backward is sn.backward
    assert sn.autograd.no_grad is sn.no_grad


# --------------------------------------------------------------------------- grad mode and requires_grad


def test_grad_mode_is_per_thread():
    seen = {}
    for lib in (sn, torch):
        with lib.no_grad():
            worker = threading.Thread(target=lambda lib=lib: seen.__setitem__(lib, lib.is_grad_enabled()))
            worker.start()
            worker.join()
            assert not lib.is_grad_enabled()
    assert seen == {sn: True, torch: True}


def test_set_grad_enabled_as_call_context_and_decorator():
    for lib in (sn, torch):
        lib.set_grad_enabled(False)
        assert not lib.is_grad_enabled()
        lib.set_grad_enabled(True)
        with lib.set_grad_enabled(False):
            assert not lib.is_grad_enabled()
            with lib.enable_grad():
                assert lib.is_grad_enabled()
            assert not lib.is_grad_enabled()
        assert lib.is_grad_enabled()

        @lib.set_grad_enabled(False)
        def off():
            return lib.is_grad_enabled()

        @lib.no_grad
        def bare():
            return lib.is_grad_enabled()

        assert lib.is_grad_enabled() and not off() and not bare() and lib.is_grad_enabled()


def test_requires_grad_only_on_floating_tensors_and_leaves():
    ints = sn.tensor([1, 2])
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        ints.requires_grad = True
    with pytest.raises(RuntimeError):  # torch raises as well (its only error type)
        torch.tensor([1, 2]).requires_grad = True
    assert not ints.requires_grad
    x = sn.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        (x * 2).requires_grad = False
    x.requires_grad = False
    assert not x.requires_grad

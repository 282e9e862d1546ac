"""Write tests/fixtures/deform_reference.npz: torchvision.ops.deform_conv2d's numbers for the sweep the tests check.

    $SCRATCHNET_TORCH_PYTHON tools/make_deform_reference.py      # needs torch + torchvision (CPU)

The test environment's torch has no working torchvision, so torchvision's output and its five
gradients (input, offset, mask, weight, bias) are computed here, in float64, and stored with the
inputs that produced them (a seeded generator; the inputs are stored too, so the test never has to
regenerate them). Each case sets the geometry (stride, padding, dilation differing per axis, groups,
offset groups, non-square inputs and kernels, with and without mask and bias) and the kind of offsets:

    normal    Gaussian offsets of the given scale (large scales push samples outside the image)
    integer   whole-pixel offsets: every sample lands on an exact integer position (bilinear kinks)
    edges     offsets that put samples exactly on -1.5, -1, -0.5, 0, H-1, H-0.5, H, H+0.5 (and the same in x):
              the borders of torchvision's rule (a sample counts when -1 < y < H and -1 < x < W)
    mixed     half the taps integer, half Gaussian

The case list is stored in the file as JSON (key "cases"), so the tests read the sweep from the fixture.
"""
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "deform_reference.npz"

# name, (N, C, H, W), C_out, kernel, stride, padding, dilation, groups, offset groups, mask, bias, offsets, scale
CASES = [
    ("basic", (2, 4, 6, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, True, "normal", 1.5),
    ("mask", (2, 4, 6, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, "normal", 1.5),
    ("anisotropic", (2, 4, 7, 9), 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, 2, True, True, "normal", 1.0),
    ("offset_groups4", (1, 8, 5, 6), 4, (3, 3), (1, 1), (2, 1), (2, 1), 2, 4, True, False, "normal", 1.0),
    ("offset_groups4_nomask", (2, 4, 6, 5), 2, (2, 3), (1, 2), (0, 1), (1, 1), 1, 4, False, True, "normal", 0.7),
    ("outside", (2, 2, 5, 4), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, "normal", 6.0),
    ("integer", (2, 3, 5, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, "integer", 3.0),
    ("integer_grouped", (1, 4, 8, 7), 4, (3, 3), (2, 1), (2, 2), (2, 1), 2, 2, False, False, "integer", 3.0),
    ("edges", (2, 2, 5, 6), 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, "edges", 0.0),
    ("edges_grouped", (1, 4, 4, 5), 4, (2, 2), (1, 2), (1, 1), (1, 1), 2, 2, True, False, "edges", 0.0),
    ("mixed_tall_kernel", (2, 2, 9, 5), 3, (5, 1), (3, 1), (2, 0), (1, 1), 1, 1, True, True, "mixed", 2.0),
    ("one_by_one", (2, 3, 4, 5), 2, (1, 1), (1, 1), (0, 0), (1, 1), 1, 1, True, True, "normal", 1.0),
    ("empty_batch", (0, 4, 6, 5), 2, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2, True, True, "normal", 1.0),
]

EDGE_TARGETS = (-1.5, -1.0, -0.5, 0.0)  # and size - 1, size - 0.5, size, size + 0.5


def out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def make_offsets(rng, kind, scale, n, groups, kernel, stride, padding, dilation, hw, out_hw):
    """(N, 2 * groups * kh * kw, oh, ow) offsets of the given kind, as (dy, dx) per tap."""
    kh, kw = kernel
    shape, channels = (n, groups, kh * kw, 2) + tuple(out_hw), (n, 2 * groups * kh * kw) + tuple(out_hw)
    if kind == "normal":
        return (scale * rng.standard_normal(shape)).reshape(channels)
    integer = rng.integers(-int(scale), int(scale) + 1, shape).astype(np.float64)
    if kind == "integer":
        return integer.reshape(channels)
    if kind == "mixed":
        normal = scale * rng.standard_normal(shape)
        return np.where(rng.random(shape[:3] + (1, 1, 1)) < 0.5, integer, normal).reshape(channels)
    assert kind == "edges"
    taps = np.arange(kh * kw)
    base = ((taps // kw * dilation[0])[:, None, None] + (np.arange(out_hw[0]) * stride[0] - padding[0])[:, None],
            (taps % kw * dilation[1])[:, None, None] + (np.arange(out_hw[1]) * stride[1] - padding[1])[None, :])
    offsets = np.empty(shape)
    for axis in range(2):  # where each tap samples without an offset, (taps, oh, 1) in y and (taps, 1, ow) in x
        size = hw[axis]
        targets = np.array(EDGE_TARGETS + (size - 1, size - 0.5, size, size + 0.5))
        offsets[:, :, :, axis] = rng.choice(targets, shape[:3] + tuple(out_hw)) - base[axis]
    return offsets.reshape(channels)


def main():
    import torch
    from torchvision.ops import deform_conv2d

    rng = np.random.default_rng(19)
    arrays, cases = {}, []
    for name, x_shape, c_out, kernel, stride, padding, dilation, groups, offset_groups, use_mask, use_bias, kind, \
            scale in CASES:
        n, c, h, w = x_shape
        out_hw = tuple(out_size((h, w)[a], kernel[a], stride[a], padding[a], dilation[a]) for a in range(2))
        inputs = dict(
            x=rng.standard_normal(x_shape),
            offset=make_offsets(rng, kind, scale, n, offset_groups, kernel, stride, padding, dilation, (h, w),
                                out_hw),
            weight=rng.standard_normal((c_out, c // groups) + tuple(kernel)))
        if use_mask:
            inputs["mask"] = rng.uniform(-0.5, 1.5, (n, offset_groups * kernel[0] * kernel[1]) + out_hw)
        if use_bias:
            inputs["bias"] = rng.standard_normal(c_out)
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
        y = deform_conv2d(tensors["x"], tensors["offset"], tensors["weight"], tensors.get("bias"), stride=stride,
                          padding=padding, dilation=dilation, mask=tensors.get("mask"))
        gy = rng.standard_normal(tuple(y.shape))
        y.backward(torch.tensor(gy))
        for key, value in inputs.items():
            arrays[f"{name}__{key}"] = value
            arrays[f"{name}__grad_{key}"] = tensors[key].grad.numpy()
        arrays[f"{name}__y"] = y.detach().numpy()
        arrays[f"{name}__gy"] = gy
        cases.append(dict(name=name, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          offset_groups=offset_groups, mask=use_mask, bias=use_bias, offsets=kind))
    arrays["cases"] = np.array(json.dumps(cases))
    arrays["versions"] = np.array(json.dumps(dict(torch=torch.__version__,
                                                  torchvision=__import__("torchvision").__version__)))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB, {len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

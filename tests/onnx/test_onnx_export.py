"""ONNX export checked by ONNX Runtime: every registered model (small configurations, a few at full size),
every op the exporter writes, the names it gives, and its refusals."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet import functional as F
from scratchnet import nn
from scratchnet.autograd import Function
from scratchnet.export import main as export_main
from scratchnet.models import get_model, list_models
from scratchnet.models.efficientnet import TINY_STAGES

onnx = pytest.importorskip("onnx")  # the dev extra installs both; a bare install has neither
ort = pytest.importorskip("onnxruntime")

TINY_IMAGENET_RESNET = dict(widths=(4, 8, 8, 8))
TINY_DENSENET = dict(growth_rate=4, block_config=(2, 2, 2, 2), num_init_features=8)
TINY_EFFICIENTNET = dict(stages=TINY_STAGES, resolution=32)
TINY_ALEXNET = dict(channels=(4, 4, 6, 6, 4), hidden=8)
# name -> (constructor options, input side); unlisted models export at their native input with num_classes=10
SMALL = {
    **{f"vgg{d}{bn}": (dict(width=1 / 32, hidden=16), 32)
       for d in ("11", "13", "16", "16_c", "19") for bn in ("", "_bn")},
    **{f"{kind}{d}": (TINY_IMAGENET_RESNET, 32) for kind in ("plain", "resnet") for d in (18, 34, 50, 101, 152)},
    **{f"se_resnet{d}": (dict(widths=(4, 8, 8, 8), reduction=2), 32) for d in (18, 34, 50, 101, 152)},
    **{f"{kind}{d}": (dict(widths=(2, 4, 4)), 16) for kind in ("resnet", "plain") for d in (32, 44, 56, 110, 1202)},
    **{f"se_resnet{d}": (dict(widths=(4, 4, 8), reduction=2), 16) for d in (56, 110)},
    **{f"densenet{d}": (TINY_DENSENET, 32) for d in (121, 161, 169, 201)},
    **{f"efficientnet_b{i}": (TINY_EFFICIENTNET, 32) for i in range(8)},
    "googlenet": (dict(width=1 / 16, aux_logits=False), 64), "mobilenet_v1": (dict(width_mult=0.25), 64),
    "alexnet": (TINY_ALEXNET, 227), "zfnet": (TINY_ALEXNET, 224),
    "yolov1": (dict(width_mult=1 / 64, hidden_features=(6,), image_size=64, S=2, num_classes=3), 64),
    "fast_yolov1": (dict(width_mult=1 / 16, hidden_features=(6, 8), image_size=64, S=2, num_classes=3), 64),
    **{f"resnet50_dcn{v}": (TINY_IMAGENET_RESNET, 32) for v in ("", "v2")},
    **{f"resnet20_dcn{v}": (dict(widths=(4, 4, 8)), 16) for v in ("", "v2")},
    **{f"densenet_bc_{d}": (dict(growth_rate=4), 16) for d in (100, 190, 250)},
    **{f"preact_resnet{d}": (dict(widths=(4, 4, 8)), 16) for d in (20, 56, 110, 164, 1001)},
    "se_googlenet": (dict(width=1 / 8, reduction=2, aux_logits=False), 64),
}
# BN weight scale of the 1000-layer nets: at 1, hundreds of residual units grow the logits past 1e26 in float32
BN_GAIN = {"resnet1202": 0.05, "preact_resnet1001": 0.05}
# models whose ops need a later opset than the default 17 (deform_conv2d is ONNX's DeformConv from opset 19)
OPSET = {name: 19 for name in ("resnet50_dcn", "resnet50_dcnv2", "resnet20_dcn", "resnet20_dcnv2")}
# models the exporter cannot express in standard ONNX ops, each with the reason (none today)
EXEMPT = {}


def randomise_batch_norm(model, rng, gain=1.0):
    """Non-trivial running statistics and affine parameters, so eval-mode batch norm is really compared
    (``gain`` scales the BN weights, ``BN_GAIN``); and
    random offset predictors (``conv_offset``, zero at init), so deformable convolutions really sample
    between pixels."""
    for name, p in model.named_parameters():
        if "conv_offset" in name:
            p.data = (0.3 * rng.standard_normal(p.shape)).astype(np.float32)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = module.num_features
            module.running_mean.data = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            module.running_var.data = rng.uniform(0.5, 2.0, c).astype(np.float32)
            module.weight.data = (gain * rng.uniform(0.5, 1.5, c)).astype(np.float32)
            module.bias.data = rng.uniform(-0.5, 0.5, c).astype(np.float32)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


def assert_logits_equal(got, expected):
    """ONNX Runtime's float32 logits equal scratchnet's to 1e-4 of their scale."""
    scale = np.abs(expected).max()
    assert scale > 0 and np.ptp(expected) > 0, "a constant output would prove nothing"
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * scale, np.abs(got - expected).max() / scale


def export_and_compare(model, x_trace, x_check, path, opset=17):
    proto = sn.onnx.export(model, x_trace, path, opset=opset)
    model.eval()
    with sn.no_grad():
        expected = model(sn.tensor(x_check))
    expected = [expected] if isinstance(expected, sn.Tensor) else list(expected)
    for got, want in zip(run_onnx(path, x_check), expected):
        assert_logits_equal(got, want.numpy())
    return proto


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_and_onnx_runtime_agrees(name, tmp_path):
    if name in EXEMPT:
        with pytest.raises(sn.onnx.ExportError, match=EXEMPT[name]):
            sn.onnx.export(get_model(name), np.zeros((1,) + get_model(name).input_size, np.float32),
                           tmp_path / "m.onnx")
        return
    options, side = SMALL.get(name, ({}, None))
    options = dict(options)
    options.setdefault("num_classes", 10)
    sn.manual_seed(0)
    model = get_model(name, **options)
    rng = np.random.default_rng(0)
    randomise_batch_norm(model, rng, gain=BN_GAIN.get(name, 1.0))
    channels, height, width = model.input_size
    if side is not None:
        height = width = side
    batch = 1 if height >= 200 else 2
    x_trace, x_check = (rng.standard_normal((batch, channels, height, width)).astype(np.float32) for _ in range(2))
    proto = export_and_compare(model, x_trace, x_check, tmp_path / f"{name}.onnx", OPSET.get(name, 17))
    keys = set(model.state_dict())
    initializers = {i.name for i in proto.graph.initializer}
    params = {k for k, _ in model.named_parameters()}
    assert params <= initializers  # every parameter is an initializer named by its state_dict key
    # (googlenet: built without the auxiliary heads, which eval mode never runs and the graph leaves out)
    named = {n for n in initializers if not n.startswith("/constant")}
    buffers = {k for k, _ in model.named_buffers()}
    assert named <= keys | buffers, named - keys - buffers


def test_opset_18_and_the_static_input_shape(tmp_path):
    sn.manual_seed(0)
    model = get_model("se_resnet20", widths=(4, 4, 8), reduction=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    proto = export_and_compare(model, x, rng.standard_normal(x.shape).astype(np.float32), tmp_path / "m.onnx", 18)
    assert proto.opset_import[0].version == 18
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 16, 16]


class EveryOp(nn.Module):
    """The ops the zoo does not call in eval mode, each with its awkward options."""

    def __init__(self):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.same = nn.Conv2d(4, 4, 4, padding="same")
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y = self.same(self.deconv(x))                                             # 8x8 -> 16x16, even 'same'
        y = self.dilated(y)
        y = F.avg_pool2d(y, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)  # varying divisor -> 9x9
        y = F.max_pool2d(y, 2, 2, ceil_mode=True)                                  # ceil overhang -> 5x5
        y = F.adaptive_avg_pool2d(y, (3, 2))                                       # uneven bins
        y = F.leaky_relu(y, 0.2) + F.sigmoid(y) * F.tanh(y) - F.silu(y)
        y = y.clamp(-1.5, 2.0) ** 2 + (y.abs() + 1).sqrt() / (y.exp() + 1).log()
        a, b = sn.split(y, [1, 3], 1)
        y = sn.cat([b[:, ::2], a, b[:, -1:, ::-1]], 1)                             # steps, negative steps
        z = y.reshape(y.shape[0], -1)[:, :5]
        z = self.fc(z) + z[:, None, 1:4].sum(1) - z.mean(1, keepdim=True)
        idx = sn.tensor(np.array([2, 0, 2]))
        return F.softmax(z, 1) + F.log_softmax(-z, 1)[:, idx.data] + (z @ z.T)[:, :1]


def test_every_op_of_the_exporter_agrees_with_onnx_runtime(tmp_path):
    sn.manual_seed(0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    export_and_compare(EveryOp(), x, rng.standard_normal(x.shape).astype(np.float32), tmp_path / "ops.onnx")


class Cube(Function):
    def forward(self, x):
        return x ** 3

    def backward(self, gy):
        return (3 * gy,)


class UsesCube(nn.Module):
    def forward(self, x):
        return Cube()(x)


def test_an_op_without_an_onnx_form_is_named_in_one_sentence(tmp_path):
    with pytest.raises(sn.onnx.ExportError) as info:
        sn.onnx.export(UsesCube(), np.ones((1, 2), np.float32), tmp_path / "m.onnx", name="cube_net")
    message = str(info.value)
    assert message.startswith("ONNX export of cube_net: the op Cube (") and "no standard ONNX form" in message
    assert "\n" not in message and not (tmp_path / "m.onnx").exists()
    lrn = nn.Sequential(nn.LocalResponseNorm(4))
    with pytest.raises(sn.onnx.ExportError, match="LocalResponseNorm with an even size .4. has no ONNX form"):
        sn.onnx.export(lrn, np.ones((1, 6, 3, 3), np.float32), tmp_path / "m.onnx")
    with pytest.raises(sn.onnx.ExportError, match="opset 7 is not supported: choose one from 13 to 21"):
        sn.onnx.export(lrn, np.ones((1, 6, 3, 3), np.float32), tmp_path / "m.onnx", opset=7)


def test_export_command(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    assert export_main(["lenet5", "--out", str(out), "--batch-size", "3"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    proto = onnx.load(str(out))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 1, 32, 32]
    sn.save(get_model("lenet5"), tmp_path / "w.npz")
    assert export_main(["lenet5", "--weights", str(tmp_path / "w.npz"), "--out", str(out)]) == 0
    for argv, expected in [
        (["nosuchnet"], "cannot build model 'nosuchnet': unknown model 'nosuchnet'"),
        (["lenet5", "--out", str(tmp_path / "no" / "x.onnx")], "does not exist or is not writable"),
        (["lenet5", "--input-size", "1", "28", "28", "--out", str(out)], "LeNet5 expects (N, C, 32, 32) input"),
        (["lenet5", "--weights", str(tmp_path / "missing.pth"), "--out", str(out)], "missing.pth"),
        (["lenet5", "--opset", "5", "--out", str(out)], "opset 5 is not supported"),
        (["alexnet", "--weights", "DEFAULT"], "alexnet has no pretrained weights"),
    ]:
        capsys.readouterr()
        assert export_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err

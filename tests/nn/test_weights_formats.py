"""Weights files from elsewhere: PyTorch's .pt/.pth read without torch (zip and legacy formats, every
dtype torch saves, shared storages and strided views, nested containers), safetensors written and read,
and every bad file refused in one sentence that names it, with nothing executed and nothing overwritten."""
import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from conftest import REPO
from scratchnet.models import get_model
from scratchnet.models.efficientnet import TINY_STAGES
from scratchnet.nn.formats import detect_format

# several zoo models at tiny sizes: every state_dict dtype (float32 weights, int64 num_batches_tracked)
ZOO = {
    "lenet5": {},
    "resnet20": {},
    "vgg11_bn": dict(width=1 / 32, hidden=16),
    "densenet121": dict(growth_rate=4, block_config=(1, 2), num_init_features=8),
    "efficientnet_b0": dict(stages=TINY_STAGES, width_mult=1.0, depth_mult=1.0, resolution=16),
}


def torch_state(model):
    return OrderedDict((k, torch.from_numpy(v.copy())) for k, v in model.state_dict().items())


def assert_same_state(got, expected):
    assert list(got) == list(expected)
    for key, value in expected.items():
        value = value.numpy() if isinstance(value, torch.Tensor) else value
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_state_dicts_written_by_torch_save_load_equal(tmp_path, name, legacy):
    sn.manual_seed(0)
    model = get_model(name, num_classes=10, **ZOO[name])
    state = torch_state(model)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert detect_format(path) == ("torch-legacy" if legacy else "torch")
    assert_same_state(sn.load(path), state)
    other = get_model(name, num_classes=10, **ZOO[name])
    other.load_state_dict(path)  # a path is accepted directly
    assert_same_state(other.state_dict(), state)


def tricky_checkpoint():
    """Every dtype torch saves, views with offsets and strides, storages shared between tensors, nesting."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return OrderedDict(
        float64=torch.linspace(-1, 1, 5, dtype=torch.float64),
        float32=torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),
        float16=torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
        bfloat16=torch.tensor([1.0, -3.140625, 1e30, 2.0 ** -130], dtype=torch.bfloat16),
        int64=torch.tensor([2 ** 40, -1]), int32=torch.tensor([7, -7], dtype=torch.int32),
        int16=torch.tensor([300], dtype=torch.int16), int8=torch.tensor([-5], dtype=torch.int8),
        uint8=torch.tensor([250], dtype=torch.uint8), bool=torch.tensor([True, False]),
        complex64=torch.tensor([1 + 2j], dtype=torch.complex64),
        base=base, row=base[1], corner=base[1:, 2:5], transposed=base.t(), strided=base[::2, ::3],
        expanded=torch.tensor([1.0, 2.0]).expand(3, 2), scalar=torch.tensor(3.5), empty=torch.zeros(0, 4),
        nested={"list": [base[0], (torch.ones(2), "text", 3)], "number": 1.5, "none": None},
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_dtype_view_and_shared_storage_reads_as_torch_holds_it(tmp_path, legacy):
    checkpoint = tricky_checkpoint()
    path = tmp_path / "tricky.pt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    got = sn.load(path)
    assert isinstance(got, OrderedDict) and list(got) == list(checkpoint)
    for key, value in checkpoint.items():
        if key == "nested":
            continue
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16: float32, exactly the same numbers
            assert got[key].dtype == np.float32
            np.testing.assert_array_equal(got[key], value.float().numpy())
            continue
        expected = value.numpy()
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
        np.testing.assert_array_equal(got[key], expected, err_msg=key)
    assert got["float16"].dtype == np.float16
    nested = got["nested"]
    np.testing.assert_array_equal(nested["list"][0], checkpoint["base"][0].numpy())
    assert nested["list"][1][1:] == ("text", 3) and isinstance(nested["list"][1], tuple)
    np.testing.assert_array_equal(nested["list"][1][0], np.ones(2, np.float32))
    assert nested["number"] == 1.5 and nested["none"] is None
    got["row"][0] = -1  # each tensor is its own array: writing one leaves the storage's others alone
    assert got["base"][1, 0] == 6


def test_parameters_and_a_whole_saved_module(tmp_path):
    layer = torch.nn.Linear(3, 2)
    torch.save({"w": layer.weight, "b": layer.bias}, tmp_path / "params.pt")  # nn.Parameter pickles
    got = sn.load(tmp_path / "params.pt")
    np.testing.assert_array_equal(got["w"], layer.weight.detach().numpy())
    torch.save(layer, tmp_path / "module.pt")  # the whole module: its class is a global we refuse
    with pytest.raises(sn.WeightsFileError) as info:
        sn.load(tmp_path / "module.pt")
    message = str(info.value)
    assert str(tmp_path / "module.pt") in message and "torch.nn.modules.linear.Linear" in message
    assert "refused, nothing was executed" in message and "save its state_dict instead" in message


def test_reading_pytorch_files_never_imports_torch(tmp_path):
    """A subprocess where ``import torch`` fails reads a zip and a legacy file and finds the same numbers."""
    sn.manual_seed(0)
    model = get_model("resnet20")
    state = torch_state(model)
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    sn.save(model, tmp_path / "reference.npz")
    script = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is unimportable in this test")
sys.meta_path.insert(0, NoTorch())
import numpy as np
import scratchnet as sn
from scratchnet.models import get_model
reference = sn.load({str(tmp_path / "reference.npz")!r})
for name in ("zip.pth", "legacy.pth"):
    got = sn.load({str(tmp_path)!r} + "/" + name)
    assert list(got) == list(reference)
    assert all(np.array_equal(got[k], reference[k]) and got[k].dtype == reference[k].dtype for k in reference)
    get_model("resnet20").load_state_dict({str(tmp_path)!r} + "/" + name)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
print("read without torch")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "read without torch" in done.stdout


# --------------------------------------------------------------------------- malicious and broken files


class Payload:
    """Unpickling this calls os.system, which would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def torch_like_zip(path, obj):
    """A zip laid out as torch.save's, with our own pickle as data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = {"weight": Payload(marker)}
    path = tmp_path / "evil.pth"
    if layout == "zip":
        torch_like_zip(path, payload)
    else:
        stream = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, payload):
            pickle.dump(header, stream, protocol=2)
        path.write_bytes(stream.getvalue())
    pickle.loads(pickle.dumps(Payload(tmp_path / "proof"), protocol=2))  # the payload really works ...
    assert (tmp_path / "proof").exists()
    model = torch.nn.Linear(2, 2)
    with pytest.raises(sn.WeightsFileError) as info:  # ... but not through sn.load
        sn.load(path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message and "posix.system" in message and "refused, nothing was executed" in message
    with pytest.raises(sn.WeightsFileError):
        sn.nn.Linear(2, 2).load_state_dict(path)
    assert not marker.exists() and model is not None


def test_truncated_foreign_and_damaged_pytorch_files(tmp_path):
    state = torch_state(get_model("lenet5"))
    good = tmp_path / "good.pth"
    torch.save(state, good)
    data = good.read_bytes()
    cases = {
        "truncated.pth": data[:len(data) // 2],
        "text.pth": b"this is not a checkpoint\n",
        "foreign.pth": pickle.dumps([1, 2, 3], protocol=2),
    }
    legacy = tmp_path / "legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    cases["legacy_truncated.pth"] = legacy.read_bytes()[:-100]
    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(tmp_path / "no_storage.pth", "w") as out:
        for name in archive.namelist():
            if not name.endswith("data/0"):
                out.writestr(name, archive.read(name))
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    model = get_model("lenet5")
    before = model.state_dict()
    for name in [*cases, "no_storage.pth"]:
        path = tmp_path / name
        with pytest.raises(sn.WeightsFileError) as info:
            model.load_state_dict(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message
    assert_same_state(model.state_dict(), before)


def test_another_architecture_a_missing_key_or_a_shape_mismatch_names_file_and_key(tmp_path):
    sn.manual_seed(0)
    other = tmp_path / "resnet20.pth"
    torch.save(torch_state(get_model("resnet20")), other)
    model = get_model("lenet5")
    before = model.state_dict()
    with pytest.raises(sn.nn.StateDictError) as info:
        model.load_state_dict(other)
    message = str(info.value)
    assert f"from {other}" in message and "another architecture" in message and "c1.weight" in message
    assert "more)" in message  # resnet20's 100+ keys are counted, not all listed

    state = torch_state(get_model("lenet5"))
    del state["f6.bias"]
    state["c1.weight"] = torch.zeros(6, 1, 3, 3)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(sn.nn.StateDictError) as info:
        model.load_state_dict(broken)
    message = str(info.value)
    assert f"from {broken}" in message and "c1.weight: checkpoint (6, 1, 3, 3) vs model (6, 1, 5, 5)" in message
    assert "missing keys: f6.bias" in message
    torch.save({"state_dict": torch_state(get_model("lenet5")), "epoch": 3}, tmp_path / "checkpoint.pth")
    with pytest.raises(sn.nn.StateDictError, match=r"checkpoint holding 'state_dict', 'epoch'.*sn.load\(path\)"
                                                   r"\['state_dict'\]"):
        model.load_state_dict(tmp_path / "checkpoint.pth")
    assert_same_state(model.state_dict(), before)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        model.load_state_dict(tmp_path / "nothere.pth")


# --------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_by_extension_and_by_format(tmp_path):
    sn.manual_seed(0)
    model = get_model("resnet20")
    model(sn.tensor(np.ones((2, 3, 32, 32), np.float32)))  # BN statistics move
    sn.save(model, tmp_path / "m.safetensors")
    sn.save(model.state_dict(), tmp_path / "m.bin", format="safetensors")
    for name in ("m.safetensors", "m.bin"):
        assert detect_format(tmp_path / name) == "safetensors"
        assert_same_state(sn.load(tmp_path / name), model.state_dict())
        other = get_model("resnet20")
        other.load_state_dict(tmp_path / name)
        assert_same_state(other.state_dict(), model.state_dict())
    from safetensors.torch import load_file  # torch reads what scratchnet wrote
    for key, value in load_file(str(tmp_path / "m.safetensors")).items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key])
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.safetensors"]  # no temporary files left
    with pytest.raises(ValueError, match="format must be one of npz, safetensors.*needs torch"):
        sn.save(model, tmp_path / "m.pth", format="pth")
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:200])
    with pytest.raises(sn.WeightsFileError, match="bad.safetensors is not a valid weights file"):
        sn.load(tmp_path / "bad.safetensors")

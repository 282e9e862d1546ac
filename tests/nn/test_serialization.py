"""sn.save / sn.load: .npz round trips, atomic writes, clear errors for bad files, device-safe loading."""
import os
import re
import zipfile

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet import nn


def small_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_save_load_roundtrip_model_and_state_dict(tmp_path):
    model = small_model()
    model(sn.tensor(np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)))  # bn stats move
    sn.save(model, tmp_path / "a.npz")
    sn.save(model.state_dict(), str(tmp_path / "b.npz"))
    for name in ("a.npz", "b.npz"):
        state = sn.load(tmp_path / name)
        assert list(state) == list(model.state_dict())  # order kept
        for key, value in model.state_dict().items():
            assert state[key].dtype == value.dtype and state[key].shape == value.shape
            np.testing.assert_array_equal(state[key], value)
    assert sn.load(tmp_path / "a.npz")["1.num_batches_tracked"].dtype == np.int64
    other = small_model()
    other.load_state_dict(sn.load(tmp_path / "a.npz"))
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_saves_exactly_at_the_given_path_and_leaves_no_temp_files(tmp_path):
    sn.save(small_model(), tmp_path / "weights.bin")
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]
    assert zipfile.is_zipfile(tmp_path / "weights.bin")


def test_write_is_atomic_an_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    model = small_model()
    sn.save(model, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        sn.save(small_model(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.npz"]


def test_torch_weights_ported_with_one_comprehension(tmp_path):
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(8, 3))
    sn.save({k: v.numpy() for k, v in tmodel.state_dict().items()}, tmp_path / "t.npz")
    model = small_model()
    model.load_state_dict(sn.load(tmp_path / "t.npz"))
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    model.eval(), tmodel.eval()
    with sn.no_grad():
        out = model(sn.tensor(x)).numpy()
    np.testing.assert_allclose(out, tmodel(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "text", "npy", "flip"])
def test_bad_file_gives_clear_error_and_model_keeps_weights(tmp_path, damage):
    path = tmp_path / "bad.npz"
    sn.save(small_model(), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(300))
    elif damage == "text":
        path.write_text("not weights at all\n")
    elif damage == "npy":
        np.save(path.with_suffix(".npy"), np.ones(3))
        os.replace(path.with_suffix(".npy"), path)
    else:  # flip bytes inside the first array's payload: the zip CRC check catches it
        corrupted = bytearray(data)
        for i in range(200, 260):
            corrupted[i] ^= 0xFF
        path.write_bytes(bytes(corrupted))
    model = small_model()
    before = model.state_dict()
    with pytest.raises(sn.WeightsFileError) as info:
        model.load_state_dict(sn.load(path))
    message = str(info.value)
    assert str(path) in message
    assert re.search(r"truncated or corrupted\?\)?: re-download or re-save it|is not a weights file scratchnet "
                     r"reads .*; pass the right path|single \.npy array, not a weights file", message), message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_missing_file_and_bad_objects(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        sn.load(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="Module or a state dict"):
        sn.save([1, 2], tmp_path / "x.npz")
    with pytest.raises(TypeError, match="entry 'lr' is a float"):
        sn.save({"lr": 0.1}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


@pytest.mark.gpu
def test_loading_into_a_gpu_model_keeps_it_on_the_gpu(tmp_path):
    model = small_model()
    sn.save(model, tmp_path / "w.npz")
    gpu_model = small_model().to("gpu")
    gpu_model.load_state_dict(sn.load(tmp_path / "w.npz"))
    assert all(t.device == "gpu" for t in list(gpu_model.parameters()) + list(gpu_model.buffers()))
    np.testing.assert_array_equal(gpu_model.state_dict()["0.weight"], model.state_dict()["0.weight"])


def test_a_folder_is_named_as_a_folder_and_a_non_mapping_is_a_type_error(tmp_path):
    model, reference = nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for load in (sn.load, model.load_state_dict):
        with pytest.raises(IsADirectoryError, match="is a folder; pass a weights file in it"):
            load(tmp_path)
    for bad in ([1, 2], None):  # torch's exception type (a path is welcome here: it is loaded)
        with pytest.raises(TypeError, match="expected a state dict"):
            model.load_state_dict(bad)
        with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
            reference.load_state_dict(bad)

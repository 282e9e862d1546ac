"""Datasets: IDX parsing, finding/downloading/verifying files (against a real loopback HTTP server), CIFAR-10."""
import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from conftest import LoopbackServer, write_cifar
from scratchnet.data import DatasetError, load_cifar10, load_mnist, parse_idx, read_idx
from scratchnet.data import download as dl
from scratchnet.data import idx


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own empty cache and no $SCRATCHNET_DATA, so nothing real is touched."""
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)


def idx_bytes(array):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------- IDX


def test_parse_idx_round_trip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images)), images)
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    out = parse_idx(idx_bytes(ints))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)


@pytest.mark.parametrize("cut", [1, 6, 20])
def test_parse_idx_rejects_truncated(cut):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(raw[:-cut] if cut != 6 else raw[:6], source="x")


def test_parse_idx_rejects_bad_magic():
    with pytest.raises(DatasetError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04abcdefgh")


def test_read_idx_reads_gzip_and_plain(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(labels))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), labels)


def test_read_idx_truncated_gzip(tmp_path):
    raw = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    (tmp_path / "a.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_idx(tmp_path / "a.gz")


# --------------------------------------------------------------------------- the real files


def test_fashion_mnist_test_set(data_dir):
    test = load_mnist("fashion-mnist", train=False, data_dir=data_dir, download=False)
    assert test.inputs.shape == (10000, 1, 28, 28) and test.inputs.dtype == np.uint8
    assert test.targets.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(test.targets), np.full(10, 1000))
    assert test.classes[9] == "Ankle boot"


def test_found_through_scratchnet_data(data_dir, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))
    test = load_mnist("mnist", train=False, download=False)
    assert len(test) == 10000 and test.inputs[0].max() == 255


def test_mnist_training_images_missing_says_what_where_how(data_dir, tmp_path):
    with pytest.raises(DatasetError) as info:
        load_mnist("mnist", train=True, data_dir=data_dir, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert str(data_dir / "mnist") in message and str(tmp_path / "cache" / "mnist") in message
    assert "--data-dir" in message and "fashion-mnist" in message


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "shared"))
    dirs = dl.search_dirs("fashion-mnist", tmp_path / "mine", idx.SYSTEM_DIRS["fashion-mnist"])
    assert dirs == [tmp_path / "mine", tmp_path / "mine" / "fashion-mnist", tmp_path / "shared" / "fashion-mnist",
                    tmp_path / "cache" / "fashion-mnist", dl.Path("/usr/share/datasets/fashion-mnist")]


def test_corrupt_local_file_is_reported_not_used(data_dir, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    good = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = bytearray(gzip.decompress(good))
    raw[100] ^= 1  # one flipped bit, still a well-formed IDX file
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes((data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz is corrupt: SHA-256"):
        load_mnist("mnist", train=False, data_dir=folder, download=False)
    # Truncated: the gzip stream ends early.
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_mnist("mnist", train=False, data_dir=folder, download=False)


# --------------------------------------------------------------------------- downloads, for real, over loopback


@pytest.fixture
def mnist_test_server(data_dir):
    folder = data_dir / "mnist"
    server = LoopbackServer({name: (folder / name).read_bytes()
                      for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")})
    yield server
    server.close()


def test_download_from_second_mirror_into_cache(mnist_test_server, tmp_path, capsys):
    mirrors = [mnist_test_server.url + "/missing/", mnist_test_server.url + "/ok/"]
    test = load_mnist("mnist", train=False, mirrors=mirrors)
    assert len(test) == 10000
    cached = kept(tmp_path / "cache" / "mnist")
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # no .part leftovers
    umask = os.umask(0)
    os.umask(umask)
    for name in cached:  # the permissions open() would give, not mkstemp's 0600
        assert (tmp_path / "cache" / "mnist" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    # Found in the cache the second time: a dead mirror list no longer matters.
    assert len(load_mnist("mnist", train=False, mirrors=[mnist_test_server.url + "/missing/"])) == 10000


def test_download_bad_checksum_keeps_nothing(data_dir, tmp_path):
    good = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = bytearray(gzip.decompress(good))
    raw[-1] ^= 0xFF
    server = LoopbackServer({"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(raw))})
    try:
        with pytest.raises(DatasetError) as info:
            idx.mnist_file("mnist", "t10k-labels-idx1-ubyte.gz", mirrors=[server.url + "/"], progress=False)
    finally:
        server.close()
    message = str(info.value)
    assert "SHA-256" in message and server.url in message and "Looked in" in message
    assert kept(tmp_path / "cache" / "mnist") == []


def test_download_dropped_connection_keeps_nothing(data_dir, tmp_path):
    body = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    server = LoopbackServer({"t10k-labels-idx1-ubyte.gz": body})
    try:
        with pytest.raises(DatasetError) as info:
            idx.mnist_file("mnist", "t10k-labels-idx1-ubyte.gz", mirrors=[server.url + "/drop/"])
        assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
        assert kept(tmp_path / "cache" / "mnist") == []
        # The next mirror in the list is tried after the drop.
        path = idx.mnist_file("mnist", "t10k-labels-idx1-ubyte.gz",
                              mirrors=[server.url + "/drop/", server.url + "/"])
    finally:
        server.close()
    assert path.read_bytes() == body


def test_download_verifies_md5(tmp_path):
    body = b"hello scratchnet"
    server = LoopbackServer({"f.bin": body})
    try:
        dest = dl.download([server.url + "/f.bin"], tmp_path / "d" / "f.bin", md5=hashlib.md5(body).hexdigest())
        assert dest.read_bytes() == body
        with pytest.raises(DatasetError, match="MD5"):
            dl.download([server.url + "/f.bin"], tmp_path / "d" / "g.bin", md5="0" * 32)
    finally:
        server.close()
    assert not (tmp_path / "d" / "g.bin").exists()


# --------------------------------------------------------------------------- CIFAR-10, on small files in its format


def kept(folder):
    """The files a download left in ``folder``, besides the preparation lock (which stays, by design)."""
    return sorted(p.name for p in folder.iterdir() if p.name != dl.PREPARE_LOCK)


def test_cifar10_reads_batches_in_order(tmp_path):
    written = write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py", [3, 2, 4, 1, 2, 5])
    train = load_cifar10(train=True, data_dir=tmp_path, download=False)
    test = load_cifar10(train=False, data_dir=tmp_path, download=False)
    assert train.inputs.shape == (12, 3, 32, 32) and test.inputs.shape == (5, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # Row layout: 1024 reds, then greens, then blues, each a row-major 32x32 image.
    np.testing.assert_array_equal(train.inputs[3:5, 1, 0, :], data[:, 1024:1056])
    np.testing.assert_array_equal(train.targets[3:5], labels)
    np.testing.assert_array_equal(test.targets, written["test_batch"][1])


def test_cifar10_download_archive_over_loopback(tmp_path):
    src = tmp_path / "src"
    written = write_cifar(src / "cifar-10-batches-py", [2, 2, 2, 2, 2, 3])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = buffer.getvalue()
    server = LoopbackServer({"cifar-10-python.tar.gz": archive})
    try:
        with pytest.raises(DatasetError, match="MD5"):  # the real archive's checksum does not match ours
            load_cifar10(train=False, mirrors=[server.url + "/cifar-10-python.tar.gz"])
        test = load_cifar10(train=False, mirrors=[server.url + "/cifar-10-python.tar.gz"],
                            archive_md5=hashlib.md5(archive).hexdigest())
    finally:
        server.close()
    np.testing.assert_array_equal(test.targets, written["test_batch"][1])
    assert (tmp_path / "cache" / "cifar-10" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_corrupt_and_missing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, [2, 2, 2, 2, 2, 2])
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="data_batch_3 is not a readable CIFAR batch"):
        load_cifar10(train=True, data_dir=tmp_path, download=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="lacks data_batch_3"):
        load_cifar10(train=True, data_dir=tmp_path, download=False)
    with pytest.raises(DatasetError, match="not found. Looked in"):
        load_cifar10(train=True, data_dir=tmp_path / "elsewhere", download=False)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, [1, 1, 1, 1, 1, 1])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_cifar10(train=False, data_dir=tmp_path, download=False)

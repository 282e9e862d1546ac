"""Data files that are damaged, and datasets that several processes prepare at once."""
import gzip
import io
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO, write_cifar
from scratchnet.data import DatasetError, load_cifar10, read_idx
from scratchnet.data import download as dl
from scratchnet.data.cifar import ARCHIVE, FOLDER


def broken_stream(raw):
    """A gzip file whose deflate stream breaks early (not only its CRC at the end)."""
    data = bytearray(gzip.compress(raw))
    data[20:40] = b"\xff" * 20
    return bytes(data)


def test_a_gzip_whose_stream_breaks_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(broken_stream(bytes(range(256)) * 64))
    for read in (read_idx, lambda p: dl.verify(p, sha256="0" * 64)):
        with pytest.raises(DatasetError) as info:
            read(path)
        message = str(info.value)
        assert str(path) in message and "zlib.error" in message and "delete it and run again" in message


CHILD = """
import sys
from scratchnet.data import load_cifar10
data = load_cifar10(train=False, data_dir=sys.argv[1], download=False, progress=True, archive_md5=None)
print("loaded", len(data), flush=True)
"""


def start_child(data, env):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_second_process_waits_for_the_one_preparing_the_dataset(tmp_path, cache):
    """This process holds CIFAR-10's preparation lock; a second one, finding only a damaged archive,
    waits for it (and says so) instead of unpacking, then reads the folder this one prepared."""
    data = tmp_path / "data" / "cifar-10"
    data.mkdir(parents=True)
    (data / ARCHIVE).write_bytes(b"not an archive")  # the child fails if it unpacks this
    env = dict(os.environ, PYTHONPATH=str(REPO), SCRATCHNET_CACHE=str(cache))
    with dl.preparing("cifar-10") as folder:
        child = start_child(tmp_path / "data", env)
        said = child.stderr.readline()  # the child's first words: it waits for this process
        assert f"waiting for process {os.getpid()}" in said and "preparing cifar-10" in said, said
        write_cifar(folder / FOLDER, [1, 1, 1, 1, 1, 5])
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "loaded 5" in out


def test_two_processes_starting_at_once_both_get_the_dataset(tmp_path, cache):
    """Two processes find the same archive and no folder: one unpacks it under the lock, the other waits
    and reads what it unpacked; both load the test batch."""
    written = write_cifar(tmp_path / "src" / FOLDER, [1, 1, 1, 1, 1, 4])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / FOLDER, arcname=FOLDER)
    (tmp_path / "data" / "cifar-10").mkdir(parents=True)
    (tmp_path / "data" / "cifar-10" / ARCHIVE).write_bytes(buffer.getvalue())
    env = dict(os.environ, PYTHONPATH=str(REPO), SCRATCHNET_CACHE=str(cache))
    children = [start_child(tmp_path / "data", env) for _ in range(2)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "loaded 4" in out
    test = load_cifar10(train=False, data_dir=tmp_path / "data", download=False, archive_md5=None)
    assert test.targets.tolist() == written["test_batch"][1]
    assert sorted(p.name for p in (cache / "cifar-10").iterdir()) == [dl.PREPARE_LOCK, FOLDER]  # no temp folder

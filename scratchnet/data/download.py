"""Finding dataset files on disk, and downloading them when they are not there.

A dataset file is looked for, in order, in:
  1. the folder the caller names (``--data-dir``), directly or in its ``<name>/`` subfolder;
  2. ``$SCRATCHNET_DATA/<name>/``;
  3. the cache, ``$SCRATCHNET_CACHE/<name>`` (default ``~/.cache/scratchnet/<name>``);
  4. system folders a distribution installs (Debian's ``/usr/share/datasets/fashion-mnist``).
If it is nowhere, it is downloaded into the cache from a list of mirrors (some
answer 403 or vanish, so we keep several): written to a temporary file beside
the target, checked, and only then renamed into place, so a dropped connection
or a bad mirror never leaves a half-written file that a later run would trust.
"""
import contextlib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path

from ..nn.serialization import new_file_mode
from ..runlock import exclusive

PREPARE_LOCK = ".prepare.lock"


class DatasetError(RuntimeError):
    """A dataset file is missing, cannot be fetched, or is corrupt; the message says how to fix it."""


def cache_root():
    """Where downloads go: $SCRATCHNET_CACHE, else ~/.cache/scratchnet."""
    return Path(os.environ.get("SCRATCHNET_CACHE", Path.home() / ".cache" / "scratchnet")).expanduser()


def search_dirs(name, data_dir=None, system_dirs=()):
    """The folders searched for dataset ``name``, in order (they need not exist)."""
    dirs = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        dirs += [data_dir, data_dir / name]
    if os.environ.get("SCRATCHNET_DATA"):
        dirs.append(Path(os.environ["SCRATCHNET_DATA"]).expanduser() / name)
    dirs.append(cache_root() / name)
    dirs += [Path(d) for d in system_dirs]
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


@contextlib.contextmanager
def preparing(name, progress=True):
    """Hold dataset ``name``'s preparation lock (a file in its cache folder) for the block. Several
    processes may start at once (the ranks of an mpirun, two runs): one downloads or unpacks, the others
    wait, then find its result, so none reads or replaces a half-written file."""
    folder = cache_root() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = exclusive(folder / PREPARE_LOCK, waiting=lambda owner: progress and print(
            f"waiting for {owner}, which is preparing {name} in {folder} ...", file=sys.stderr, flush=True))
        lock.__enter__()
    except OSError as exc:
        raise DatasetError(f"cannot use the dataset cache {folder} ({exc.strerror or exc}): set SCRATCHNET_CACHE "
                           f"to a folder you can write to") from None
    try:
        yield folder
    finally:
        lock.__exit__(None, None, None)


def find_file(filenames, dirs):
    """The first existing ``dir/filename`` (each dir tried with each name, in order), or None."""
    for d in dirs:
        for filename in filenames:
            path = Path(d) / filename
            if path.is_file():
                return path
    return None


# --------------------------------------------------------------------------- checksums


def file_digest(path, algorithm="sha256", decompress=False):
    """Hex digest of a file's bytes (of its decompressed bytes when ``decompress`` and it is gzip)."""
    digest = hashlib.new(algorithm)
    opener = gzip.open if decompress and is_gzip(path) else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


_verified = set()  # (path, size, mtime, checksums) already checked in this process


def verify(path, sha256=None, md5=None):
    """Raise DatasetError unless the file matches the given checksums.

    ``sha256`` is of the *decompressed* bytes (so a re-compressed .gz, as Debian
    ships Fashion-MNIST, still passes); ``md5`` is of the file as stored.
    A truncated gzip fails here too (gzip raises EOFError before the end).
    """
    if sha256 is None and md5 is None:
        return
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, sha256, md5)
    if key in _verified:
        return
    try:
        if sha256 is not None:
            got = file_digest(path, "sha256", decompress=True)
            if got != sha256:
                raise DatasetError(f"{path} is corrupt: SHA-256 of its contents is {got}, expected {sha256}; "
                                   f"delete it and run again to download a fresh copy")
        if md5 is not None:
            got = file_digest(path, "md5")
            if got != md5:
                raise DatasetError(f"{path} is corrupt: MD5 is {got}, expected {md5}; "
                                   f"delete it and run again to download a fresh copy")
        _verified.add(key)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a broken stream is zlib's
        raise unreadable(path, exc) from None


def unreadable(path, exc):
    """The DatasetError for a file that cannot be read to its end: which file, what broke, what to do."""
    kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
    return DatasetError(f"{path} is corrupt or truncated ({kind}: {exc}); delete it and run again to download a "
                        f"fresh copy")


# --------------------------------------------------------------------------- downloading


def download(urls, dest, sha256=None, md5=None, progress=True, timeout=30):
    """Fetch the first mirror that works into ``dest``, verified, via a temp file; returns ``dest``.

    Raises DatasetError listing every mirror tried and why each failed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, progress, timeout, label=dest.name)
            verify(tmp, sha256=sha256, md5=md5)
            os.chmod(tmp, new_file_mode())  # mkstemp's 0600 -> what open() gives a new file
            os.replace(tmp, dest)  # atomic: readers see the old state or the whole new file
            return dest
        except (OSError, http.client.HTTPException, DatasetError, ValueError) as exc:  # URLError is an OSError
            failures.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DatasetError(f"could not download {dest.name} (tried {'; '.join(failures)})")


def _fetch(url, out, progress, timeout, label):
    request = urllib.request.Request(url, headers={"User-Agent": "scratchnet"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None else None
        bar = _progress_bar(total, label) if progress else None
        received = 0
        try:
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                out.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    # http.client raises IncompleteRead for most drops; a server that just closes early is caught here.
    if total is not None and received != total:
        raise OSError(f"connection dropped after {received} of {total} bytes")


def _progress_bar(total, label):
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {label}",
                leave=False, dynamic_ncols=True)


def fetch_file(name, filename, urls=(), sha256=None, md5=None, data_dir=None, system_dirs=(),
               download_ok=True, progress=True, how_to=None, alternatives=()):
    """Find a verified copy of a dataset file, downloading it into the cache if needed.

    ``alternatives`` are other names the same file may have on disk (e.g. without ``.gz``).
    The error for a missing file names the file, every folder searched, each
    mirror that failed, and how to supply it (``how_to``).
    """
    dirs = search_dirs(name, data_dir, system_dirs)
    path = find_file([filename, *alternatives], dirs)
    if path is not None:
        verify(path, sha256=sha256, md5=md5 if path.name == filename else None)
        return path
    tried = "downloads are disabled"
    if download_ok and urls:
        with preparing(name, progress):
            path = find_file([filename, *alternatives], dirs)  # fetched by another process while this one waited
            if path is not None:
                verify(path, sha256=sha256, md5=md5 if path.name == filename else None)
                return path
            try:
                return download([u + filename if u.endswith("/") else u for u in urls],
                                cache_root() / name / filename, sha256=sha256, md5=md5, progress=progress)
            except DatasetError as exc:
                tried = str(exc)
    advice = how_to or (f"download it and put it in one of those folders, or pass --data-dir (data_dir=) "
                        f"pointing at the folder that holds it")
    # One line (the CLI prints it as is): what is missing, where we looked, what failed, what to do.
    raise DatasetError(f"{name}: file {filename} not found. Looked in: {', '.join(str(d) for d in dirs)}; "
                       f"{tried}. To supply it: {advice}")


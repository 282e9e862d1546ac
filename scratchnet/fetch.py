"""Reading a URL into an open file, with a progress bar: the one HTTP reader that dataset downloads
(``data/download.py``) and pretrained weights (``models/pretrained.py``) share.

It imports nothing from scratchnet, so any layer may use it. Where the bytes go (a temporary file
renamed into place once checked) is the caller's business.
"""
import urllib.request


def stream(url, out, progress=True, timeout=30, label="", digest=None):
    """Write the bytes at ``url`` into the binary file ``out`` (and into ``digest``, a hashlib object, if
    given), showing a tqdm bar ``downloading <label>`` when ``progress``. Raises OSError (URLError and
    HTTPError are OSErrors) when the server cannot be reached or the connection drops early."""
    request = urllib.request.Request(url, headers={"User-Agent": "scratchnet"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None else None
        bar = _progress_bar(total, label) if progress else None
        received = 0
        try:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                if digest is not None:
                    digest.update(block)
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
    """A byte-counting tqdm bar that clears itself when closed."""
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {label}",
                leave=False, dynamic_ncols=True)

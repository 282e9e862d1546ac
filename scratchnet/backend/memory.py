"""The process's memory policy: memory a step frees is kept for the next step, not handed back to the kernel.

A training step allocates the same large arrays every time (activations, im2col columns, gradients),
and frees them before the next. glibc's malloc, left alone, serves every block above 32 MB (and,
until it has seen one freed, every block above 128 KB) with a fresh ``mmap`` and unmaps it on
``free``, and hands the top of its heap back above a trim threshold: the next step gets new pages,
and the kernel zeroes each one at its first touch. NumPy also advises huge pages for arrays of 4 MB
and more, and where the kernel defragments memory for them on a fault (``defrag = madvise``, common
on VMs), each 2 MB page can cost milliseconds. Measured on a quiet 2-core VM, a training step at
batch 8 without and with this policy (``SCRATCHNET_KEEP_MEMORY=0 python benchmarks/zoo.py --models
alexnet,vgg16,resnet50,efficientnet_b0 --batches 8 --rounds 1 --orders scratchnet``, then without the
variable): AlexNet 355 vs 328 ms, VGG-16 3064 vs 2810, ResNet-50 1475 vs 1360, EfficientNet-B0 555
vs 436 (docs/core.md, Memory).

So, with glibc (Linux), ``apply()`` (``import scratchnet`` runs it) sets two of malloc's options at
run time, whatever was imported first:

* ``M_MMAP_MAX = 0``: blocks come from the heap, which reuses freed memory, not from one ``mmap``
  each (a worker thread's heap still maps a block too big for it);
* ``M_TRIM_THRESHOLD = -1``: the heap keeps what is freed (``release_memory()`` hands it back).

The cost is the caching allocator's: the process's resident memory stays at its largest step's.
An environment that tunes malloc itself (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``) or ``SCRATCHNET_KEEP_MEMORY=0`` leaves malloc as it is;
so does any other C library (macOS, Windows, musl): ``policy()`` says which.
"""
import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")

_policy = "not applied"


def _glibc():
    """The process's C library if it is glibc (its malloc takes mallopt), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library already loaded
    except OSError:  # pragma: no cover - a static interpreter
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def apply():
    """Keep freed memory for reuse (see the module docstring). Returns policy()."""
    global _policy
    libc = _glibc()
    if os.environ.get("SCRATCHNET_KEEP_MEMORY", "1").strip() == "0":
        _policy = "off: SCRATCHNET_KEEP_MEMORY=0"
    elif any(name in os.environ for name in MALLOC_ENVIRONMENT):
        tuned = ", ".join(name for name in MALLOC_ENVIRONMENT if name in os.environ)
        _policy = f"off: the environment tunes malloc ({tuned})"
    elif libc is None:
        _policy = f"off: the C library is not glibc ({platform.system()} {platform.libc_ver()[0] or '?'})"
    elif libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, -1) != 1:  # 1: done
        _policy = "off: glibc refused mallopt"  # pragma: no cover - no glibc refuses these two
    else:
        _policy = "on: freed memory is kept for reuse (glibc M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)"
    return _policy


def policy():
    """What apply() did, in words: "on: ..." or "off: <why>"."""
    return _policy


def release_memory():
    """Hand the memory malloc keeps free back to the kernel (glibc's malloc_trim), e.g. after training,
    before a long pause. Returns True if any was handed back. Arrays still in use are untouched."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False

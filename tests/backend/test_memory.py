"""The memory policy: with glibc, memory a step frees is reused by the next step instead of being mapped
afresh (page faults counted, not timed), whatever the script imported first.

Each case runs in a fresh process: malloc's options are process-wide.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

from scratchnet.backend import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates, touches and frees a 100 MB array three times; prints the minor page faults of each round
PROBE = """
import json, resource, sys
if sys.argv[1] == "numpy-first":
    import numpy
import scratchnet, numpy
from scratchnet.backend import memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

rounds = []
for _ in range(3):
    before = faults()
    a = numpy.ones(25 << 20, numpy.float32)
    del a
    rounds.append(faults() - before)
released = memory.release_memory()
print(json.dumps(dict(policy=memory.policy(), faults=rounds, released=released)))
"""


def probe(order, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environment.pop("SCRATCHNET_KEEP_MEMORY", None)
    done = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True, check=True,
                          env={**environment, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the policy sets glibc's malloc options; other C libraries keep theirs")
@pytest.mark.parametrize("order", ["scratchnet-first", "numpy-first"])
def test_freed_memory_is_reused_without_new_pages(order):
    result = probe(order)
    assert result["policy"].startswith("on"), result
    first, *later = result["faults"]
    assert first > 40  # 100 MB touched for the first time: new pages (25,600 of 4 KB, or 50 huge ones) ...
    assert max(later) < 10, result  # ... and the same memory again: (almost) none
    assert result["released"] is True  # release_memory hands the kept 100 MB back


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_without_the_policy_every_round_maps_new_pages():
    """The probe can fail: with the policy off, each round faults its pages in again."""
    result = probe("scratchnet-first", SCRATCHNET_KEEP_MEMORY="0")
    assert result["policy"] == "off: SCRATCHNET_KEEP_MEMORY=0"
    assert min(result["faults"]) > 40  # at least 50 huge pages (100 MB / 2 MB), or 25,600 small ones


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_an_environment_that_tunes_malloc_is_left_alone():
    result = probe("scratchnet-first", MALLOC_ARENA_MAX="2", MALLOC_TRIM_THRESHOLD_="1000000")
    assert result["policy"] == "off: the environment tunes malloc (MALLOC_TRIM_THRESHOLD_)"


def test_policy_says_what_was_done():
    assert memory.policy().startswith(("on: ", "off: "))
    assert memory.release_memory() in (True, False)

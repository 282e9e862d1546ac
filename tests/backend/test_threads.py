"""The one thread policy: sn.set_num_threads / get_num_threads reach BLAS, OpenMP and Numba alike, whatever
the user imported first (not timed).

How fast each kernel runs inside a training loop against alone is measured by
benchmarks/threads.py, not here.
"""
import json
import os
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

import scratchnet as sn
from scratchnet.backend.threads import THREAD_ENVIRONMENT


def pool_threads(api="blas"):
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == api]


@pytest.fixture
def restore_threads():
    before = sn.get_num_threads()
    yield
    sn.set_num_threads(before)


def test_set_num_threads_reaches_blas_openmp_and_numba(restore_threads):
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        sn.set_num_threads(n)
        assert sn.get_num_threads() == n
        assert numba.get_num_threads() == n
        assert pool_threads("blas") and set(pool_threads("blas")) == {n}
        assert set(pool_threads("openmp")) <= {n}  # torch's libgomp, Numba's OpenMP layer


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_non_positive_ints(bad, restore_threads):
    with pytest.raises(ValueError, match="positive int"):
        sn.set_num_threads(bad)


def test_more_threads_than_numbas_pool_is_a_clear_error(restore_threads):
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        sn.set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)


PROBE = """
import ctypes, json, os, sys
order = sys.argv[1]
if order == "numpy-first":  # NumPy's BLAS loaded and its thread pool running, Numba imported
    import numba, numpy
    numpy.ones((64, 64)) @ numpy.ones((64, 64))
elif order == "torch-first":  # torch's own OpenMP runtime (libgomp) loaded, and NumPy's BLAS
    import torch
threads_before = set(os.listdir("/proc/self/task"))
import scratchnet as sn, numba
from threadpoolctl import threadpool_info
pools = threadpool_info()
print(json.dumps({
    "n": sn.get_num_threads(), "numba": numba.get_num_threads(),
    "blas": [p["num_threads"] for p in pools if p["user_api"] == "blas"],
    "openmp": [p["num_threads"] for p in pools if p["user_api"] == "openmp"],
    "openblas_timeout": [ctypes.CDLL(p["filepath"]).openblas_thread_timeout() for p in pools
                         if p["internal_api"] == "openblas" and p.get("threading_layer") == "pthreads"],
    "threads_ended": sorted(threads_before - set(os.listdir("/proc/self/task"))),
    "env": {k: os.environ.get(k) for k in sn.backend.THREAD_ENVIRONMENT}}))
"""

ORDERS = ["scratchnet-first", "numpy-first", "torch-first"]


def probe(order, **env):
    """The thread pools of a fresh process that imported `order`'s libraries, then scratchnet."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                              "SCRATCHNET_NUM_THREADS",
                                                              "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                                              *sn.backend.THREAD_ENVIRONMENT)}
    done = subprocess.run([sys.executable, "-c", PROBE, order], env=clean | env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_policy(got, n):
    """Every pool at n threads (BLAS, OpenMP, Numba: none oversubscribes the cores), every OpenBLAS
    pool with the policy's idle timeout (threads that sleep almost at once)."""
    assert got["n"] == n and got["numba"] == n
    assert got["blas"] and set(got["blas"]) == {n}
    assert set(got["openmp"]) <= {n}
    timeout = int(THREAD_ENVIRONMENT["OPENBLAS_THREAD_TIMEOUT"])
    assert got["openblas_timeout"] and set(got["openblas_timeout"]) == {timeout}


@pytest.mark.parametrize("order", ORDERS)
def test_the_default_policy_is_in_force_whatever_was_imported_first(order):
    """A fresh process: every pool has the default count, and idle threads are told to sleep."""
    got = probe(order)
    assert_policy(got, len(os.sched_getaffinity(0)))
    assert got["env"] == sn.backend.THREAD_ENVIRONMENT


@pytest.mark.parametrize("order", ORDERS)
def test_scratchnet_num_threads_reaches_every_pool_whatever_was_imported_first(order):
    got = probe(order, SCRATCHNET_NUM_THREADS="1")
    assert_policy(got, 1)
    if order == "torch-first":
        assert got["openmp"], "torch's OpenMP runtime should be among the pools"


def test_an_openblas_pool_started_before_scratchnet_restarts_with_the_policy():
    """numpy first: its OpenBLAS threads started spinning by their own default (0.1 s); importing
    scratchnet ends them, and the next BLAS call starts new ones with the policy's timeout."""
    got = probe("numpy-first")
    if len(os.sched_getaffinity(0)) > 1:  # one CPU: OpenBLAS runs on the calling thread, no pool to restart
        assert got["threads_ended"], "NumPy's OpenBLAS threads should have been restarted"
    assert probe("scratchnet-first")["threads_ended"] == []  # loaded after the environment: nothing to redo


def test_user_exported_values_win():
    got = probe("scratchnet-first", OMP_WAIT_POLICY="ACTIVE", OPENBLAS_THREAD_TIMEOUT="6")
    assert got["env"]["OMP_WAIT_POLICY"] == "ACTIVE"  # an exported value is the user's choice
    assert set(got["openblas_timeout"]) == {6}
    assert set(probe("numpy-first", OPENBLAS_THREAD_TIMEOUT="6")["openblas_timeout"]) == {6}


def test_train_cli_threads_option(restore_threads, capsys):
    from scratchnet.train import main
    assert main(["lenet", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    # set before anything else is read: the unknown model fails later, with the count already applied
    main(["no_such_model", "--threads", "1"])
    assert sn.get_num_threads() == 1 and numba.get_num_threads() == 1 and set(pool_threads("blas")) == {1}


def test_study_cli_threads_option(restore_threads, capsys):
    from scratchnet.study import main
    assert main(["--threads", "0", "cost"]) == 2
    assert "positive int" in capsys.readouterr().err


def test_mpi_ranks_on_one_machine_share_its_cpus():
    got = probe("scratchnet-first", OMPI_COMM_WORLD_LOCAL_SIZE="2")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert got["n"] == share and got["numba"] == share and set(got["blas"]) == {share}

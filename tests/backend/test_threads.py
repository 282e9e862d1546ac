"""The one thread policy: sn.set_num_threads / get_num_threads reach BLAS and Numba alike (not timed).

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


def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture
def restore_threads():
    before = sn.get_num_threads()
    yield
    sn.set_num_threads(before)


def test_set_num_threads_reaches_blas_and_numba(restore_threads):
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        sn.set_num_threads(n)
        assert sn.get_num_threads() == n
        assert numba.get_num_threads() == n
        assert blas_threads() and set(blas_threads()) == {n}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_non_positive_ints(bad, restore_threads):
    with pytest.raises(ValueError, match="positive int"):
        sn.set_num_threads(bad)


def test_more_threads_than_numbas_pool_is_a_clear_error(restore_threads):
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        sn.set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)


PROBE = """
import json, os, sys
if sys.argv[1:] == ["numpy-first"]:
    import numba, numpy
import scratchnet as sn, numba
from threadpoolctl import threadpool_info
numba.get_num_threads()  # starts Numba's pool
print(json.dumps({"n": sn.get_num_threads(), "numba": numba.get_num_threads(),
                  "blas": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
                  "env": {k: os.environ.get(k) for k in sn.backend.THREAD_ENVIRONMENT}}))
"""


def probe(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                              "SCRATCHNET_NUM_THREADS",
                                                              "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                                              *sn.backend.THREAD_ENVIRONMENT)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=clean | env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_sets_one_policy_for_the_process():
    """A fresh process: every pool has the default count, and idle threads are told to sleep."""
    got = probe()
    cpus = len(os.sched_getaffinity(0))
    assert got["n"] == cpus and got["numba"] == cpus and set(got["blas"]) == {cpus}
    assert got["env"] == sn.backend.THREAD_ENVIRONMENT


def test_scratchnet_num_threads_sizes_every_pool_and_user_values_win():
    got = probe(SCRATCHNET_NUM_THREADS="1", OMP_WAIT_POLICY="ACTIVE")
    assert got["n"] == 1 and got["numba"] == 1 and set(got["blas"]) == {1}
    assert got["env"]["OMP_WAIT_POLICY"] == "ACTIVE"  # an exported value is the user's choice


def test_scratchnet_num_threads_applies_when_numpy_and_numba_were_imported_first():
    got = probe("numpy-first", SCRATCHNET_NUM_THREADS="1")
    assert got["n"] == 1 and got["numba"] == 1 and set(got["blas"]) == {1}


def test_train_cli_threads_option(restore_threads, capsys):
    from scratchnet.train import main
    assert main(["lenet", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    # set before anything else is read: the unknown model fails later, with the count already applied
    main(["no_such_model", "--threads", "1"])
    assert sn.get_num_threads() == 1 and numba.get_num_threads() == 1 and set(blas_threads()) == {1}


def test_study_cli_threads_option(restore_threads, capsys):
    from scratchnet.study import main
    assert main(["--threads", "0", "cost"]) == 2
    assert "positive int" in capsys.readouterr().err


def test_mpi_ranks_on_one_machine_share_its_cpus():
    got = probe(OMPI_COMM_WORLD_LOCAL_SIZE="2")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert got["n"] == share and got["numba"] == share and set(got["blas"]) == {share}

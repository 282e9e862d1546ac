"""benchmarks/depthwise.py's arguments: out-of-range counts and a missing PyTorch interpreter are one argparse
error (exit 2), before any child process starts."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import depthwise  # noqa: E402


@pytest.mark.parametrize("argv, says", [(["--rounds", "0"], "--rounds must be at least 1, got 0"),
                                        (["--repeat", "-1"], "--repeat must be at least 1, got -1"),
                                        (["--threads", "-2"], "--threads must be 0 (each library's default) or more"),
                                        (["--torch-python", "/no/such/python"],
                                         "--torch-python /no/such/python does not exist")])
def test_bad_arguments_are_one_error(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        depthwise.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and "Traceback" not in err

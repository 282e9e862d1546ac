"""What every ``python -m scratchnet.<tool>`` shares: one error path, and numeric options checked as
they are parsed.

    from ..cli import ArgumentParser, UsageError, command, integer, real

    def build_parser():
        p = ArgumentParser(prog="python -m scratchnet.mytool")
        p.add_argument("--steps", type=integer(0), default=100)      # an int >= 0, else one line, exit 2
        p.add_argument("--lr", type=real(above=0), default=0.1)      # a finite number > 0
        return p

    @command
    def main(argv=None):
        args = build_parser().parse_args(argv)
        ...                                          # raise UsageError("--steps ...: what to do") on bad input
        return 0

(a tool whose main is just that, parse then ``run(args)``, writes ``main = command_of(build_parser, run)``),
and the tool's ``__main__.py`` is ``sys.exit(main())``. The decorator is the error path: a bad
argument, a missing or damaged file, a device this machine lacks -- ``UsageError`` and the error
classes the layers below raise for bad input (``ERRORS``) -- become one line on stderr,
``error: <what is wrong and how to fix it>``, and exit code 2, never a traceback. Anything else is a
bug and keeps its traceback. Under ``mpirun`` every rank gets the same arguments and fails the same
way, so only rank 0 prints (a tool that knows an error is one rank's alone passes ``every_rank``).
"""
import argparse
import functools
import math
import os
import sys
import time

from .backend import DeviceError
from .data import DatasetError
from .distributed.comm import DistributedError, launch_rank
from .nn.module import StateDictError
from .nn.serialization import WeightsFileError
from .runlock import RunFolderLocked

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input to a command (an argument, a file, a device): one line on stderr, exit code 2."""


# What the layers below raise for bad input, each with a message that already says what to do.
ERRORS = (UsageError, DatasetError, DeviceError, DistributedError, RunFolderLocked, StateDictError,
          WeightsFileError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (an unknown option, a bad value) raise UsageError: one line,
    naming the option, instead of the usage text. Subcommands' parsers are of this class too."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def describe(exc):
    """One line for an error: its message, or for an OS error the file and what went wrong with it."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # a message must stay one line


SILENT_RANK_GRACE_S = 10


def report(exc, every_rank=False):
    """Print ``error: ...`` (under mpirun: rank 0 only, unless ``every_rank``, then naming the rank)."""
    rank = launch_rank()
    if rank not in (None, 0) and not every_rank:
        # mpirun ends the whole job when the first rank exits with an error: a silent rank that got
        # there first would cut rank 0 off before its line. Rank 0 meets the same error at the same
        # point, prints and exits, and mpirun then stops this rank during the wait.
        time.sleep(SILENT_RANK_GRACE_S)
        return
    where = f"rank {rank}: " if rank not in (None, 0) else ""
    print(f"error: {where}{describe(exc)}", file=sys.stderr, flush=True)


def command(main):
    """Decorate a tool's ``main(argv=None) -> exit code`` with the one error path (see the module doc)."""
    @functools.wraps(main)
    def run(argv=None):
        if argv is not None:  # paths are welcome in a call from Python
            argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
        try:
            return main(argv)
        except ERRORS as exc:
            report(exc)
            return EXIT_USAGE
        except OSError as exc:  # a file problem (unreadable, disk full, a folder removed)
            report(exc)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    run.is_scratchnet_command = True  # tests/test_entry_points.py checks every tool's main has it
    return run


def command_of(build_parser, run):
    """The ``main`` of a tool that is one ``run(args)``: parse ``argv`` with ``build_parser()``, run, exit 0
    (through ``command``'s error path)."""
    @command
    def main(argv=None):
        run(build_parser().parse_args(argv))
        return 0
    return main


# --------------------------------------------------------------------------- numeric options


def integer(minimum=None):
    """An argparse ``type``: an int (>= ``minimum``), refused in one line naming the option."""
    need = "an int" if minimum is None else "a positive int" if minimum == 1 else f"an int >= {minimum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be {need}, got {value}")
        return value
    parse.__name__ = need
    return parse


def real(minimum=None, above=None):
    """An argparse ``type``: a finite number (>= ``minimum``, or > ``above``); nan and inf are refused."""
    need = ("a finite number" + (f" >= {minimum:g}" if minimum is not None else "")
            + (f" > {above:g}" if above is not None else ""))

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum) or \
                (above is not None and value <= above):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value
    parse.__name__ = need
    return parse

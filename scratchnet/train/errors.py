"""How a training run ends other than done: the exit codes and the exceptions that carry them.

Bad input is the shared error path of every command (``scratchnet/cli.py``): ``UsageError``, one line
on stderr and exit code 2."""
import signal

from ..cli import EXIT_USAGE, UsageError  # noqa: F401 (re-exported: the train package's names)

EXIT_NAN = 1
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: exit code 1."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written; exit code 130 or 143."""

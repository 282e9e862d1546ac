"""How a training run ends other than done: the exit codes and the exceptions that carry them."""
import signal

EXIT_NAN, EXIT_USAGE = 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class UsageError(Exception):
    """Bad command-line input or a file problem: printed as one line, exit code 2."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: exit code 1."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written; exit code 130 or 143."""

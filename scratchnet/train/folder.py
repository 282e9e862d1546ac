"""The run folder (``--out``): made and checked, locked while a run uses it, and written atomically
(a reader never sees half a file) with the user's normal file mode."""
import json
import os
import sys

from ..nn.serialization import atomic_write
from ..runlock import RunFolderLocked, RunLock, stale_message
from .errors import UsageError


def prepare_out(out):
    """The run folder, made if needed: a usable (writable) folder, or one line and exit 2."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; pass a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable; pass a folder you can write to")
    return out


def lock_run_folder(out, held):
    """Take the run folder's lock (scratchnet/runlock.py); ``held`` collects it for main() to release."""
    lock = RunLock(out)
    try:
        lock.acquire()
    except RunFolderLocked as exc:
        raise UsageError(f"--out {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot take the run lock ({exc.strerror})") from None
    held.append(lock)
    note = stale_message(lock)
    if note:
        print(note, file=sys.stderr, flush=True)
    return lock


def write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def plot_curves(path, metrics, task):
    """curves.png: the train and test loss per epoch, beside the task's scores (``task.plot``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax_loss.plot(epochs, [m["test_loss"] for m in metrics], "o-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    task.plot(ax_score, metrics)
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)

"""tools/mutate_kernels.py's list of equivalent mutants stays true to the sources: every entry, keyed by its
line's text, still names a mutant the tool plants (an entry whose line changed would silently stop counting)."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import mutate_kernels  # noqa: E402 (tools/ is not a package)


def test_every_equivalent_mutant_is_still_planted():
    planted = {(key.split(":")[0], before, *key.split(":")[2:]) for key, _, _, before, _ in
               mutate_kernels.mutants(mutate_kernels.FILES)}
    for (name, before), mutants in mutate_kernels.EQUIVALENT.items():
        for (operator, occurrence), reason in mutants.items():
            assert (name, before, operator, str(occurrence)) in planted, (
                f"EQUIVALENT names no mutant the tool plants: {name} {operator!r} #{occurrence} of {before!r} "
                f"({reason})")

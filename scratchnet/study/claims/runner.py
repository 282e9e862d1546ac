"""``claims(...)``: run the chosen claims at a size, print the table, write each one's JSON and figure, and
regenerate the page from every JSON there is."""
from pathlib import Path

from .core import DATASETS, SEEDS, SIZES, print_table, read_results, run_claim
from .page import write_page
from .registry import CLAIMS, list_claims
from .training import cifar_missing

DEFAULT_OUT = Path("benchmarks/results")
DEFAULT_DOCS = Path("docs/claims.md")


def claims(names=None, size="quick", seeds=None, datasets=DATASETS, data_dir=None, out=DEFAULT_OUT, docs=DEFAULT_DOCS,
           first_seed=0):
    """Run ``names`` (default: every claim) at ``size`` ("tiny", "quick" or "full") with ``seeds`` seeds (default:
    3 for quick, 5 for full, 2 for tiny) from ``first_seed``, on ``datasets`` (CIFAR-10 is skipped with a message
    when its files are not here); write OUT/claims/NAME.json and the figures, print the table and, unless ``docs``
    is None, regenerate that page from every claim's JSON in OUT/claims. Returns the JSON records of this run."""
    if size not in SIZES:
        raise ValueError(f"claims: size must be one of {', '.join(SIZES)}, got {size!r}")
    unknown = [name for name in names or [] if name not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claim {', '.join(map(repr, unknown))}; the claims are: {', '.join(list_claims())}")
    bad = [d for d in datasets if d not in DATASETS]
    if bad:
        raise ValueError(f"claims: unknown dataset {', '.join(bad)}; choose from {', '.join(DATASETS)}")
    count = SEEDS[size] if seeds is None else int(seeds)
    if count < 1:
        raise ValueError(f"claims: --seeds must be at least 1, got {count}")
    seeds = tuple(range(first_seed, first_seed + count))
    missing = {"cifar10": cifar_missing(data_dir)} if "cifar10" in datasets else {}
    if missing.get("cifar10"):
        print(missing["cifar10"], flush=True)
    records = []
    for name in names or list_claims():
        print(f"claim {name} ({size}, {CLAIMS[name].kind})", flush=True)
        records.append(run_claim(CLAIMS[name], size, seeds, datasets, data_dir, out,
                                 lambda dataset: missing.get(dataset)))
        print(f"  {records[-1]['seconds']:.1f} s ({records[-1]['cpu_seconds']:.1f} s of CPU)", flush=True)
    print()
    print_table(records)
    if docs is not None:
        write_page(read_results(out, list_claims()), Path(docs), Path(out))
        print(f"wrote {docs}")
    return records

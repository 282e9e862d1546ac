"""What every claim is made of, and how a run of claims goes: the ``Claim`` record, the sizes (budgets),
the statistics over seeds, the verdict rules they share, and the JSON each run writes.

A claim is one sentence of a paper that the study notes lean on, the experiment that checks it, the outcome
the paper predicts and the rule that turns the measurement into a verdict. Cost claims are exact (a closed
form, ``sn.summary``'s count and the paper's table, side by side); training claims are measured over several
seeds at a CPU budget and reported with their spread, never tuned until they pass.
"""
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIZES = ("tiny", "quick", "full")  # tiny: the tests; quick: every claim in about 15 minutes on 2 cores
SEEDS = {"tiny": 2, "quick": 3, "full": 5}
DATASETS = ("fashion-mnist", "cifar10")

# the verdicts, by kind of claim
EXACT, DOES_NOT_HOLD = "exact", "does not hold"  # cost: the statement and every printed number reproduced
SUPPORTED, NOT_SUPPORTED = "supported", "not supported at this budget"  # training
SKIPPED = "skipped"  # the data is not here (CIFAR-10)


@dataclass(frozen=True)
class Claim:
    """One claim of the study notes.

    ``measure(context)`` runs the experiment and returns an ``Outcome``; ``budgets`` maps each size to the
    numbers the experiment reads from ``context.budget`` (steps, images, ...).
    """
    name: str
    statement: str
    source: str
    kind: str  # "cost", "training" or "erratum"
    experiment: str
    expected: str
    rule: str
    measure: object
    budgets: dict = field(default_factory=dict)

    @property
    def datasets(self):
        """A training claim runs on every dataset of the study; a cost claim or an erratum needs none."""
        return DATASETS if self.kind == "training" else ()


@dataclass
class Context:
    """What one claim's experiment is given: the size and its budget, the seeds, the data and where figures go."""
    size: str
    seeds: tuple
    budget: dict
    dataset: str = None
    data_dir: str = None
    out: Path = Path("runs/study")
    name: str = ""

    def figure_path(self):
        suffix = f"-{self.dataset}" if self.dataset else ""
        return self.out / "claims" / f"{self.name}{suffix}.png"


@dataclass
class Outcome:
    """What a claim's experiment found: one line for the table (``measured``), the verdict, the rows behind it
    (a cost table, or one row per arm with its per-seed values), errata it found, its figure."""
    measured: str
    verdict: str
    rows: list = field(default_factory=list)
    errata: list = field(default_factory=list)
    figure: str = None
    notes: str = ""


# --------------------------------------------------------------------------- statistics over seeds


def mean_sd(values):
    """(mean, sample standard deviation) of per-seed values; sd 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def spread(values, scale=1.0, digits=1, unit=""):
    """"mean ± sd" of per-seed values, times ``scale`` (100 for percentages)."""
    mean, sd = mean_sd(values)
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}{unit}"


def arm_row(arm, values, **extra):
    """A training claim's row: an arm (e.g. "ReLU") with its per-seed values and their mean and sd."""
    mean, sd = mean_sd(values)
    return dict(arm=arm, values=[float(v) for v in values], mean=mean, sd=sd, **extra)


def better_everywhere(better, worse, lower_is_better=True):
    """The shared rule of the comparisons: ``better`` beats ``worse`` in every seed (paired: same seed, same
    initialisation where the shapes allow, same batches) and the difference of the means exceeds the larger
    of the two standard deviations. Returns (holds, the numbers it rests on in words)."""
    better, worse = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    sign = 1.0 if lower_is_better else -1.0
    gaps = sign * (worse - better)
    (mean_b, sd_b), (mean_w, sd_w) = mean_sd(better), mean_sd(worse)
    margin = sign * (mean_w - mean_b)
    holds = bool(np.all(gaps > 0) and margin > max(sd_b, sd_w))
    detail = (f"better in {int(np.sum(gaps > 0))} of {len(gaps)} seeds; difference of the means {margin:.4g} "
              f"against sd {max(sd_b, sd_w):.4g}")
    return holds, detail


# --------------------------------------------------------------------------- cost tables


def cost_row(item, paper, closed_form, summary=None, unit="", agrees=None, rounding=None):
    """A cost claim's row. ``agrees``: the project's number reproduces the paper's to the paper's printed
    precision (``rounding(value) == paper``) when the paper gives one; None where it gives none."""
    ours = summary if summary is not None else closed_form
    if agrees is None and paper is not None and rounding is not None:
        agrees = rounding(ours) == paper
    if summary is not None and closed_form is not None and summary != closed_form:
        agrees = False  # the count and the closed form must meet exactly
    return dict(item=item, paper=paper, closed_form=closed_form, summary=summary, unit=unit, agrees=agrees)


def cost_verdict(rows, holds=True):
    """"exact" when the statement holds and every row reproduces the paper's number (and every summary count
    equals its closed form); "holds; N of the paper's numbers differ" when only table entries do not; else
    "does not hold"."""
    if not holds:
        return DOES_NOT_HOLD
    differ = sum(row["agrees"] is False for row in rows)
    return EXACT if not differ else f"holds; {differ} of the paper's numbers differ"


def millions(digits=1):
    """A cost row's rounding: the value in millions to ``digits`` decimals, as the paper prints it."""
    return lambda value: round(value / 1e6, digits)


def billions(digits=1):
    """A cost row's rounding: the value in billions to ``digits`` decimals, as the paper prints it."""
    return lambda value: round(value / 1e9, digits)


def erratum(statement, source, measured, command):
    return dict(statement=statement, source=source, measured=measured, command=command)


# --------------------------------------------------------------------------- a run of claims


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def result_path(out, name):
    return Path(out) / "claims" / f"{name}.json"


def run_claim(claim, size, seeds, datasets, data_dir, out, available):
    """Run one claim at ``size`` on each of ``datasets`` it uses; returns the JSON record (also written to
    OUT/claims/NAME.json). ``available(dataset)`` is None when the data is here, else why it is not."""
    started, cpu_started, load_before = time.perf_counter(), time.process_time(), load_average()
    budget = claim.budgets.get(size, {})
    results = {}
    for dataset in (claim.datasets and [d for d in datasets if d in claim.datasets]) or [None]:
        missing = available(dataset) if dataset else None
        if missing:
            results[dataset] = vars(Outcome(measured=missing, verdict=SKIPPED))
            print(f"  {dataset}: skipped (not here)", flush=True)
            continue
        context = Context(size, tuple(seeds), budget, dataset, data_dir, Path(out), claim.name)
        outcome = claim.measure(context)
        results[dataset or "exact"] = vars(outcome)
    record = dict(name=claim.name, statement=claim.statement, source=claim.source, kind=claim.kind,
                  experiment=claim.experiment, expected=claim.expected, rule=claim.rule, size=size,
                  seeds=list(seeds) if claim.kind == "training" else [], budget=budget, results=results,
                  seconds=round(time.perf_counter() - started, 1),
                  cpu_seconds=round(time.process_time() - cpu_started, 1),  # ~ the wall time on a quiet machine
                  load_average=[load_before, load_average()],
                  command=f"python -m scratchnet.study claims {claim.name} --{size}")
    path = result_path(out, claim.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    return record


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def read_results(out, names):
    """The JSON records of ``names`` found in OUT/claims (the ones never run are left out)."""
    records = []
    for name in names:
        path = result_path(out, name)
        if path.is_file():
            records.append(json.loads(path.read_text()))
    return records


def table_rows(records):
    """(claim, dataset, expected, measured, verdict) per claim and dataset, for the printed table and the page."""
    rows = []
    for record in records:
        for dataset, outcome in record["results"].items():
            label = record["name"] if dataset == "exact" else f"{record['name']} [{dataset}]"
            rows.append((label, record["expected"], outcome["measured"], outcome["verdict"]))
    return rows


def print_table(records):
    rows = table_rows(records)
    widths = [max(len(h), *(min(len(r[i]), 60) for r in rows)) if rows else len(h)
              for i, h in enumerate(("claim", "expected", "measured (mean ± sd over seeds)", "verdict"))]
    header = ("claim", "expected", "measured (mean ± sd over seeds)", "verdict")

    def clip(text, width):
        return text if len(text) <= width else text[:width - 1] + "…"

    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(clip(c, w).ljust(w) for c, w in zip(row, widths)).rstrip())


def finite(value):
    return value is not None and math.isfinite(value)

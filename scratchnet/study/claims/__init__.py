"""The study notes' claims, each checked by one command: ``python -m scratchnet.study claims [NAME ...]``.

One module per claim (``vgg_3x3_stacks``, ``relu_vs_tanh``, ...), each holding a ``CLAIM``: the statement with
its paper and section, the experiment (``measure``), the expected outcome, the verdict rule and the budgets of
the sizes. ``core`` holds what they are made of (records, statistics over seeds, verdict rules, JSON),
``training`` what the training claims share (data, SGD runs, evaluation, figures), ``registry`` the list,
``runner`` the command's work and ``page`` the generator of docs/claims.md. This file only re-exports.
"""
from .core import DATASETS, SIZES, Claim, Context, Outcome
from .registry import CLAIMS, list_claims
from .runner import DEFAULT_DOCS, DEFAULT_OUT, claims

__all__ = ["CLAIMS", "DATASETS", "DEFAULT_DOCS", "DEFAULT_OUT", "SIZES", "Claim", "Context", "Outcome", "claims",
           "list_claims"]

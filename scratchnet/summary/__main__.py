"""``python -m scratchnet.summary MODEL``: the command line of ``scratchnet.summary.main``.

The command lives here, apart from the library, so that ``import scratchnet``
(which re-exports ``summary``) has not already run it when ``-m`` does.
"""
import sys

from . import main

sys.exit(main())

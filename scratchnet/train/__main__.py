"""``python -m scratchnet.train MODEL [options]``: the command line (cli.py) as a program."""
import sys

from .cli import main

sys.exit(main())

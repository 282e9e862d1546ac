"""``scratchnet.nn.functional`` (import as F): the functional ops, where torch users look for them."""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401

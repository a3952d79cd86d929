"""Imports every built-in attack module so their ``@register`` decorators run."""

from . import reference_free  # noqa: F401
from . import lira  # noqa: F401
from . import sequence_lira  # noqa: F401
from . import trajectory  # noqa: F401
from . import learned  # noqa: F401
from . import sequence_variants  # noqa: F401

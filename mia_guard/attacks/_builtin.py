"""Imports every built-in attack module so their ``@register`` decorators run."""

from . import reference_free  # noqa: F401

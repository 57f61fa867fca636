"""The ``localgate`` command: parses, calls services, prints tables or --json.

Commands live in the modules of this package, grouped by what they touch; each
registers on the one click group, ``main``, when imported here.
"""

from localgate.cli import gateway, money, serve  # noqa: F401  (registers the commands)
from localgate.cli.base import main

__all__ = ["main"]

"""PyInstaller hook for stripe: it resolves most of its modules lazily.

``stripe.__getattr__`` and the service classes import their modules with
``importlib.import_module`` on first use, which analysis cannot follow; collect
them all, except ``stripe.params`` (TypedDicts imported for type checkers only,
about half the package). The CA bundle in ``stripe/data`` is needed for TLS.

This hook runs only when something in localgate imports stripe.
"""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules(
    "stripe", filter=lambda name: not name.startswith("stripe.params")
)
datas = collect_data_files("stripe")

"""The baselines of Table 1, each a small single-file model registered by name.

Importing this package imports every module in it, which registers them.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

"""The op library: importing this package registers every op module in it (see degrade/ops/opdef.py)."""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

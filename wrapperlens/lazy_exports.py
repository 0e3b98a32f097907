"""A package's public names, imported from their submodule on first use (PEP 562).

A package `__init__` lists its public names by the submodule that defines each one:

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {
        # runs: run directories and their provenance
        "runs": ("RunDir", "run_id"),
    })

`import package` then imports no submodule: `package.RunDir` (or `from package import RunDir`)
imports `package.runs` the first time it is read. Light entry points (the command line's
argument parsing) stay light, although the names they do not use need torch and TransformerLens.

Only the standard library is imported here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """The `__all__`, `__getattr__` and `__dir__` of a package that exports names lazily.

    Args:
        package: the package's `__name__`.
        exports: submodule (relative to `package`, e.g. "runs" or "experiments.pcfg") → the
            names it defines that the package exports, in the order `__all__` lists them.

    Returns:
        `__all__` (every exported name), a module `__getattr__` that imports a name's submodule
        on first access and keeps the value in the package's namespace, and a `__dir__` that
        lists the exported names beside what the package already holds.

    Raises:
        ValueError: a name is listed under two submodules (the package would export one of
            them silently).
    """
    module_of: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in module_of:
                raise ValueError(
                    f"{package}: {name!r} is exported from both {module_of[name]!r} and "
                    f"{module!r}"
                )
            module_of[name] = module

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{module_of[name]}")
        if not hasattr(module, name):
            raise AttributeError(f"{package} exports {name!r} from {module.__name__}, which has "
                                 "no such name (update the package's export table)")
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return list(module_of), __getattr__, __dir__

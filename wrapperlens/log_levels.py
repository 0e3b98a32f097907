"""Keep other libraries' log levels as they were when TransformerLens is imported.

Importing TransformerLens sets the `transformers` logger to ERROR for the whole process
(`transformer_lens/model_bridge/sources/transformers.py` does so at import time). That hides,
among much else, the report `from_pretrained` logs when a checkpoint lacks a weight and the
weight is filled with random values. A library should not change another library's logging, so
importing wrapperlens (or tinystories) installs `TransformerLensImportGuard`: from then on, every
import of a `transformer_lens` module runs inside `kept_log_levels`, which puts back the level of
every logger that existed before (TransformerLens's own loggers excepted).

The guard is an import hook rather than an `import transformer_lens` in the package `__init__`
because importing TransformerLens takes seconds, and light entry points (the CLI's argument
parsing) must not pay for it. It cannot undo an import of TransformerLens that happened before
wrapperlens was imported.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["kept_log_levels", "TransformerLensImportGuard", "install_transformer_lens_guard"]

_GUARDED = "transformer_lens"


def _levels() -> dict[str, int]:
    loggers = logging.root.manager.loggerDict.items()
    levels = {name: lg.level for name, lg in list(loggers) if isinstance(lg, logging.Logger)}
    levels[""] = logging.root.level
    return levels


@contextlib.contextmanager
def kept_log_levels(own_prefix: str | None = None) -> Iterator[None]:
    """Restore, on exit, the level of every logger that existed on entry.

    Args:
        own_prefix: Loggers named this or `own_prefix.*` are left as the body set them (a
            library may configure its own loggers).
    """
    before = _levels()
    try:
        yield
    finally:
        for name, level in before.items():
            if own_prefix and (name == own_prefix or name.startswith(own_prefix + ".")):
                continue
            logger = logging.getLogger(name) if name else logging.root
            if logger.level != level:  # setLevel clears every logger's cache: only when needed
                logger.setLevel(level)


class _LevelKeepingLoader:
    """Wraps a module loader so that executing the module keeps other loggers' levels."""

    _local = threading.local()

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """Delegate to the wrapped loader."""
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run the module; the outermost guarded import restores the levels."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            if depth:
                self._loader.exec_module(module)
            else:
                # `transformers` sets its library logger's level (honouring
                # TRANSFORMERS_VERBOSITY) on first import; importing it before the snapshot makes
                # that default what is restored. TransformerLens imports it anyway.
                with contextlib.suppress(ImportError):
                    import transformers  # noqa: F401

                with kept_log_levels(own_prefix=_GUARDED):
                    self._loader.exec_module(module)
        finally:
            self._local.depth = depth

    def __getattr__(self, name: str) -> Any:
        # get_source, get_resource_reader, is_package, ...: the wrapped loader's own.
        return getattr(self._loader, name)


class TransformerLensImportGuard:
    """A `sys.meta_path` finder that wraps the loader of every `transformer_lens` module."""

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give, with a level-keeping loader; None for other names."""
        if fullname != _GUARDED and not fullname.startswith(_GUARDED + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, TransformerLensImportGuard):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LevelKeepingLoader(spec.loader)
                return spec
        return None


def install_transformer_lens_guard() -> None:
    """Put a `TransformerLensImportGuard` first on `sys.meta_path` (once per process)."""
    if not any(isinstance(f, TransformerLensImportGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, TransformerLensImportGuard())

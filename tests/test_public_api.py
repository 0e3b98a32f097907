"""The public Python API: each package's `__all__`, exported lazily from the defining modules.

The packages import a name's module only when the name is first read (PEP 562 `__getattr__`), so
these tests check what a static list cannot: that every listed name resolves, to the object the
project's own module defines, that `dir()` and `AttributeError` behave as for an ordinary module,
and (in a fresh interpreter) that importing the packages stays light.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
from functools import cache
from types import ModuleType

import pytest

from wrapperlens.lazy_exports import lazy_exports

# The experiments (`wrapperlens.experiments.pcfg`, `.compiled`) are rooms with the same module
# names (stages, presets, grid, claims, analysis) whose names clash across modules (`plan`,
# `SETTING`, `SEED_ROLES`): they are reached through their modules and have no package face.
PACKAGES = ("wrapperlens", "wrapperlens.analysis", "tasks", "tinystories")
HEAVY = ("torch", "transformer_lens", "datasets")

#: Public names of a package's own modules (their `__all__`, defined there) that the package does
#: not export, and why: a package exports all the others (`wrapperlens` itself picks its front
#: doors, so it is not listed).
NOT_EXPORTED: dict[str, dict[str, set[str] | None]] = {  # None: the whole module
    "wrapperlens.analysis": {
        "wrapper_map": {"wrapper_map"},  # the function has its module's name: it would shadow it
    },
    "tinystories": {
        "presets": None,  # as pcfg_presets
        "protocols": {"PROTOCOLS"},  # two different tuples of that name: neither is exported
        "pipeline": {"PROTOCOLS", "ETAS"},  # tinystories.presets' (not exported: as pcfg's)
        # the setting's plan and job functions, reached through their module (as PCFG's grid)
        "grid": {"plan", "SETTING", "DATA_DIR", "data_job", "probe_job", "compare_job",
                 "model_names"},
    },
}

#: Names that two packages export as different objects, on purpose: each package's own tokens.
OWN_IN_EACH = {"PAD": {"tasks", "tinystories"}, "EOT": {"tasks", "tinystories"}}


def _submodules(package: str, recursive: bool = False) -> list[str]:
    """The modules of `package` (and of its subpackages), found without importing them."""
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        name = f"{package}.{info.name}"
        if info.name == "__main__":
            continue  # running it is its only use
        found.append(name)
        if info.ispkg and recursive:
            found += _submodules(name, recursive)
    return found


@cache
def _defined_names(module: str) -> frozenset[str]:
    """The names `module`'s source binds at top level itself: def, class or assignment."""
    tree = ast.parse(open(importlib.util.find_spec(module).origin, encoding="utf-8").read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
    return frozenset(names)


def _module_all(module: str) -> list[str]:
    return list(getattr(importlib.import_module(module), "__all__", ()))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_the_object_a_module_of_the_package_defines(package):
    pkg = importlib.import_module(package)
    assert pkg.__all__, f"{package} exports nothing"
    modules = _submodules(package, recursive=True)
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        defining = [m for m in modules if name in _defined_names(m)]
        assert defining, f"{package}.{name}: no module of {package} defines it"
        assert any(getattr(importlib.import_module(m), name, None) is obj for m in defining), (
            f"{package}.{name} is not the object {defining} define")
        if inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj)):
            # Constants and type aliases carry no module of their own; classes and functions do.
            assert inspect.unwrap(obj).__module__ in defining, (
                f"{package}.{name} comes from {inspect.unwrap(obj).__module__}, not {defining}")
        assert any(name in _module_all(m) for m in defining), (
            f"{package}.{name} is in no `__all__` of {defining}")


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "wrapperlens"])
def test_a_package_exports_every_public_name_its_modules_define(package):
    pkg = importlib.import_module(package)
    missing = []
    for module in _submodules(package):
        skipped = NOT_EXPORTED.get(package, {}).get(module.rsplit(".", 1)[1], set())
        if skipped is None or importlib.util.find_spec(module).submodule_search_locations:
            continue  # a left-out module, or a subpackage (it has its own `__all__`)
        for name in _module_all(module):
            if name in skipped or name not in _defined_names(module):
                continue  # left out on purpose, or a re-export from elsewhere
            if name not in pkg.__all__:
                missing.append(f"{module}.{name}")
            else:
                assert getattr(pkg, name) is getattr(importlib.import_module(module), name), (
                    f"{package}.{name} is not {module}.{name}")
    assert not missing, f"{package} does not export {missing}"


def test_no_name_is_exported_twice_under_different_objects():
    seen: dict[str, tuple[str, object]] = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        assert len(pkg.__all__) == len(set(pkg.__all__)), f"{package}.__all__ repeats a name"
        for name in pkg.__all__:
            obj = getattr(pkg, name)
            if name in seen and seen[name][1] is not obj:
                assert {seen[name][0], package} <= OWN_IN_EACH.get(name, set()), (
                    f"{name}: {seen[name][0]}.{name} and {package}.{name} are different objects")
            seen.setdefault(name, (package, obj))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_exported_name_is_also_a_submodule_name(package):
    # `import package.x` sets the attribute `x` to the module, so an export `x` would be one or
    # the other depending on import order.
    modules = {m.rsplit(".", 1)[1] for m in _submodules(package)}
    assert not modules & set(importlib.import_module(package).__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_attribute_raises_attribute_error_naming_it(package):
    pkg = importlib.import_module(package)
    message = rf"module '{package}' has no attribute 'no_such_name'"
    with pytest.raises(AttributeError, match=message):
        pkg.no_such_name  # noqa: B018
    assert not hasattr(pkg, "RunDirr")
    namespace: dict[str, object] = {}
    with pytest.raises(ImportError, match="no_such_name"):
        exec(f"from {package} import no_such_name", namespace)


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300).stdout.strip()


def test_importing_the_packages_is_light_until_a_name_is_read():
    code = (
        "import sys, importlib\n"
        f"packages = [importlib.import_module(p) for p in {PACKAGES!r}]\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(all(set(p.__all__) <= set(dir(p)) for p in packages))\n"
        "import wrapperlens\n"
        "wrapperlens.RunDir\n"
        f"print(sorted(m for m in {HEAVY[:2]!r} if m in sys.modules))\n"
    )
    heavy_before, dir_lists_all, heavy_after = _fresh_python(code).splitlines()
    assert heavy_before == "[]"  # no torch, TransformerLens or datasets on `import`
    assert dir_lists_all == "True"  # before any name has been read
    assert heavy_after == "['torch', 'transformer_lens']"


def test_a_name_read_once_is_kept_in_the_package_namespace():
    code = ("import sys, tasks\n"
            "grammar = tasks.Grammar\n"
            "print(vars(tasks)['Grammar'] is grammar is sys.modules['tasks.grammar'].Grammar)\n"
            "print('tasks.data' in sys.modules)\n")
    assert _fresh_python(code).splitlines() == ["True", "False"]  # only its module is imported


def test_lazy_exports_refuses_a_name_listed_under_two_modules():
    with pytest.raises(ValueError, match=r"pkg: 'x' is exported from both 'a' and 'b'"):
        lazy_exports("pkg", {"a": ("x",), "b": ("y", "x")})


def test_lazy_exports_lists_names_in_table_order_and_reads_them_from_their_module():
    package = ModuleType("fake_pkg")
    package.__path__ = []
    module = ModuleType("fake_pkg.mod")
    module.value, module.other = object(), object()
    sys.modules.update({"fake_pkg": package, "fake_pkg.mod": module})
    try:
        all_, getattr_, dir_ = lazy_exports("fake_pkg", {"mod": ("value", "other")})
        assert all_ == ["value", "other"]
        assert getattr_("value") is module.value
        assert vars(package)["value"] is module.value  # kept: the next read skips __getattr__
        assert {"value", "other"} <= set(dir_())
        with pytest.raises(AttributeError, match="'fake_pkg' has no attribute 'missing'"):
            getattr_("missing")
        del module.other
        with pytest.raises(AttributeError, match="exports 'other' from fake_pkg.mod, which has no"):
            getattr_("other")
    finally:
        del sys.modules["fake_pkg"], sys.modules["fake_pkg.mod"]

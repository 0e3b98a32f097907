"""The layering rules of docs/architecture.md, checked on the source (AST, no imports).

- `tasks` imports no other package of the project;
- `wrapperlens` outside `experiments/` and `cli/` imports nothing from `tasks`;
- `wrapperlens` imports `tinystories` only lazily (inside functions) and only from `cli/`;
- the run-directory file names are string literals in `wrapperlens/runs.py` alone;
- the component hook names are string literals in `wrapperlens/components.py` alone;
- no module is much longer than ~400 lines.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "wrapperlens", "tinystories")
RUN_FILES = {"config.json", "model.json", "model.safetensors", "trainer_state.safetensors",
             "metrics.jsonl", "provenance.json"}
HOOK_SUFFIXES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                 "hook_mlp_out", "attn.hook_z", "mlp.hook_post", "attn.hook_pattern")
MAX_LINES = 420  # "small modules (roughly 100-400 lines)"


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, whether the import is inside a function) for every import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def string_literals(path: Path) -> list[tuple[int, str]]:
    """String constants that are not docstrings, with their line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def top(module: str) -> str:
    return module.split(".")[0]


def test_tasks_imports_no_other_package_of_the_project():
    bad = [f"{rel(p)}: {m}" for p in modules("tasks") for m, _ in imports(p)
           if top(m) in ("wrapperlens", "tinystories")]
    assert bad == []


def test_wrapperlens_imports_tasks_only_in_experiments_and_the_cli():
    bad = [f"{rel(p)}: {m}" for p in modules("wrapperlens") for m, _ in imports(p)
           if top(m) == "tasks" and not rel(p).startswith(("wrapperlens/experiments/",
                                                            "wrapperlens/cli/"))]
    assert bad == []


def test_wrapperlens_imports_tinystories_only_lazily_from_the_cli():
    bad = [f"{rel(p)}: {m}" for p in modules("wrapperlens") for m, lazy in imports(p)
           if top(m) == "tinystories" and not (lazy and rel(p).startswith("wrapperlens/cli"))]
    assert bad == []


def test_run_directory_file_names_are_literals_of_one_module():
    owner = "wrapperlens/runs.py"
    bad = [f"{rel(p)}:{line}: {value!r}" for package in PACKAGES for p in modules(package)
           for line, value in string_literals(p)
           if rel(p) != owner and any(value == name or value.endswith("/" + name)
                                      for name in RUN_FILES)]
    assert bad == []
    owned = {value for _, value in string_literals(ROOT / owner)}
    assert RUN_FILES <= owned


def test_component_hook_names_are_literals_of_one_module():
    owner = "wrapperlens/components.py"
    bad = [f"{rel(p)}:{line}: {value!r}" for package in PACKAGES for p in modules(package)
           for line, value in string_literals(p)
           if rel(p) != owner and any(value.endswith(s) or f"{s}." in value for s in HOOK_SUFFIXES)]
    assert bad == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_much_longer_than_400_lines(package):
    long = {rel(p): n for p in modules(package)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}

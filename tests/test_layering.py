"""The layering rules of docs/architecture.md, checked on the source (AST, no imports).

- `tasks` imports no other package of the project;
- `wrapperlens` outside `experiments/` and `cli/` imports nothing from `tasks`;
- `wrapperlens` imports `tinystories` only lazily (inside functions) and only from `cli/`;
- the run-directory file names are string literals in `wrapperlens/runs.py` alone;
- the component hook names are string literals in `wrapperlens/components.py` alone;
- no module is much longer than ~400 lines;
- no circle of imports among the project's modules, lazy imports included;
- no import of a project module by string outside the sweep runner and the package faces;
- nothing imports the command line `wrapperlens.cli` (the roof), tinystories included.
"""

import ast
from dataclasses import dataclass
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


# --- The import graph: cycles, string imports, the command line as the roof ---------------------


def module_table(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of `packages` under `root`."""
    table = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            table[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return table


MODULES = module_table(ROOT, PACKAGES)


def project_module(name: str, table: dict[str, Path] = MODULES) -> str | None:
    """The longest prefix of a dotted name that is a module of the project (None: not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return ".".join(parts[:n])
    return None


def facade(package: str, table: dict[str, Path]) -> dict[str, str]:
    """A package face's lazy exports: public name -> the submodule that defines it.

    Read from the dict literals of the package's `__init__` that map submodule names to tuples
    of names: `lazy_exports(__name__, {...})` in `wrapperlens`, `wrapperlens.analysis`,
    `wrapperlens.experiments` and `tinystories`, and the `_MODULE_OF` table of `tasks` (which
    cannot import `wrapperlens.lazy_exports`).
    """
    if table[package].name != "__init__.py":
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(table[package].read_text(), filename=str(table[package]))):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values):
            if (isinstance(key, ast.Constant) and isinstance(key.value, str)
                    and f"{package}.{key.value}" in table
                    and isinstance(value, (ast.Tuple, ast.List))):
                for name in value.elts:
                    if isinstance(name, ast.Constant) and isinstance(name.value, str):
                        found[name.value] = f"{package}.{key.value}"
    return found


DYNAMIC_IMPORTS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Edge:
    """One import of a project module by another, where it is written."""

    source: str
    target: str
    file: str
    line: int
    lazy: bool  # inside a function
    how: str  # how the target is reached, when not by its own name

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        notes = [n for n in (self.how, "inside a function" if self.lazy else "") if n]
        return f"{self.source} -> {self.target} ({where}{', ' if notes else ''}{', '.join(notes)})"


def _parents(module: str) -> list[str]:
    """The packages that importing `module` runs first: `a.b.c` runs `a` and `a.b`."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def _dynamic_target(call: ast.Call) -> ast.expr | None:
    """The module argument of `importlib.import_module(...)` / `import_module(...)` /
    `__import__(...)`, or None when `call` is another call."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return call.args[0] if name in DYNAMIC_IMPORTS and call.args else None


def import_edges(module: str, table: dict[str, Path], facades: dict[str, dict[str, str]]
                 ) -> list[Edge]:
    """Every import of a project module that `module`'s source makes, lazy ones included.

    - `import a.b.c` / `from a.b import c`: the module itself (`a.b.c`), and the packages it runs
      first (`a`, `a.b`), which are imports too: a package `__init__` runs before its submodule.
    - `from pkg import Name` where `Name` is a lazy export of the package face `pkg`, and
      `pkg.Name` read through a name bound by `import pkg`: the module that defines `Name` (reading
      the name imports that submodule, and only that one).
    - `importlib.import_module("a.b")` / `__import__("a.b")` with a literal string: `a.b`.
    - Imports inside functions and under `if TYPE_CHECKING:` count like the others.
    """
    path = table[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    shown = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    edges: list[Edge] = []
    bound: dict[str, str] = {}  # local name -> the dotted module it is bound to by `import`
    seen: set[tuple[str, int]] = set()  # (target, line): one edge per import statement

    def add(target: str | None, node: ast.AST, lazy: bool, how: str = "") -> None:
        if target is None:
            return
        found = [(parent, f"package of {target}") for parent in _parents(target)
                 if parent != package and not package.startswith(parent + ".")] + [(target, how)]
        for name, note in found:
            if name != module and (name, node.lineno) not in seen:
                seen.add((name, node.lineno))
                edges.append(Edge(module, name, shown, node.lineno, lazy, note))

    def from_module(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(project_module(alias.name, table), child, lazy)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        bound[root] = root
            elif isinstance(child, ast.ImportFrom):
                base = from_module(child)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    if full in table:
                        add(full, child, lazy)
                        bound[alias.asname or alias.name] = full
                    elif alias.name in facades.get(base, {}):
                        add(facades[base][alias.name], child, lazy,
                            f"{base}.{alias.name}, lazily exported")
                    else:
                        add(project_module(base, table), child, lazy)
            elif isinstance(child, ast.Call) and (target := _dynamic_target(child)) is not None:
                if isinstance(target, ast.Constant) and isinstance(target.value, str):
                    add(project_module(target.value, table), child, lazy, "a string import")
            elif isinstance(child, ast.Attribute) and isinstance(child.ctx, ast.Load):
                chain, root = [child.attr], child.value
                while isinstance(root, ast.Attribute):
                    chain.insert(0, root.attr)
                    root = root.value
                if isinstance(root, ast.Name) and root.id in bound:
                    dotted = bound[root.id].split(".") + chain
                    for n in range(len(dotted) - 1, 0, -1):
                        face = ".".join(dotted[:n])
                        if dotted[n] in facades.get(face, {}):
                            add(facades[face][dotted[n]], child, lazy,
                                f"{face}.{dotted[n]}, lazily exported")
                            break
            visit(child, inner)

    visit(tree, False)
    return edges


def import_graph(table: dict[str, Path]) -> dict[str, list[Edge]]:
    """Module -> its imports of other modules of `table` (see `import_edges`)."""
    facades = {m: facade(m, table) for m in table}
    return {m: import_edges(m, table, facades) for m in table}


GRAPH = import_graph(MODULES)


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted({e.target for e in graph[v]}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def shortest_cycle(graph: dict[str, list[Edge]], component: list[str]) -> list[Edge]:
    """A shortest cycle inside `component` (breadth first from each of its modules)."""
    inside = set(component)
    best: list[Edge] = []
    for start in component:
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for edge in sorted(graph[v], key=lambda e: (e.target, e.line)):
                if edge.target == start:
                    cycle = paths[v] + [edge]
                    if not best or len(cycle) < len(best):
                        best = cycle
                    queue = []
                    break
                if edge.target in inside and edge.target not in paths:
                    paths[edge.target] = paths[v] + [edge]
                    queue.append(edge.target)
    return best


def test_the_import_graph_sees_lazy_imports_faces_and_packages_and_no_false_circles(tmp_path):
    """The graph the tests below run on, on a small package written here."""
    files = {
        "pkg/__init__.py": "from pkg.lazy import lazy_exports\n"
                           "__all__, __getattr__, __dir__ = lazy_exports(__name__, {\n"
                           "    'a': ('A',), 'b': ('B',), 'sub.c': ('C',)})\n",
        "pkg/lazy.py": "import importlib\n",
        "pkg/a.py": "class A: ...\ndef f():\n    from pkg import B  # read through the face\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
                    "B = 1\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import importlib\nimport pkg\nC = pkg.A\n"
                        "importlib.import_module('pkg.b')\nfrom . import d\n",
        "pkg/sub/d.py": "from pkg.sub.c import C\n",
        "other/e.py": "from pkg.sub import c\nimport numpy\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(module_table(tmp_path, ("pkg", "other")))

    def targets(module: str) -> dict[str, str]:
        return {e.target: e.how for e in graph[module]}

    assert targets("pkg") == {"pkg.lazy": ""}  # the face's table is not an import of it
    assert targets("pkg.a") == {"pkg.b": "pkg.B, lazily exported"}  # lazy, inside f()
    assert [e.lazy for e in graph["pkg.a"]] == [True]
    assert targets("pkg.b") == {"pkg.a": ""}  # under TYPE_CHECKING
    assert targets("pkg.sub.c") == {"pkg": "", "pkg.a": "pkg.A, lazily exported",
                                    "pkg.b": "a string import", "pkg.sub.d": ""}
    assert targets("other.e") == {"pkg": "package of pkg.sub.c", "pkg.sub": "package of pkg.sub.c",
                                  "pkg.sub.c": ""}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]
    cycle = shortest_cycle(graph, ["pkg.a", "pkg.b"])
    assert [str(e) for e in cycle] == [
        "pkg.a -> pkg.b (a.py:3, pkg.B, lazily exported, inside a function)",
        "pkg.b -> pkg.a (b.py:3)",
    ]


def test_no_import_cycles_among_the_project_modules():
    """No circle of imports among the modules of tasks, wrapperlens and tinystories.

    Every import counts, at module level or inside a function, under `if TYPE_CHECKING:` or not:
    a lazy import only postpones the circle to the first call (see `import_edges`). Each circle
    is reported as the list of modules of its strongly connected component and one shortest
    cycle through it, with the file and line of each import.

    Package faces (`lazy_exports(__name__, {...})` in a package `__init__`, and `tasks`'s own
    table): their entries are *not* edges from the package to every submodule they name.
    `import wrapperlens` runs only `wrapperlens/__init__.py`, which imports no submodule; a
    submodule is imported when one of its names is read. Taking the table as imports would put
    every `from wrapperlens.x import y` (which runs the package first) on a false circle
    `wrapperlens.x -> wrapperlens -> wrapperlens.x`. Instead a read through a face, `from
    wrapperlens import RunDir` or `tasks.Grammar` after `import tasks`, is an edge to the module
    that defines the name: exactly the import it triggers, so those edges give true cycles only.
    """
    faces = {package: facade(package, MODULES) for package in PACKAGES}
    unread = [package for package, table in faces.items() if not table]
    assert not unread, f"no table of lazy exports read from the package faces {unread}"
    cycles = []
    for component in strongly_connected(GRAPH):
        path = shortest_cycle(GRAPH, component)
        cycles.append(f"{component}\n    " + "\n    ".join(str(e) for e in path))
    assert not cycles, "import cycles among the project's modules:\n" + "\n".join(cycles)


# Allowed: the sweep runner resolves a Job's "module:function" target (data, not an import of
# the code base), and the package faces import the submodule of a name on first read.
STRING_IMPORT_OWNERS = {
    "wrapperlens/sweeps.py": "a sweep Job's target names its job function as a string",
    "wrapperlens/lazy_exports.py": "the lazy `__getattr__` of the package faces",
    "tasks/__init__.py": "the face of `tasks` (its own copy of lazy_exports: tasks imports "
                         "nothing of wrapperlens)",
}


def test_no_module_imports_a_project_module_by_string():
    """`importlib.import_module(...)` / `__import__(...)` only outside the project, or in the
    owners above: an import by string is invisible to readers, linters and the tests above.

    A call is flagged unless its argument is a literal naming a module outside the project:
    a literal naming a project module, and an argument computed at run time (a variable, an
    f-string, a table lookup), which could name one, are both flagged.
    """
    bad = []
    for module, path in MODULES.items():
        if rel(path) in STRING_IMPORT_OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or (target := _dynamic_target(node)) is None:
                continue
            literal = isinstance(target, ast.Constant) and isinstance(target.value, str)
            if not literal or project_module(target.value) is not None:
                bad.append(f"{rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert bad == [], "imports by string of (possibly) project modules:\n" + "\n".join(bad)


# `python -m wrapperlens` (and `torchrun -m wrapperlens`) runs the command line: the one module
# above the roof.
CLI_ENTRY_POINTS = {"wrapperlens.__main__"}


def _imports_of_the_cli(packages: tuple[str, ...]) -> list[str]:
    return [str(e) for m in MODULES if top(m) in packages
            and not (m == "wrapperlens.cli" or m.startswith("wrapperlens.cli."))
            and m not in CLI_ENTRY_POINTS
            for e in GRAPH[m] if not e.how.startswith("package of")  # the import itself is listed
            and (e.target == "wrapperlens.cli" or e.target.startswith("wrapperlens.cli."))]


def test_nothing_imports_the_command_line():
    """The command line (`wrapperlens.cli` and its modules) is the roof: no module outside it
    imports it, lazily or not, directly or through a package face (the entry point
    `wrapperlens/__main__.py` aside)."""
    bad = _imports_of_the_cli(PACKAGES)
    assert bad == [], "imports of wrapperlens.cli from below it:\n" + "\n".join(bad)


def test_tinystories_imports_nothing_of_the_wrapperlens_command_line():
    """tinystories builds its commands on wrapperlens's library, never on its command line
    (the subset of the test above that tinystories' own command line is in)."""
    bad = _imports_of_the_cli(("tinystories",))
    assert bad == [], "tinystories imports of wrapperlens.cli:\n" + "\n".join(bad)

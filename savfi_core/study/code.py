"""Which source files of savfi_core a job runs: the import graph of its notebook's code.

A job's result depends on the savfi_core code its notebook executes, so its hash covers exactly
those files (see :mod:`savfi_core.study.cache`). They are found without running anything, from
the syntax trees: starting at the notebook's code cells, every ``import`` statement of a module,
at top level or inside a function (the stage functions import lazily), adds the imported
savfi_core module, and transitively everything that one imports. This over-approximates what a
particular call executes (a module imported inside a function that this job never calls still
counts), never under-approximates it, for imports written as statements. Two other ways code
enters are followed as well:

* a package whose ``__init__`` discovers its submodules (``pkgutil.iter_modules(__path__)``, as
  ``savfi_core.backbones`` registers every backbone file) uses all of them;
* a module's CUDA source lives beside it with the same stem (``kernels/sepconv.py`` loads
  ``kernels/sepconv.cu``), and counts with it.

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first; those count too. One
refinement at the entry: a notebook that takes functions from a module (``from
savfi_core.study.stages import run_report``) runs only that module's import-time statements and
the definitions those functions reach by name, so the report job does not depend on the training
code that ``run_pretrain`` imports inside its body.
``tests/test_study_cache.py`` checks the graph against the modules a real stage call leaves in
``sys.modules``.

Why not record ``sys.modules`` after each run instead: the hash must be known before a job runs
(``--dry-run`` lists what would run), the modules live in the notebook's kernel process, not in
the runner, and a recorded list misses a module the changed code would newly import.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

PACKAGE = "savfi_core"


def module_file(name: str, root: Path) -> Path | None:
    """The file of savfi_core module ``name`` (``savfi_core.a.b``) under the package ``root``."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str | ast.AST, current: str | None = None, is_package: bool = False) -> set[str]:
    """Absolute names of the modules ``source`` imports anywhere (``from m import x`` counts both
    ``m`` and ``m.x``: x may be a submodule); relative imports are resolved against ``current``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source) if isinstance(source, str) else source):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and current:
                anchor = current.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def notebook_code(notebook: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines left out."""
    cells = json.loads(Path(notebook).read_text()).get("cells", [])
    lines = [line for cell in cells if cell.get("cell_type") == "code"
             for line in "".join(cell.get("source", "")).splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _definitions_used(tree: ast.Module, names: set[str]) -> list[ast.stmt]:
    """The statements of a module that run when only ``names`` of it are called: its top-level
    statements that are not definitions (they run on import), and the functions and classes named
    in ``names`` or referenced by name from anything already included, transitively."""
    definitions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    included = [node for node in tree.body if node not in definitions.values()]
    pending = set(names)
    for node in included:
        pending |= {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}
    chosen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in chosen or name not in definitions:
            continue
        chosen.add(name)
        included.append(definitions[name])
        pending |= {node.id for node in ast.walk(definitions[name]) if isinstance(node, ast.Name)}
    return included


def _imports_of(statements: list[ast.stmt], current: str, is_package: bool) -> set[str]:
    return imported_modules(ast.Module(body=statements, type_ignores=[]), current, is_package)


def entry_points(entry_source: str, root: Path) -> tuple[set[str], dict[str, set[str]]]:
    """What a notebook imports: whole modules, and module -> the functions it takes from it
    (``from savfi_core.study.stages import run_report``: only run_report's part of stages)."""
    whole: set[str] = set()
    partial: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(entry_source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and module_file(node.module or "", root) is not None:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if alias.name == "*":
                    whole.add(node.module)
                elif module_file(submodule, root) is not None:
                    whole.add(submodule)
                else:
                    partial.setdefault(node.module, set()).add(alias.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            whole |= imported_modules(ast.Module(body=[node], type_ignores=[]))
    for module in whole & set(partial):
        del partial[module]
    return whole, partial


def used_files(entry_source: str, root: Path) -> list[Path]:
    """Every savfi_core source file (.py, and the .cu beside one) that ``entry_source`` can run.

    A module the entry takes functions from (``from m import f``) counts with its import-time
    statements and the definitions ``f`` reaches by name; every other module counts whole.
    """
    whole, partial = entry_points(entry_source, root)
    pending = sorted(whole)
    for name, functions in partial.items():
        path = module_file(name, root)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        pending += _imports_of(_definitions_used(tree, functions), name, is_package)
        pending += [".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)]
    files = {module_file(name, root) for name in partial}
    seen: set[str] = set(partial)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue  # a name imported from a module (a function, a class), not a module itself
        files.add(path)
        pending += [".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)]  # parent packages
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        pending += imported_modules(source, name, is_package)
        if is_package and "pkgutil.iter_modules" in source:
            pending += [module_name(child, root) for child in path.parent.iterdir()
                        if (child.suffix == ".py" and child.name != "__init__.py") or (child / "__init__.py").is_file()]
    for path in list(files):
        if path.with_suffix(".cu").is_file():
            files.add(path.with_suffix(".cu"))
    return sorted(files)

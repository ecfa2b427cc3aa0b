"""The code a stage runs: the static import closure of its module, and that code's digest.

dvc.yaml lists a stage's closure as its code dependencies (`dvc status` flags the stage when one
of them changes); a training run's and a study piece's identity counts the closure's content, so
a direct `netgeom train` after an edit of the training code trains again, as `dvc repro` would,
while an edit of code the stage never imports (the report, the UI) keeps it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of module `netgeom...` (a package's __init__.py), None if not ours."""
    parts = name.split(".")
    if parts[0] != "netgeom":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every netgeom module `path` imports (function-level imports included)."""
    found = set()
    tree = ast.parse(path.read_text())
    # The package's own __init__ imports the notebook API lazily, on attribute access
    # (`netgeom.open_run`), which no stage makes: only its module-level imports run for a stage.
    nodes = tree.body if path == PACKAGE_DIR / "__init__.py" else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from netgeom.x import y` may name a submodule y
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "netgeom" and module_file(name)}


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def import_closure(*roots: str) -> frozenset[Path]:
    """The source files Python may execute when it imports `roots` and calls into them."""
    seen: set[str] = set()
    todo = [parent for root in roots for parent in _with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or not module_file(name):
            continue
        seen.add(name)
        for imported in _imported_modules(module_file(name)):
            todo += _with_parents(imported)
    return frozenset(module_file(name) for name in seen)


@cache
def code_digest(*modules: str) -> str:
    """sha256 over the files (names and content) of the import closure of `modules`."""
    digest = hashlib.sha256()
    for path in sorted(import_closure(*modules)):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]

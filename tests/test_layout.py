"""The project's layout: module boundaries, the README's module map, the XTuner configs' parts.

Read with ``ast`` and text only (nothing of the project is imported), so these run in a second.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The code whose imports are checked; tests may reach into private names to pin them.
CHECKED_DIRS = ("maskdpo", "tools", "xtuner_configs")


# ---------------------------------------------------------------- (a) no private name crosses a module


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_project_module(dotted: str, root: Path) -> bool:
    """A module or package of this repository (``tools/`` is a folder of scripts with no ``__init__.py``)."""
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def imported_module(node: ast.ImportFrom, own: str, is_package: bool) -> str:
    """The dotted module a ``from ... import`` reads from, relative imports resolved against ``own``."""
    if not node.level:
        return node.module or ""
    package = own.split(".") if is_package else own.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(source: str, path: Path, root: Path) -> list[str]:
    """``file:line name`` for each private name this file takes from another project module.

    Two forms: ``from module import _name``, and ``module._name`` where ``module``
    is bound by an import to a project module (``import maskdpo.x as m``,
    ``from maskdpo import x``, ``from . import x``).
    """
    own, is_package = module_name(path, root), path.name == "__init__.py"
    where = path.relative_to(root).as_posix()
    found: list[str] = []
    modules: dict[str, str] = {}  # local name -> project module it is bound to
    tree = ast.parse(source, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_project_module(alias.name, root):
                    if alias.asname:
                        modules[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        modules[top] = top
        elif isinstance(node, ast.ImportFrom):
            source_module = imported_module(node, own, is_package)
            if not source_module or not is_project_module(source_module, root):
                continue
            for alias in node.names:
                if is_private(alias.name) and source_module != own:
                    found.append(f"{where}:{node.lineno} from {source_module} import {alias.name}")
                elif is_project_module(f"{source_module}.{alias.name}", root):
                    modules[alias.asname or alias.name] = f"{source_module}.{alias.name}"

    def module_of(expr: ast.expr) -> str | None:
        """The project module an expression like ``maskdpo.sentences`` or ``m`` names, else None."""
        if isinstance(expr, ast.Name):
            return modules.get(expr.id)
        if isinstance(expr, ast.Attribute):
            outer = module_of(expr.value)
            if outer and is_project_module(f"{outer}.{expr.attr}", root):
                return f"{outer}.{expr.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            target = module_of(node.value)
            if target and target != own:
                found.append(f"{where}:{node.lineno} {target}.{node.attr}")
    return sorted(found, key=lambda hit: int(hit.split(":")[1].split()[0]))


def test_the_private_name_check_finds_both_forms(tmp_path):
    """The check can fail: a synthetic package whose module reaches into another's private names."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "sub/__init__.py", "sub/a.py", "sub/b.py"):
        (pkg / name).write_text("")
    source = "\n".join([
        "import os",
        "from os import _exit",                 # not a project module: allowed
        "from . import a",
        "from .a import public, _hidden",       # offender
        "from ..a import _also",                # offender (relative, two levels up)
        "import pkg.a as alias",
        "x = a._table",                         # offender
        "y = alias._table",                     # offender
        "import pkg",
        "z = pkg.a._table",                     # offender
        "w = pkg.__version__ + os._exit.__name__ + obj._private",  # dunder, not a project module, not a module
        "from .b import _mine",                 # the module's own name
    ])
    assert private_uses(source, pkg / "sub" / "b.py", tmp_path) == [
        "pkg/sub/b.py:4 from pkg.sub.a import _hidden",
        "pkg/sub/b.py:5 from pkg.a import _also",
        "pkg/sub/b.py:7 pkg.sub.a._table",
        "pkg/sub/b.py:8 pkg.a._table",
        "pkg/sub/b.py:10 pkg.a._table",
    ]


def project_sources() -> list[Path]:
    return sorted(p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_imports_a_private_name_from_another():
    offenders = [hit for path in project_sources()
                 for hit in private_uses(path.read_text(encoding="utf-8"), path, ROOT)]
    assert not offenders, ("private names used across modules (make them public, or move the code "
                           "to the module that owns them):\n  " + "\n  ".join(offenders))


# ---------------------------------------------------------------- (b) the README's map names every module


def layout_section(readme: str) -> str:
    match = re.search(r"^## Layout\n(.*?)(?=^## )", readme, re.S | re.M)
    if not match:
        raise AssertionError("README.md has no '## Layout' section")
    return match.group(1)


def mapped_modules(section: str) -> set[str]:
    """Module paths the map names: a line that starts (after a list marker) with ``maskdpo/x.py``, or
    with a package ``maskdpo/pkg/`` followed by the names of its modules (``a.py b.py``)."""
    named: set[str] = set()
    for line in section.splitlines():
        words = re.findall(r"\w[\w./-]*", line)  # paths and names; list markers and backticks fall away
        if not words or not words[0].startswith("maskdpo/"):
            continue
        if words[0].endswith(".py"):
            named.add(words[0])
        elif words[0].endswith("/"):
            named |= {words[0] + w for w in words[1:] if w.endswith(".py") and "/" not in w}
    return named


def has_code(init: Path) -> bool:
    """An ``__init__.py`` with more than a docstring, ``from __future__`` and dunder settings is a module to map."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets):
            continue
        return True
    return False


def module_files() -> set[Path]:
    return {p for p in (ROOT / "maskdpo").rglob("*.py") if "__pycache__" not in p.parts}


def test_the_map_reader_reads_both_line_forms():
    section = "\n".join([
        "- `maskdpo/stage.py` the plumbing",
        "    maskdpo/commands/  annotate.py demo.py   thin shells",
        "  maskdpo/notes about maskdpo/other.py",  # a mention after the first word is not an entry
    ])
    assert mapped_modules(section) == {"maskdpo/stage.py", "maskdpo/commands/annotate.py",
                                       "maskdpo/commands/demo.py"}


def test_readme_layout_names_every_module():
    named = mapped_modules(layout_section((ROOT / "README.md").read_text(encoding="utf-8")))
    files = module_files()
    required = {p.relative_to(ROOT).as_posix() for p in files if p.name != "__init__.py" or has_code(p)}
    missing = sorted(required - named)
    stale = sorted(named - {p.relative_to(ROOT).as_posix() for p in files})
    assert not missing and not stale, f"README.md Layout: modules not listed {missing}; listed but absent {stale}"


# ---------------------------------------------------------------- (c) each XTuner config is self-contained

# XTuner's convention: a config repeats every part rather than inheriting (`_base_`), so one file is the
# whole run. tests/test_configs.py loads each config and pins that the CPU configs equal the paper configs
# after PART 1; this pins, without loading anything, that each file has the five parts and defines in
# each the names XTuner's runner reads.
CONFIG_PARTS = {
    "PART 1  Settings": set(),
    "PART 2  Model & Tokenizer": {"tokenizer", "model"},
    "PART 3  Dataset & Dataloader": {"train_dataloader"},
    "PART 4  Scheduler & Optimizer": {"optim_wrapper", "param_scheduler", "train_cfg"},
    "PART 5  Runtime": {"custom_hooks", "default_hooks", "env_cfg", "visualizer", "log_level", "load_from",
                        "resume", "randomness", "log_processor"},
}


def config_parts(text: str, where: str) -> dict[str, set[str]]:
    """Names assigned at top level in each PART of a config (a part runs to the next PART heading)."""
    headings = [(i + 1, m.group(1)) for i, line in enumerate(text.splitlines())
                if (m := re.match(r"#\s+(PART \d  .*?)\s*#\s*$", line))]
    titles = [title for _, title in headings]
    if titles != list(CONFIG_PARTS):
        raise AssertionError(f"{where}: PART headings {titles}, expected {list(CONFIG_PARTS)}")
    assigned: dict[str, set[str]] = {title: set() for title in titles}
    for node in ast.parse(text, filename=where).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    before = [title for line, title in headings if line < node.lineno]
                    if before:
                        assigned[before[-1]].add(name.id)
    return assigned


def test_the_config_reader_rejects_a_missing_part():
    text = "\n".join(f"#   {title}   #\nx{i} = 1" for i, title in enumerate(list(CONFIG_PARTS)[:4]))
    with pytest.raises(AssertionError, match="PART headings"):
        config_parts(text, "synthetic.py")


@pytest.mark.parametrize("path", sorted((ROOT / "xtuner_configs").glob("*.py")), ids=lambda p: p.name)
def test_each_config_has_the_five_parts_and_no_base(path):
    text = path.read_text(encoding="utf-8")
    assigned = config_parts(text, path.name)
    assert "_base_" not in set().union(*assigned.values()), f"{path.name} inherits (_base_); configs are self-contained"
    assert assigned["PART 1  Settings"], f"{path.name}: PART 1 sets nothing"
    missing = {title: sorted(names - assigned[title]) for title, names in CONFIG_PARTS.items() if names - assigned[title]}
    assert not missing, f"{path.name}: parts lack {missing}"

"""The import direction of the design, read from the source of every module (ast), not from a run.

Layers (docs/CONTRACTS.md "Layering"): core (``cape_hpc/__init__``, errors, schema, options) ->
io -> stats -> analysis -> dynamics -> audit; models -> internals -> steering -> sweep; report reads
the torch-free result modules only; commands and cli may import everything and nothing imports them.
``cape_kernels`` imports nothing of ``cape_hpc``.  No module imports a ``_private`` name of another
package, and no module outside core uses a ``_private`` name of core (imported or read as
``options._name``).  Imports inside functions count the same as top-level ones.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"__init__", "errors", "schema", "options", "lazy", "progress"}

# unit -> units it may import (a unit is a top-level module or package of cape_hpc; "kernels" is cape_kernels)
ALLOWED: dict[str, set[str]] = {
    "core": {"core", "kernels"},
    "io": {"core", "io", "kernels"},
    "stats": {"core", "io", "stats", "kernels"},
    "analysis": {"core", "io", "stats", "analysis", "kernels"},
    "dynamics": {"core", "io", "stats", "analysis", "dynamics", "kernels"},
    "audit": {"core", "io", "stats", "analysis", "dynamics", "audit", "kernels", "crossmodel"},
    "models": {"core", "io", "models", "kernels"},
    "internals": {"core", "io", "stats", "models", "internals", "kernels"},
    "steering": {"core", "io", "stats", "models", "internals", "steering", "kernels"},
    "sweep": {"core", "io", "stats", "models", "internals", "steering", "sweep", "kernels"},
    "crossmodel": {"core", "io", "stats", "analysis", "dynamics", "crossmodel", "kernels", "internals.results",
                   "internals.blocks"},
    "report": {"core", "io", "stats", "analysis", "dynamics", "audit", "report", "kernels",
               "internals.results", "steering.results", "crossmodel.results"},
    "commands": {"*"},
    "cli": {"core", "commands"},
}
# modules of a package that another unit may import on their own (torch-free result modules)
NARROW = {"internals.results", "steering.results", "internals.blocks", "crossmodel.results"}


def unit_of_module(dotted: str) -> str | None:
    """'cape_hpc.analysis.nc' -> 'analysis'; 'cape_hpc.schema' -> 'core'; 'cape_kernels.x' -> 'kernels'."""
    parts = dotted.split(".")
    if parts[0] == "cape_kernels":
        return "kernels"
    if parts[0] != "cape_hpc":
        return None
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    if len(parts) >= 3 and f"{parts[1]}.{parts[2]}" in NARROW:
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def package_of_file(path: Path) -> tuple[str, str]:
    """(unit, dotted module name) of a source file."""
    if path.is_relative_to(ROOT / "kernels"):  # the package is kernels/cape_kernels/
        rel = path.relative_to(ROOT / "kernels").with_suffix("")
        return "kernels", ".".join(rel.parts).removesuffix(".__init__")
    rel = path.relative_to(ROOT / "cape_hpc").with_suffix("")
    dotted = ".".join(("cape_hpc", *rel.parts)).removesuffix(".__init__")
    unit = unit_of_module(dotted)
    if unit in NARROW:
        unit = unit.split(".")[0]  # the result module itself belongs to its package
    return unit, dotted


def imports_of(path: Path, dotted: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import statement in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = dotted if path.name == "__init__.py" else dotted.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [a.name for a in node.names]
            if not node.module and node.level:  # from . import x: x may be a module
                out.extend((node.lineno, f"{mod}.{n}", []) for n in names)
            else:
                out.append((node.lineno, mod, names))
    return out


def source_files() -> list[Path]:
    return sorted(p for d in ("cape_hpc", "kernels") for p in (ROOT / d).rglob("*.py"))


def allowed(unit: str, target: str) -> bool:
    rules = ALLOWED[unit]
    if "*" in rules or target in rules:
        return True
    return target in NARROW and target.split(".")[0] in rules


def violations() -> list[str]:
    out = []
    for path in source_files():
        unit, dotted = package_of_file(path)
        if unit not in ALLOWED and unit != "kernels":
            out.append(f"{path.relative_to(ROOT)}: unit {unit!r} has no layering rule (add it to ALLOWED)")
            continue
        for line, mod, names in imports_of(path, dotted):
            target = unit_of_module(mod)
            if target is None:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if unit == "kernels":
                if target != "kernels":
                    out.append(f"{where}: cape_kernels imports {mod}")
                continue
            # a narrow module (internals.results) may be imported as 'from cape_hpc.internals import results'
            if target in ("internals", "steering", "crossmodel") and mod.count(".") == 1:
                target = next((f"{target}.{n}" for n in names if f"{target}.{n}" in NARROW), target)
            if not allowed(unit, target):
                out.append(f"{where}: {unit} imports {mod}")
            own = target.split(".")[0] == unit
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if not own and private:
                out.append(f"{where}: imports private name(s) {', '.join(private)} of {mod}")
            if not own and any(part.startswith("_") and not part.startswith("__") for part in mod.split(".")[2:]):
                out.append(f"{where}: imports private module {mod}")
            if unit != "cli" and target in ("commands", "cli") and unit != "commands":
                out.append(f"{where}: {unit} imports the CLI ({mod})")
        if unit != "core":
            out.extend(f"{path.relative_to(ROOT)}:{line}: uses private name {name} of {mod}"
                       for line, mod, name in private_attributes_of_core(path, dotted))
    return out


def private_attributes_of_core(path: Path, dotted: str) -> list[tuple[int, str, str]]:
    """(line, core module, name) of every ``module._name`` read through a core module bound by an import
    (``from cape_hpc import options``, ``import cape_hpc.schema as s``; ``cape_hpc.options._x`` spelled out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if unit_of_module(a.name) == "core":
                    bound[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module == "cape_hpc" and not node.level:
            bound.update({a.asname or a.name: f"cape_hpc.{a.name}" for a in node.names
                          if a.name in CORE - {"__init__"}})
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            if owner in bound:
                out.append((node.lineno, bound[owner], node.attr))
    return out


def test_import_direction():
    bad = violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The rules are not vacuous: an analysis module importing steering, a kernel importing cape_hpc,
    a private cross-package name and a private name of core (imported, or read as an attribute of a
    core module) outside core are all reported; core's own use of its private names is not."""
    fake = [
        (ROOT / "cape_hpc" / "analysis" / "zz_fake.py", "from cape_hpc.steering.steer import run_steering\n"),
        (ROOT / "kernels" / "cape_kernels" / "zz_fake.py", "import cape_hpc.schema\n"),
        (ROOT / "cape_hpc" / "steering" / "zz_fake.py", "from cape_hpc.internals.extract import _hidden\n"),
        (ROOT / "cape_hpc" / "report" / "zz_fake.py", "from cape_hpc.internals.extract import extract_internals\n"),
        (ROOT / "cape_hpc" / "commands" / "zz_fake.py", "from cape_hpc.options import _split_optional\n"),
        (ROOT / "cape_hpc" / "sweep" / "zz_fake.py", "from cape_hpc import schema\nschema._hints(int)\n"),
        (ROOT / "cape_hpc" / "io" / "zz_fake.py", "import cape_hpc.errors as e\nx = e._missing\n"),
        (ROOT / "cape_hpc" / "lazy.py", "from cape_hpc.options import _flag\n"),  # core itself: allowed
    ]
    real_read = Path.read_text
    monkeypatch.setattr(sys.modules[__name__], "source_files", lambda: [p for p, _ in fake])
    texts = {p: t for p, t in fake}
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: texts.get(self) or real_read(self, *a, **k))
    bad = "\n".join(violations())
    assert "analysis imports cape_hpc.steering.steer" in bad
    assert "cape_kernels imports cape_hpc.schema" in bad
    assert "private name(s) _hidden" in bad
    assert "report imports cape_hpc.internals.extract" in bad
    assert "commands/zz_fake.py:1: imports private name(s) _split_optional of cape_hpc.options" in bad
    assert "sweep/zz_fake.py:2: uses private name _hints of cape_hpc.schema" in bad
    assert "io/zz_fake.py:2: uses private name _missing of cape_hpc.errors" in bad
    assert "lazy.py" not in bad


@pytest.mark.parametrize("module", ["cape_hpc.report", "cape_hpc.analysis", "cape_hpc.audit",
                                    "cape_hpc.dynamics", "cape_hpc.stats"])
def test_torch_free_packages_do_not_import_torch(module):
    """The report, the analyses, dynamics and the audit run without torch (a subprocess, clean modules)."""
    code = f"import sys, importlib; importlib.import_module({module!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False", f"importing {module} imports torch"


def test_kernels_import_alone():
    """cape_kernels is usable without cape_hpc: importing it (and its resampling) loads no cape_hpc module."""
    code = ("import sys, cape_kernels, cape_kernels.resample; "
            "print(sorted(m for m in sys.modules if m.startswith('cape_hpc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

"""The project's documentation stands on its own (docs/METHODS.md §1).

- every section cited as ``docs/METHODS.md §X.Y`` (and every bare ``§X.Y``) in the code, tests,
  benchmarks, scripts and documents is a heading of docs/METHODS.md, and METHODS.md has every
  section the contracts name (§1, §2.1-§2.15, §3, §4);
- no file there points outside the repository (the first wave's method text lived in a sibling
  folder) or cites that text's sections instead of METHODS.md;
- every relative markdown link in the documents points to an existing file;
- the code maps ("where is it computed": docs/METHODS.md section -> module:function) name code that
  exists, and every `cape <analysis>` record (``cape_hpc.commands.analysis.ANALYSES``) has its
  section in METHODS.md and its row in the §2 map.

The files are read as text; only the code-map tests import the code they name.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "METHODS.md"
SCANNED_DIRS = ("cape_hpc", "kernels", "benchmarks", "scripts", "tests", "docs", "slurm", "jobs")
SCANNED_FILES = ("README.md", "CONTRIBUTING.md", "Makefile", "setup.py", "data/README.md", "data/claims.yaml")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".sbatch", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".toml", ".cu", ".json"}
REQUIRED_SECTIONS = ["1", *(f"2.{i}" for i in range(1, 16)), "3", "4"]

# Written in pieces so that this file does not contain what it forbids.
OUTSIDE = re.compile(r"\.\./" + "shared|/work/" + "shared")
OLD_SPEC = re.compile(r"\b" + "SP" + r"EC\b")

# "§2.4", "§ 2.4", ranges "§2.1-2.3" / "§2.1-§2.3" / "§2.1–2.3"
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)(?:\s*[-–]\s*§?\s*(\d+(?:\.\d+)*))?")
# a reference to the paper's own section numbering is not a METHODS.md citation
PAPER_BEFORE = re.compile(r"paper(?:'s)?\s*$", re.IGNORECASE)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def scanned_files() -> list[Path]:
    out = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        base = ROOT / d
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts \
                    and not any(part.startswith(".") for part in p.relative_to(ROOT).parts):
                out.append(p)
    return out


def read(p: Path) -> str:
    return p.read_text(encoding="utf-8", errors="replace")


def expand(first: str, last: str | None) -> list[str]:
    """'2.1', '2.3' -> ['2.1', '2.2', '2.3'] (a range within one major section); else both ends."""
    if not last:
        return [first]
    a, b = first.split("."), last.split(".")
    if len(a) == len(b) == 2 and a[0] == b[0] and int(a[1]) <= int(b[1]):
        return [f"{a[0]}.{i}" for i in range(int(a[1]), int(b[1]) + 1)]
    return [first, last]


def cited_sections(text: str) -> list[tuple[int, str]]:
    """(line number, section) of every § citation in ``text``, ranges expanded."""
    out = []
    for m in SECTION.finditer(text):
        if PAPER_BEFORE.search(text[max(0, m.start() - 12):m.start()]):
            continue
        line = text.count("\n", 0, m.start()) + 1
        out += [(line, s) for s in expand(m.group(1), m.group(2))]
    return out


def methods_sections() -> set[str]:
    heads = [ln for ln in read(METHODS).splitlines() if ln.startswith("#")]
    return {m.group(1) for ln in heads for m in [re.match(r"#+\s*§(\d+(?:\.\d+)*)\s", ln)] if m}


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# ------------------------------------------------------------------------------------ the helpers
def test_citation_parser_on_known_text():
    text = ("see docs/METHODS.md §2.4 and §4\n| x | §2.1, §2.2 |\n(METHODS.md §2.1-2.3) §3.7–§3.9\n"
            "the paper's §6 is not ours; docs/METHODS.md § 1.2\n")
    got = [s for _, s in cited_sections(text)]
    assert got == ["2.4", "4", "2.1", "2.2", "2.1", "2.2", "2.3", "3.7", "3.8", "3.9", "1.2"]
    assert [ln for ln, s in cited_sections(text) if s == "1.2"] == [4]
    assert OLD_SPEC.search("as " + "SP" + "EC 2.4 says") and not OLD_SPEC.search("JOB" + "SPEC_X spec")
    assert OUTSIDE.search("see ../" + "shared/NOTES.md") and not OUTSIDE.search("cape_hpc/shared_utils")
    assert LINK.findall("[a](docs/X.md) ![img](f.png) [b](https://x.org) [c](#top)") == \
        ["docs/X.md", "https://x.org", "#top"]


# ------------------------------------------------------------------------------------ METHODS.md
def test_methods_has_every_section_of_the_contracts():
    assert METHODS.is_file(), "docs/METHODS.md is missing"
    have = methods_sections()
    missing = [s for s in REQUIRED_SECTIONS if s not in have]
    assert not missing, f"docs/METHODS.md lacks headings for §{', §'.join(missing)}"


def test_every_cited_section_exists():
    have = methods_sections()
    files = scanned_files()
    assert len(files) > 50, "the scan found too few files: the folder layout changed"
    bad = [f"{rel(p)}:{line}: §{s}" for p in files for line, s in cited_sections(read(p)) if s not in have]
    assert not bad, "cited sections that docs/METHODS.md does not have:\n" + "\n".join(bad)


def test_no_reference_outside_the_repository():
    bad = []
    for p in scanned_files():
        if p == Path(__file__).resolve():
            continue
        for i, line in enumerate(read(p).splitlines(), 1):
            quoted = line.replace("`" + "SP" + "EC`", "")  # naming the word in code quotes is not a citation
            if OUTSIDE.search(line) or OLD_SPEC.search(quoted):
                bad.append(f"{rel(p)}:{i}: {line.strip()[:100]}")
    assert not bad, ("files cite the old method text or a path outside the repository "
                     "(cite docs/METHODS.md §X.Y instead):\n" + "\n".join(bad))


def test_team_md_replaced_by_contributing():
    assert (ROOT / "CONTRIBUTING.md").is_file()
    assert not (ROOT / "docs" / "TEAM.md").exists()


# ------------------------------------------------------------------------------------ links
def markdown_files() -> list[Path]:
    return sorted({p for p in scanned_files() if p.suffix == ".md"}
                  | {p for p in (ROOT / "README.md", ROOT / "CONTRIBUTING.md") if p.is_file()})


@pytest.mark.parametrize("md", markdown_files(), ids=rel)
def test_relative_links_point_to_files(md):
    text = read(md)
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # URL, mailto:, or an anchor in the same page
        path = target.split("#", 1)[0]
        resolved = (ROOT / path.lstrip("/")) if path.startswith("/") else (md.parent / path)
        if not resolved.exists():
            bad.append(target)
        elif ROOT not in resolved.resolve().parents and resolved.resolve() != ROOT:
            bad.append(f"{target} (outside the repository)")
    assert not bad, f"{rel(md)}: broken relative links: {', '.join(bad)}"


# ------------------------------------------------------------------------------------ code maps
# The "where is it computed" tables (docs/METHODS.md section -> module:function): the one of §2 in
# cape_hpc/analysis/__init__.py's docstring, those of §3, §4 and the sweep in docs/METHODS.md.  These
# tests import the named code: a map that names a function that moved or was renamed fails here.

CODE_REF = re.compile(r"`((?:cape_hpc|cape_kernels)(?:\.\w+)*):(\w+)`")


def analysis_map() -> list[tuple[str, list[str], str, str]]:
    """(module, [functions], options class, section) rows of cape_hpc/analysis/__init__.py's table."""
    import cape_hpc.analysis

    rows = []
    for line in cape_hpc.analysis.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[3].startswith("§"):
            rows.append((cells[0], [f.strip() for f in cells[1].split(",")], cells[2], cells[3]))
    return rows


def methods_code_refs() -> list[tuple[int, str, str]]:
    """(line, module, name) of every `module:function` that docs/METHODS.md names."""
    text = read(METHODS)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in CODE_REF.finditer(text)]


def test_code_ref_parser_on_known_text():
    text = "| §3.4 | coupling | `cape_hpc.internals.blocks:layer_coupling` |\n`cape_kernels.ops:pooled_tap`, `x:y`"
    assert [m.groups() for m in CODE_REF.finditer(text)] == [("cape_hpc.internals.blocks", "layer_coupling"),
                                                              ("cape_kernels.ops", "pooled_tap")]


def test_analysis_map_names_functions_that_exist():
    import importlib

    rows = analysis_map()
    assert len(rows) >= 13, "the §2 table of cape_hpc/analysis/__init__.py was not found"
    missing = [f"cape_hpc.analysis.{mod}:{fn}" for mod, fns, _, _ in rows for fn in fns
               if not hasattr(importlib.import_module(f"cape_hpc.analysis.{mod}"), fn)]
    assert not missing, "the §2 map of cape_hpc/analysis/__init__.py names what does not exist: " + ", ".join(missing)


def test_every_analysis_command_is_in_the_map_and_in_methods():
    """Derived from the records of `cape <analysis>` (cape_hpc.commands.analysis.ANALYSES): each
    record's section is a METHODS.md heading, and the §2 map has its function under that section."""
    from cape_hpc.commands.analysis import ANALYSES

    have = methods_sections()
    rows = {(mod, fn): (opts, sec) for mod, fns, opts, sec in analysis_map() for fn in fns}
    bad = []
    for a in ANALYSES:
        mod, fn = a.func.split(":")
        if a.section.lstrip("§") not in have:
            bad.append(f"{a.name}: {a.section} is not a heading of docs/METHODS.md")
        if rows.get((mod, fn)) != (a.options.__name__, a.section):
            bad.append(f"{a.name}: the §2 map has no row '{mod} | {fn} | {a.options.__name__} | {a.section}'")
    assert not bad, "\n".join(bad)


def test_methods_names_code_that_exists():
    import importlib

    refs = methods_code_refs()
    sections = {sec for _, mod, _ in refs for sec in (mod.split(".")[1],)}
    assert {"internals", "steering", "sweep"} <= sections, \
        f"docs/METHODS.md maps too little code (packages named: {sorted(sections)})"
    bad = []
    for line, mod, name in refs:
        try:
            ok = hasattr(importlib.import_module(mod), name)
        except ImportError as exc:
            ok, name = False, f"{name} ({exc})"
        if not ok:
            bad.append(f"docs/METHODS.md:{line}: {mod}:{name}")
    assert not bad, "docs/METHODS.md names code that does not exist:\n" + "\n".join(bad)

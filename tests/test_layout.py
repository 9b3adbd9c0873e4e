"""The shape of the tree stays what docs/architecture.md says: no two modules import each
other, one options crate reads the environment, no two crates export a type of the same
name. Cheap checks over the sources, so a change that breaks the layout fails here rather
than in a review."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ROOT / "crates"


def _code(path: Path) -> str:
    """A Rust file without its comment lines (doc links are not imports)."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("//"))


def _rust_modules(crate: Path) -> dict[str, set[str]]:
    src = crate / "src"
    graph: dict[str, set[str]] = {}
    for path in src.rglob("*.rs"):
        name = str(path.relative_to(src).with_suffix("")).replace("/", "::").removesuffix("::mod")
        deps: set[str] = set()
        for ref in re.findall(r"crate::(\w+(?:::\w+)?)", _code(path)):
            parts = ref.split("::")
            if (src / "/".join(parts)).with_suffix(".rs").exists():
                deps.add("::".join(parts))
            elif (src / parts[0]).with_suffix(".rs").exists() or (src / parts[0]).is_dir():
                deps.add(parts[0])
        graph[name] = {d for d in deps if d != name and not name.startswith(d + "::") and not d.startswith(name + "::")}
    return graph


def _python_modules() -> dict[str, set[str]]:
    package = ROOT / "python" / "jitload"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        text = path.read_text()
        deps = set(re.findall(r"from \.(\w+) import", text))
        for names in re.findall(r"from \. import ([\w, ]+)", text):
            deps |= {n.strip().split(" as ")[0] for n in names.split(",")}
        graph[path.stem] = {d for d in deps if d != path.stem and (package / f"{d}.py").exists()}
    return graph


def _pairs(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))


def test_no_two_modules_import_each_other() -> None:
    found = {"python/jitload": _pairs(_python_modules())}
    for crate in sorted(CRATES.iterdir()):
        found[crate.name] = _pairs(_rust_modules(crate))
    assert {k: v for k, v in found.items() if v} == {}


def test_only_the_options_crate_reads_the_environment() -> None:
    readers = sorted(
        str(p.relative_to(ROOT)) for p in CRATES.glob("*/src/**/*.rs") if re.search(r"env::var|var_os", _code(p))
    )
    assert all(r.startswith("crates/jitload-options/") for r in readers), readers


def test_no_two_crates_export_a_type_of_the_same_name() -> None:
    owners: dict[str, set[str]] = {}
    for path in CRATES.glob("*/src/**/*.rs"):
        for name in re.findall(r"^pub (?:struct|enum) (\w+)", path.read_text(), re.M):
            owners.setdefault(name, set()).add(path.relative_to(CRATES).parts[0])
    assert {n: sorted(c) for n, c in owners.items() if len(c) > 1} == {}

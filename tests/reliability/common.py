"""Shared helpers for the reliability runs: paths, seed inputs built from checked-in sources
and real corpus modules, and the results file every run merges its figures into."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
RESULTS = ROOT / "docs" / "reliability.json"
WORK = ROOT / "target" / "reliability"
CORPUS_CACHE = Path(os.environ.get("JITLOAD_CORPUS_DIR", Path.home() / ".cache" / "jitload-corpus"))


def llvm_tool(name: str) -> str:
    for candidate in (f"{name}-22", f"/usr/lib/llvm-22/bin/{name}", name):
        found = shutil.which(candidate)
        if found:
            return found
    raise FileNotFoundError(f"{name} (LLVM 22) not found")


def clang() -> str:
    import jitload._clang

    return jitload._clang.find()


def libpython() -> str:
    """The shared libpython of this interpreter ('' if it is linked statically)."""
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    path = Path(libdir) / name
    return str(path) if (name.endswith(".so") or ".so." in name) and path.exists() else ""


def corpus_bitcode(max_bytes: int = 1 << 30, limit: int = 1000) -> List[Path]:
    """The corpus packages' built .bc files (from `make corpus`'s work directory), one per
    module name, smallest first."""
    seen: Dict[str, Path] = {}
    root = CORPUS_CACHE / "work"
    if root.is_dir():
        for p in sorted(root.rglob("*.bc")):
            if "/build/" in str(p) or p.stat().st_size > max_bytes:
                continue
            seen.setdefault(p.name, p)
    return sorted(seen.values(), key=lambda p: p.stat().st_size)[:limit]


def build_seed_modules(out: Path) -> Dict[str, List[Path]]:
    """Compiles the seed sources to bitcode (-O0 and -O2), objects (several code models and
    relocation styles) and IR text. Returns {"bc": [...], "o": [...], "ll": [...]}."""
    from jitload.build import compile as jl_compile

    out.mkdir(parents=True, exist_ok=True)
    cc = clang()
    result: Dict[str, List[Path]] = {"bc": [], "o": [], "ll": []}
    sources = sorted(SEEDS.glob("*.c")) + [ROOT / "examples" / "fastmath.c"]
    for src in sources:
        if not src.exists():
            continue
        stem = src.stem
        for opt in ("-O0", "-O2"):
            bc = out / f"{stem}{opt}.bc"
            if not bc.exists():
                jl_compile([str(src)], str(bc), opt_level=int(opt[2:]))
            result["bc"].append(bc)
        for variant, flags in {
            "pic": ["-fPIC", "-O1"],
            "nopic": ["-fno-pic", "-O1"],
            "large": ["-fPIC", "-mcmodel=large", "-O1"],
            "sections": ["-fPIC", "-ffunction-sections", "-fdata-sections", "-O2"],
        }.items():
            obj = out / f"{stem}-{variant}.o"
            if not obj.exists():
                inc = _python_include_flags()
                r = subprocess.run([cc, "-c", *flags, *inc, str(src), "-o", str(obj)], capture_output=True, text=True)
                if r.returncode != 0:
                    continue
            result["o"].append(obj)
    dis = llvm_tool("llvm-dis")
    for bc in list(result["bc"]):
        ll = bc.with_suffix(".ll")
        if not ll.exists():
            subprocess.run([dis, str(bc), "-o", str(ll)], check=True)
        result["ll"].append(ll)
    for ll in sorted(SEEDS.glob("*.ll")):
        result["ll"].append(ll)
        bc = out / (ll.stem + ".bc")
        if not bc.exists():
            subprocess.run([llvm_tool("llvm-as"), str(ll), "-o", str(bc)], check=True)
        result["bc"].append(bc)
    return result


def _python_include_flags() -> List[str]:
    import sysconfig

    inc = sysconfig.get_paths().get("include")
    return [f"-I{inc}"] if inc else []


def merge_results(section: str, data: Dict[str, Any]) -> None:
    """Stores `data` as `section` of docs/reliability.json (other sections kept)."""
    current: Dict[str, Any] = {}
    if RESULTS.exists():
        try:
            current = json.loads(RESULTS.read_text())
        except json.JSONDecodeError:
            current = {}
    data = dict(data)
    data["recorded"] = time.strftime("%Y-%m-%d %H:%M:%S")
    current[section] = data
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def python() -> str:
    return sys.executable


def env_with_pythonpath(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    return env

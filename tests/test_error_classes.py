"""Every exception class jitload's native code raises (the Rust enum `ErrorClass`) exists
in `jitload.errors`, is exported from `jitload`, is an ImportError subclass, and is raised
by at least one test of this suite (checked by reading the tests: a `pytest.raises`,
`pytest.warns` or a comparison with the class's name)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import jitload
import jitload.build
import jitload.errors
from jitload import _fastload, _native

TESTS = Path(__file__).parent


def test_both_native_modules_know_the_same_classes() -> None:
    assert _native.error_classes() == _fastload.error_classes()


@pytest.mark.parametrize("name", _native.error_classes())
def test_class_exists_is_exported_and_is_an_import_error(name: str) -> None:
    cls = getattr(jitload.errors, name)
    assert issubclass(cls, jitload.JitloadError) and issubclass(cls, ImportError)
    assert name in jitload.errors.__all__ and name in jitload.__all__
    assert getattr(jitload, name) is cls


def _raising_tests() -> str:
    return "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))


@pytest.mark.parametrize("name", sorted(set(_native.error_classes()) | set(jitload.errors.__all__)))
def test_class_is_raised_by_a_test(name: str) -> None:
    text = _raising_tests()
    uses = [
        rf"pytest\.(raises|warns)\(\s*\(?[^)]*\b{name}\b",
        rf"==\s*[\"']{name}[\"']",
        rf"[\"']{name}[\"']\s*(==|in)",
        rf"isinstance\([^)]*\b{name}\b",
        rf"startswith\([\"']{name}",
    ]
    assert any(re.search(u, text) for u in uses), f"no test raises {name}"


def test_a_failed_write_is_the_generic_jitload_error(tmp_path: Path) -> None:
    """Failures that are no particular kind (writing the output, the JIT itself) raise the
    base class, with the path."""
    from conftest import single_phase

    src = tmp_path / "m.c"
    src.write_text(single_phase("m"))
    jitload.build.compile([str(src)], str(tmp_path / "m.bc"))
    target = tmp_path / "missing-dir" / "out.bc"
    with pytest.raises(jitload.JitloadError) as info:
        _native.link_bitcode([tmp_path / "m.bc"], target)
    assert type(info.value) is jitload.JitloadError and str(target) in str(info.value), info.value

"""Settings (`JITLOAD_*`): one table and one meaning everywhere. The native modules parse
with the `jitload-options` crate, the Python side with `jitload._settings` (it must work where
no native module loads); these tests hold the two to the same table and the same answers, and
check that bad values are named in a warning and never change behaviour silently."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

import jitload
from jitload import _fastload, _settings, config

# Values of every shape, valid and not, for every kind.
SAMPLES = ["", " ", "0", "1", "2", "3", "4", "7", "16", "300", "99999999999999999999", "-1", "1.5", "0.05", "0.1",
           "inf", "nan", "on", "OFF", " yes ", "No", "true", "maybe", "fork", "none", "host", "Native", "generic",
           "znver3", "auto", "mprotect", "dualmap", "/some/path", "x"]


def _rust_values(env: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    """What `_fastload` (the crate) parses from `env`, in a fresh interpreter (it reads the
    environment once)."""
    code = "import json, jitload._fastload as f; o = f.options(); print(json.dumps([{k: v[0] for k, v in o.items() if k != 'cache_dir'}, f.option_problems(), o['cache_dir']]))"
    base = {k: v for k, v in os.environ.items() if not k.startswith("JITLOAD_")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    values, problems, cache_dir = __import__("json").loads(out.stdout)
    values["cache_dir"] = cache_dir
    return values, problems


def test_the_two_tables_are_the_same() -> None:
    rust = _fastload.options()
    python = {name: (kind, default, doc) for name, kind, _, default, doc in _settings.SETTINGS}
    assert list(python) == [k for k in rust if k != "cache_dir"]
    for name, (_, _, kind, default, doc) in ((k, v) for k, v in rust.items() if k != "cache_dir"):  # type: ignore[misc]
        assert python[name] == (kind, default, doc), name


@pytest.mark.parametrize("kind", ["flag", "count", "seconds", "choice", "text"])
def test_both_parsers_agree_on_every_value(kind: str) -> None:
    names = [s[0] for s in _settings.SETTINGS if s[1] == kind]
    # One interpreter per sample: every setting of the kind gets the same value.
    for raw in SAMPLES:
        env = {name: raw for name in names}
        rust, rust_problems = _rust_values(env)
        python, _, python_problems = _settings.read(env)
        for name in names:
            assert rust.get(name) == python.get(name), f"{name}={raw!r}: crate {rust.get(name)!r}, Python {python.get(name)!r}"
        assert sorted(rust_problems) == sorted(python_problems), raw


def test_startup_flags_parse_as_the_table_says() -> None:
    """The start-up hook's own flag reader (it runs before anything can be imported) gives the
    table's answer for every valid flag value."""
    import _jitload_hook

    for raw in ["1", "on", "TRUE", " yes ", "0", "off", "no", "False", ""]:
        os.environ["JITLOAD_DISABLE"] = raw
        try:
            assert _jitload_hook.env_flag("JITLOAD_DISABLE") == bool(_settings.parse("JITLOAD_DISABLE", raw)), raw
        finally:
            del os.environ["JITLOAD_DISABLE"]


def test_cache_dir_rules_agree() -> None:
    for env in [
        {"HOME": "/h"},
        {"HOME": "/h", "XDG_CACHE_HOME": "/x"},
        {"HOME": "/h", "XDG_CACHE_HOME": "relative"},
        {"HOME": "/h", "JITLOAD_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"},
        {"HOME": "/h", "JITLOAD_CACHE_DIR": "  "},
    ]:
        rust, _ = _rust_values(env)
        assert rust["cache_dir"] == _settings.cache_dir(env), env


def test_a_bad_value_is_a_warning_naming_the_variable_and_the_default_holds(tmp_path) -> None:
    code = (
        "import warnings, jitload\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    o = jitload.options()\n"
        "print(o['JITLOAD_OPT_LEVEL'], o['JITLOAD_CACHE'])\n"
        "for x in w: print(x.category.__name__, x.message)\n"
    )
    env = {**os.environ, "JITLOAD_OPT_LEVEL": "9", "JITLOAD_CACHE": "nope", "JITLOAD_CAHCE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "2 True"
    assert any(line.startswith("OptionWarning JITLOAD_OPT_LEVEL=\"9\" is not valid: expected a whole number from 0 to 3") for line in lines)
    assert any("JITLOAD_CACHE=\"nope\" is not valid" in line for line in lines)
    assert any("JITLOAD_CAHCE_DIR is not a jitload setting (did you mean JITLOAD_CACHE_DIR?)" in line for line in lines)


def test_set_option_reaches_python_and_both_native_modules() -> None:
    from jitload import _native

    before = jitload.options()["JITLOAD_COMPILE_TIMEOUT_S"]
    try:
        jitload.set_option("JITLOAD_COMPILE_TIMEOUT_S", "123.5")
        assert jitload.options()["JITLOAD_COMPILE_TIMEOUT_S"] == 123.5
        assert _fastload.options()["JITLOAD_COMPILE_TIMEOUT_S"][0] == 123.5
        assert _native.options()["JITLOAD_COMPILE_TIMEOUT_S"][0] == 123.5
        with pytest.raises(ValueError, match="from 0.1 to 1000000000"):
            jitload.set_option("JITLOAD_COMPILE_TIMEOUT_S", "0")
        with pytest.raises(ValueError, match="did you mean JITLOAD_COMPILE_TIMEOUT_S"):
            jitload.set_option("JITLOAD_COMPILE_TIMEOUT", "1")
    finally:
        jitload.set_option("JITLOAD_COMPILE_TIMEOUT_S", "")
    assert jitload.options()["JITLOAD_COMPILE_TIMEOUT_S"] == before
    assert _native.options()["JITLOAD_COMPILE_TIMEOUT_S"][0] == before


def test_options_command_lists_every_setting() -> None:
    out = subprocess.run([sys.executable, "-m", "jitload", "options"], capture_output=True, text=True, check=True).stdout
    for name, *_ in _settings.SETTINGS:
        assert f"\n{name}=" in "\n" + out, name
    assert "cache directory:" in out


def test_the_python_options_follow_the_environment_read(monkeypatch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o = config.Options.from_values(_settings.read({"JITLOAD_FAST": "off", "JITLOAD_ISOLATION": "NONE"})[0], {})
    assert o.fast_wrappers is False and o.isolate is False and o.cache is True and o.opt_level == 2

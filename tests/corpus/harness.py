"""Runs a package's own test command in this interpreter, then proves where its extension
modules came from: each must have been imported from a ``.bc`` file by jitload.

    python harness.py --extensions a._x,b._y --check EXPR -- pytest tests -q

Prints one line ``JITLOAD-CORPUS {json}`` at the end (with this process's object-cache
counts: how many bitcode modules were linked from the cache, and how many of those without
loading LLVM) and exits with the test command's
status, or 3 if an extension was not loaded from bitcode.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extensions", required=True)
    ap.add_argument("--check", default="True")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    extensions = [e for e in args.extensions.split(",") if e]

    import jitload

    jitload.install(prefer_bitcode=True)
    # Behave like `python -m <command>` run from the test directory: the current directory,
    # not this file's, comes first on sys.path.
    sys.path[0] = os.getcwd()
    sys.argv = list(command)
    status = 0
    try:
        runpy.run_module(command[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)

    files = {}
    for name in extensions:
        try:
            files[name] = getattr(importlib.import_module(name), "__file__", None)
        except Exception as e:  # report, don't hide: this is the acceptance check
            files[name] = f"import failed: {type(e).__name__}: {e}"
    from_bitcode = all(isinstance(f, str) and f.endswith(".bc") for f in files.values())
    try:
        check = bool(eval(args.check, {}))
    except Exception as e:
        check = False
        print(f"check expression failed: {type(e).__name__}: {e}", file=sys.stderr)
    report = {"status": status, "files": files, "from_bitcode": from_bitcode, "check": check, "cache": jitload.cache_stats()}
    print("JITLOAD-CORPUS " + json.dumps(report), flush=True)
    if status == 0 and not (from_bitcode and check):
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())

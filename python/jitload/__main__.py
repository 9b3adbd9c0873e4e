"""The ``jitload`` command line (``python -m jitload``).

  compile SRC... -o OUT.bc [-I DIR] [-D NAME] [-l LIB] [-L DIR] [-O N] [--cflag FLAG]
      compile C/C++ sources with clang 22 and link them into one bitcode module
  build-ext PATH [--inplace | --wheel DIR] [--no-build-isolation] [-C KEY=VALUE]...
      build every extension of a project (directory or sdist) to bitcode; --wheel runs the
      project's PEP 517 backend (setuptools, meson-python, scikit-build-core, ...)
  info
      LLVM version, host target, bitcode suffixes
  --version
      jitload's, LLVM's and clang's versions, and where libLLVM and clang were found
      (exit status 1 if no usable libLLVM was found)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .errors import JitloadError, ToolchainError


class _VersionAction(argparse.Action):
    """``--version``: looks for libLLVM and clang only when asked (argparse's own version
    action takes its text when the parser is built)."""

    def __init__(self, option_strings: List[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show jitload's, LLVM's and clang's versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from jitload import versions

        v = versions()
        print(f"jitload {v['jitload']}")
        print(f"LLVM {v['llvm']}: {v['libllvm']}" if v["llvm"] else f"LLVM: {v['libllvm']}")
        print(f"clang {v['clang']}: {v['clang_path']}" if v["clang"] else f"clang: {v['clang_path']}")
        parser.exit(0 if v["llvm"] else 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jitload", description="Import Python extension modules from LLVM bitcode.")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile C/C++ sources to one bitcode module")
    c.add_argument("sources", nargs="+")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("-I", dest="include_dirs", action="append", default=[])
    c.add_argument("-D", dest="defines", action="append", default=[])
    c.add_argument("-l", dest="libraries", action="append", default=[])
    c.add_argument("-L", dest="library_dirs", action="append", default=[])
    c.add_argument("-O", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3])
    c.add_argument("--cflag", dest="cflags", action="append", default=[], help="extra clang flag (repeatable)")

    b = sub.add_parser("build-ext", help="build a setuptools project's extensions to bitcode")
    b.add_argument("path", help="project directory or sdist (.tar.gz/.zip)")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--inplace", action="store_true", help="write .bc files beside the sources (default for directories)")
    mode.add_argument("--wheel", metavar="DIR", help="write a wheel whose extension modules are .bc files")
    b.add_argument("--no-build-isolation", action="store_true", help="build in this environment (it must have the build requirements)")
    b.add_argument(
        "-C", "--config-settings", dest="config_settings", action="append", default=[], metavar="KEY=VALUE",
        help="setting for the project's build backend, as pip wheel -C (repeatable; implies --wheel)",
    )

    sub.add_parser("info", help="LLVM version, host target and suffixes")
    sub.add_parser("options", help="every JITLOAD_* setting: value in effect, where it came from, meaning")
    k = sub.add_parser("cache", help="the persistent object cache: info, clear, prune")
    k.add_argument("action", choices=["info", "clear", "prune"])
    k.add_argument("--max-mb", type=int, default=None, help="prune down to this size (default: the configured limit)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "compile":
            from .build import compile

            out = compile(
                args.sources,
                args.output,
                cflags=args.cflags,
                include_dirs=args.include_dirs,
                defines=args.defines,
                libraries=args.libraries,
                library_dirs=args.library_dirs,
                opt_level=args.opt_level,
            )
            print(out)
        elif args.command == "build-ext":
            from . import build

            path = Path(args.path)
            if args.inplace and args.config_settings:
                raise ToolchainError("-C settings go to a PEP 517 backend, which only a --wheel build runs")
            if path.is_dir() and not args.wheel and not args.config_settings:
                for p in build.build_ext_inplace(path):
                    print(p)
            else:  # an sdist always becomes a wheel (default: into the current directory)
                wheel = build.build_wheel(
                    path, args.wheel or Path.cwd(), isolation=not args.no_build_isolation, config_settings=args.config_settings
                )
                print(wheel)
        elif args.command == "info":
            import jitload

            print(f"LLVM {jitload.llvm_version()}")
            for k, v in jitload.host_target().items():
                print(f"{k}: {v if k != 'features' else str(len(v.split(',')))+' features'}")
            print("suffixes: " + " ".join(jitload.BITCODE_SUFFIXES))
        elif args.command == "cache":
            return _cache(args.action, args.max_mb)
        elif args.command == "options":
            _options()
    except JitloadError as e:
        print(f"jitload: {e}", file=sys.stderr)
        return 1
    return 0


def _options() -> None:
    from . import _settings, config

    values, given = config.current()
    for name, _, _, default, doc in _settings.SETTINGS:
        value = values.get(name)
        shown = "(not set)" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        source = "set" if name in given else "default"
        print(f"{name}={shown}  [{source}]  {doc}")
    print(f"cache directory: {config.options.cache_dir or '(none: HOME is not set)'}")


def _cache(action: str, max_mb: Optional[int]) -> int:
    from . import _native

    info = _native.cache_info()
    if info is None:
        print("jitload: the object cache is off (JITLOAD_CACHE=0) or unusable (see the warning above)", file=sys.stderr)
        return 1
    if action == "info":
        print(f"directory: {info['dir']}")
        print(f"entries: {info['entries']}")
        print(f"size: {info['bytes'] / 2**20:.1f} MiB of {info['max_bytes'] / 2**20:.0f} MiB")
    elif action == "clear":
        print(f"removed {_native.cache_clear()} entries from {info['dir']}")
    else:
        limit = info["max_bytes"] if max_mb is None else max_mb * 2**20
        stats = _native.cache_prune(limit) or {}
        print(
            f"removed {stats.get('removed', 0)} entries ({stats.get('freed_bytes', 0) / 2**20:.1f} MiB); "
            f"{stats.get('remaining_entries', 0)} left ({stats.get('remaining_bytes', 0) / 2**20:.1f} MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run by ``jitload.pth`` at interpreter start: installs the import hook (pure Python, no LLVM)."""

import os

if os.environ.get("JITLOAD_DISABLE", "").strip().lower() not in ("1", "true", "yes", "on"):
    from .importer import install as _install

    _install()

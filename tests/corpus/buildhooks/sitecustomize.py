"""Loaded (as ``sitecustomize``) by Python processes a corpus CMake build starts: an extension
module file ``name.<tag>.so`` that holds LLVM bitcode — what jitload's toolchain makes — is
imported through jitload, so build steps that import freshly built modules work."""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys


_MAGIC = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")


def _is_bitcode(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) in _MAGIC
    except OSError:
        return False


class _BitcodeSoFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        leaf = fullname.rpartition(".")[2]
        for entry in path if path is not None else sys.path:
            if not isinstance(entry, str):
                continue
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                candidate = os.path.join(entry or ".", leaf + suffix)
                if os.path.isfile(candidate) and _is_bitcode(candidate):
                    from jitload.importer import BitcodeExtensionLoader

                    loader = BitcodeExtensionLoader(fullname, candidate)
                    return importlib.util.spec_from_file_location(fullname, candidate, loader=loader)
        return None


sys.meta_path.insert(0, _BitcodeSoFinder())

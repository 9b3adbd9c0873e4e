"""atheris (coverage-guided, libFuzzer-based) fuzzing of jitload.signature.parse.

Oracle: any text parses to a Signature whose every type is known and whose str() parses
back to the same Signature (and builds a ctypes prototype), or raises ValueError/TypeError.
Any other exception or a crash is a finding.

    python tests/reliability/atheris_signature.py CORPUS_DIR -runs=100000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["jitload.signature"]):
    from jitload import signature


def one(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        sig = signature.parse(text)
    except (ValueError, TypeError):
        return
    assert sig.result in signature.TYPES, sig
    assert all(a in signature.TYPES and a != "void" for a in sig.args), sig
    assert signature.parse(str(sig)) == sig, (text, sig)
    sig.ctypes_prototype()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()

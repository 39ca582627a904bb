"""The one C extension, ``ledger._keccak`` (ADR 0013); the rest is pyproject.toml.

Keccak-256 over a whole Merkle tree. Building it needs a C compiler and the Python
headers; without it ``ledger`` falls back to ``safe-pysha3``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ledger._keccak",
            ["ledger/_keccak.c"],
            depends=["ledger/_keccak_f1600.h"],
            extra_compile_args=["-O3"],
        )
    ]
)

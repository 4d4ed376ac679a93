"""Build the one C extension (atomic operations on shared guest memory);
everything else is declared in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("pyxen._atomic", sources=["src/pyxen/_atomic.c"],
                             extra_compile_args=["-O2"])])

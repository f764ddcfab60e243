"""Build the C API's test extensions (tests/test_capi.py runs this):

    python setup.py build_ext --build-lib OUT --build-temp TMP

They compile against pyssh.get_include() and link nothing of pyssh's."""

import sys

from setuptools import Extension, setup

import pyssh

flags = [] if sys.platform == "win32" else ["-Wall", "-Wextra", "-Werror"]
setup(
    name="pyssh-capi-test-extensions",
    ext_modules=[
        Extension(name, [f"{name}.c"], include_dirs=[pyssh.get_include()], extra_compile_args=flags)
        for name in ("example", "consumer")
    ],
)

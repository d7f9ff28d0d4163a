"""Build the compiled core (src/pinkrelay/_core: _cpinkrelay.pyx, and the data plane).

Everything else about the package lives in pyproject.toml. The compiler
directives live here, in one place, for every extension.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

#: PINKRELAY_SANITIZE=1 (scripts/sanitize.sh, make sanitize): AddressSanitizer and UBSan, for tests only.
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g",
            "-O1"] if os.environ.get("PINKRELAY_SANITIZE") else []

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}

extensions = [
    Extension(
        "pinkrelay._core._cpinkrelay",
        ["src/pinkrelay/_core/_cpinkrelay.pyx"],
        extra_compile_args=["-O2", *SANITIZE],
        extra_link_args=SANITIZE,
    ),
    # The data plane: C threads that read, check and fan out media without the GIL.
    Extension(
        "pinkrelay._core._dataplane",
        ["src/pinkrelay/_core/_dataplane.pyx", "src/pinkrelay/_core/dataplane.c"],
        include_dirs=["src/pinkrelay/_core"],
        extra_compile_args=["-O2", "-pthread", *SANITIZE],
        extra_link_args=["-pthread", *SANITIZE],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES))

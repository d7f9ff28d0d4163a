"""Build the compiled core (src/pinkrelay/_core: _cpinkrelay.pyx, and the data plane).

Everything else about the package lives in pyproject.toml. The compiler
directives live here, in one place, for every extension.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

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
        extra_compile_args=["-O2"],
    ),
    # The data plane: C threads that read, check and fan out media without the GIL.
    Extension(
        "pinkrelay._core._dataplane",
        ["src/pinkrelay/_core/_dataplane.pyx", "src/pinkrelay/_core/dataplane.c"],
        include_dirs=["src/pinkrelay/_core"],
        extra_compile_args=["-O2", "-pthread"],
        extra_link_args=["-pthread"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES))

"""Build the compiled core (src/pinkrelay/_core/_cpinkrelay.pyx).

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
]

setup(ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES))

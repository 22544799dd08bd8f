"""The one compiled piece: the CPU tile epilogues of the neighbour engine (kernels/_tiles.c, plain C for ctypes).

Optional: where no C compiler is found the package installs without it and the kernels' torch path runs
(``fastndb.kernels._native.available`` is then ``False``). Everything else is configured in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fastndb.kernels._tiles", sources=["kernels/_tiles.c"],
                             extra_compile_args=["-O3", "-fno-fast-math", "-fopenmp"],
                             extra_link_args=["-fopenmp"], optional=True)])

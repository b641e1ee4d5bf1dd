"""Build of gptc's C extension, gptc._C.

Every C file of csrc/ and csrc/arch/ goes into one extension module. The default build is
portable (baseline instructions only); csrc/isa.c picks the kernel set (AVX-512, AVX2, NEON
or plain C) at run time. GPTC_SANITIZE=1 builds with AddressSanitizer and
UndefinedBehaviorSanitizer for CI (see .ci/run).
"""
import glob
import os

import numpy
from setuptools import Extension, setup

# -fno-math-errno and -fno-trapping-math: gptc never reads errno or floating-
# point exception flags, and without these GCC keeps sqrtf and the selects of
# gptc_exp (csrc/internal.h) scalar. Neither changes any IEEE result.
compile_args = ["-std=c11", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
                "-fno-trapping-math", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers"]
link_args = ["-fopenmp"]
if os.environ.get("GPTC_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                "-fno-omit-frame-pointer", "-g", "-O1"]
    compile_args += sanitize
    link_args += sanitize
else:
    compile_args += ["-O3"]

extension = Extension(
    "gptc._C",
    sources=sorted(glob.glob(os.path.join("csrc", "*.c"))
                   + glob.glob(os.path.join("csrc", "arch", "*.c"))),
    depends=glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "arch", "*.h")),
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[extension])

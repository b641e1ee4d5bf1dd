"""Build of gptc's C extension, gptc._C.

Every C file of csrc/ (the core), csrc/arch/ (its kernel sets) and csrc/py/ (the
CPython/NumPy binding) goes into one extension module. The default build is
portable (baseline instructions only); csrc/isa.c picks the kernel set (AVX-512, AVX2, NEON
or plain C) at run time. GPTC_SANITIZE=1 builds with AddressSanitizer and
UndefinedBehaviorSanitizer for CI (see .ci/run).

The parallel loops use OpenMP when the compiler has it. Apple's clang has no
-fopenmp and Debian's clang has it only with libomp installed, so at build
time a tiny OpenMP program is compiled and linked with the compiler the
build will use (CC is honoured); if that fails gptc is built serially
(gptc._C.build_info() says which). GPTC_OPENMP=0 builds serially regardless.
"""
import glob
import os
import tempfile

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
# after setuptools: on Python 3.12+ distutils is the copy setuptools ships
from distutils.errors import CompileError, LinkError

# -fno-math-errno and -fno-trapping-math: gptc never reads errno or floating-
# point exception flags, and without these GCC keeps sqrtf and the selects of
# gptc_exp (csrc/internal.h) scalar. Neither changes any IEEE result.
compile_args = ["-std=c11", "-ffp-contract=fast", "-fno-math-errno",
                "-fno-trapping-math", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers"]
link_args = []
define_macros = []
if os.environ.get("GPTC_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                "-fno-omit-frame-pointer", "-g", "-O1"]
    compile_args += sanitize
    link_args += sanitize
    define_macros.append(("GPTC_SANITIZE", "1"))
else:
    compile_args += ["-O3"]

OPENMP_FLAG = "-fopenmp"

# Uses the runtime (omp.h, a parallel region, an omp_* call), so it fails both
# where the compiler rejects -fopenmp and where the library is missing.
OPENMP_PROBE = """\
#include <omp.h>
int main(void)
{
    int threads = 0;
#pragma omp parallel reduction(+ : threads)
    threads += 1;
    return threads > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def compiler_has_openmp(compiler):
    """Whether `compiler` (a distutils CCompiler, set up as the build will use
    it) compiles and links an OpenMP program with -fopenmp. Only builds the
    probe, never runs it, so that cross builds are judged correctly."""
    with tempfile.TemporaryDirectory(prefix="gptc-openmp-") as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=[OPENMP_FLAG])
            compiler.link_executable(objects, "probe", output_dir=tmp,
                                     extra_postargs=[OPENMP_FLAG])
        except (CompileError, LinkError):
            return False
    return True


def openmp_wanted():
    """GPTC_OPENMP: unset to use OpenMP if the compiler has it, 0 for a serial build."""
    value = os.environ.get("GPTC_OPENMP")
    if value not in (None, "", "0"):
        raise SystemExit(f"GPTC_OPENMP must be 0 (build without OpenMP) or unset "
                         f"(use it if the compiler has it), got {value!r}")
    return value != "0"


class BuildExtWithOptionalOpenMP(build_ext):
    """build_ext that adds -fopenmp only if the build's own compiler takes it."""

    def build_extensions(self):
        wanted = openmp_wanted()
        if wanted:
            # a compiler without OpenMP prints its error on the probe next
            print("gptc: checking whether the compiler builds OpenMP programs (-fopenmp)")
        if wanted and compiler_has_openmp(self.compiler):
            flags, note = [OPENMP_FLAG], "with OpenMP"
            link = [OPENMP_FLAG]
        else:
            # the #pragma omp lines are then ignored, which is what a serial
            # build means; only the warning about them is silenced
            flags, note = ["-Wno-unknown-pragmas"], "without OpenMP (serial)"
            link = []
        print(f"gptc: building {note}")
        for ext in self.extensions:
            ext.extra_compile_args = ext.extra_compile_args + flags
            ext.extra_link_args = ext.extra_link_args + link
        super().build_extensions()


extension = Extension(
    "gptc._C",
    sources=sorted(glob.glob(os.path.join("csrc", "*.c"))
                   + glob.glob(os.path.join("csrc", "arch", "*.c"))
                   + glob.glob(os.path.join("csrc", "py", "*.c"))),
    depends=glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "arch", "*.h"))
    + glob.glob(os.path.join("csrc", "py", "*.h")),
    include_dirs=["csrc", numpy.get_include()],
    define_macros=define_macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

# setuptools runs this file as __main__; tests import it for compiler_has_openmp
if __name__ == "__main__":
    setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtWithOptionalOpenMP})

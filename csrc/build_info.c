/*
 * build_info.c - what this build of gptc's C core was compiled with: the
 * compiler, whether OpenMP was on, sanitizers. (The kernel sets compiled in
 * are listed by isa.c.)
 * All of it is read from the preprocessor of this build, so it describes the
 * binary that is loaded, whatever compiler or machine the reader has now.
 */
#include "build_info.h"

#include <stddef.h>

#define GPTC_STR_(x) #x
#define GPTC_STR(x) GPTC_STR_(x)

/* clang defines __GNUC__ too (as 4.2.1), so it is asked first; Apple's
 * clang counts its own versions, hence its own name. */
#if defined(__clang__)
#define GPTC_CLANG_VERSION \
    GPTC_STR(__clang_major__) "." GPTC_STR(__clang_minor__) "." GPTC_STR(__clang_patchlevel__)
#if defined(__apple_build_version__)
#define GPTC_COMPILER "Apple clang " GPTC_CLANG_VERSION
#else
#define GPTC_COMPILER "clang " GPTC_CLANG_VERSION
#endif
#elif defined(__GNUC__)
#define GPTC_COMPILER \
    "gcc " GPTC_STR(__GNUC__) "." GPTC_STR(__GNUC_MINOR__) "." GPTC_STR(__GNUC_PATCHLEVEL__)
#elif defined(__VERSION__)
#define GPTC_COMPILER __VERSION__
#else
#define GPTC_COMPILER "unknown C compiler"
#endif

const gptc_build_info *gptc_get_build_info(void)
{
    static const gptc_build_info info = {
        .compiler = GPTC_COMPILER,
#ifdef _OPENMP
        .openmp = _OPENMP,
#else
        .openmp = 0,
#endif
#ifdef GPTC_SANITIZE
        .sanitize = 1,
#else
        .sanitize = 0,
#endif
    };
    return &info;
}

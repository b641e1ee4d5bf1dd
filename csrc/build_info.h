/*
 * build_info.h - what this build of gptc's C core was compiled with, for
 * gptc._C.build_info(). Not part of the layer API (gptc.h).
 */
#ifndef GPTC_BUILD_INFO_H
#define GPTC_BUILD_INFO_H

typedef struct {
    const char *compiler;              /* name and version, e.g. "gcc 12.2.0" */
    long openmp;                       /* _OPENMP (yyyymm of the spec), 0 in a serial build */
    int sanitize;                      /* built with -fsanitize=address,undefined */
} gptc_build_info;

const gptc_build_info *gptc_get_build_info(void);

#endif

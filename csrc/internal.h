/*
 * internal.h - helpers shared by the C files of gptc, not part of its API.
 */
#ifndef GPTC_INTERNAL_H
#define GPTC_INTERNAL_H

#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Loops with less work than this many multiply-adds stay on one thread:
 * waking a team costs a few microseconds, more than small ops take. */
#define GPTC_PARALLEL_MIN_WORK (1 << 16)

#endif /* GPTC_INTERNAL_H */

/*
 * read_simd.h - the streaming read of the kernel table (read_sum, timed by
 * csrc/limits.c) written once for every vector instruction set, on the
 * mapping that rows_simd.h documents (TARGET, vf, VF_LANES, vf_zero,
 * vf_loadu, vf_load_part, vf_add, vf_hsum).
 */
#ifndef GPTC_ARCH_READ_SIMD_H
#define GPTC_ARCH_READ_SIMD_H

#include <stddef.h>

#include "rows.h"

/* The sum of a[0, n): four independent sums of the widest vectors, so the
 * adds never wait on each other, and the loads and the requests ahead of
 * them (rows_w_prefetch, one per 64-byte line) that a decode step streams
 * its weights with. (A loop of 16-byte loads read a third more slowly on
 * one thread than one of 32-byte loads; without the requests, AVX2 decode
 * steps ran at 104-110% of the bandwidth this loop measured, on the 2-vCPU
 * Zen 5 class EPYC VM, 2026-12-04.) */
TARGET static float read_sum(const float *a, size_t n)
{
    const size_t L = VF_LANES;
    vf s0 = vf_zero(), s1 = vf_zero(), s2 = vf_zero(), s3 = vf_zero();
    size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        for (size_t b = 0; b < 4 * L * sizeof(float); b += 64)
            rows_w_prefetch((const char *)(a + i) + b);
        s0 = vf_add(s0, vf_loadu(a + i));
        s1 = vf_add(s1, vf_loadu(a + i + L));
        s2 = vf_add(s2, vf_loadu(a + i + 2 * L));
        s3 = vf_add(s3, vf_loadu(a + i + 3 * L));
    }
    for (; i + L <= n; i += L) s0 = vf_add(s0, vf_loadu(a + i));
    if (i < n) s1 = vf_add(s1, vf_load_part(a + i, (int)(n - i)));
    return vf_hsum(vf_add(vf_add(s0, s1), vf_add(s2, s3)));
}

#endif /* GPTC_ARCH_READ_SIMD_H */

/*
 * limits.c - the machine's two limits that the benchmarks hold gptc's
 * figures against (benchmarks/bench.py, cases 7 and 11):
 *
 *  - the arithmetic peak: the selected kernel set's register-only loop of
 *    independent multiply-adds (kernels.h, fma_loop) on nthreads threads;
 *  - the streaming-read bandwidth, the bound of a product that reads each
 *    weight once, as a decode step does: the set's read_sum sums an array
 *    with its widest loads and the requests ahead that the few-rows
 *    kernels make, each of nthreads threads its own run of it. On an array
 *    much larger than the caches the time is the memory's.
 *    (NumPy's float32 sum, used before, adds in a pairwise order that kept
 *    one thread at 17 GB/s where AVX2's read_sum reads 29-36, on the
 *    2-vCPU Zen 5 class EPYC VM, 2026-12-04.)
 */
#define _POSIX_C_SOURCE 199309L   /* clock_gettime under -std=c11 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <time.h>

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double gptc_fma_peak_gflops(int nthreads, long iterations)
{
    const gptc_kernels *t = gptc_active_kernels();
    volatile float sink = 0.0f;
    int ran = 0;   /* threads that ran the loop: 1 in a build without OpenMP */
    double start = seconds_now();
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float v = t->fma_loop(iterations);
        /* one store per thread keeps each loop's result live */
#pragma omp critical
        {
            sink += v;
            ran++;
        }
    }
    double elapsed = seconds_now() - start;
    (void)sink;
    double flops = (double)ran * (double)iterations * t->fma_flops_per_iteration;
    return elapsed > 0.0 ? flops / elapsed * 1e-9 : 0.0;
}

double gptc_read_bandwidth_gbs(const float *a, size_t n, int nthreads)
{
    const gptc_kernels *kern = gptc_active_kernels();
    float total = 0.0f;
    const double start = seconds_now();
    /* thread t reads the t-th of nthreads equal runs (a build without
     * OpenMP reads them one after another) */
#pragma omp parallel for schedule(static, 1) num_threads(nthreads) reduction(+ : total)
    for (int t = 0; t < nthreads; t++) {
        const size_t i0 = n * (size_t)t / (size_t)nthreads;
        const size_t i1 = n * (size_t)(t + 1) / (size_t)nthreads;
        total += kern->read_sum(a + i0, i1 - i0);
    }
    const double elapsed = seconds_now() - start;
    /* the sum is stored, so the reads cannot be optimised away */
    volatile float sink = total;
    (void)sink;
    return (double)(n * sizeof(float)) / (elapsed > 1e-9 ? elapsed : 1e-9) * 1e-9;
}

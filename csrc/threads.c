/*
 * threads.c - the thread count of gptc's parallel loops.
 *
 * gptc keeps its own count instead of calling omp_set_num_threads():
 * OpenMP's setting belongs to the calling thread, but gptc is called from
 * whichever Python thread runs a forward, so one process-wide value is the
 * only one that means what gptc.set_num_threads() promises.
 *
 * A build without OpenMP (setup.py builds one when the compiler has no
 * -fopenmp, e.g. Apple's clang) runs every loop on the calling thread: the
 * count is then always 1 and setting it has no effect, so that callers
 * which size per-thread scratch by it never see a count the loops ignore.
 */
#include "gptc.h"
#include "internal.h"

#ifdef _OPENMP
#include <stdatomic.h>

static atomic_int num_threads = 0;   /* 0: not chosen yet */

void gptc_set_num_threads(int n)
{
    atomic_store(&num_threads, n > 0 ? n : 1);
}

int gptc_get_num_threads(void)
{
    int n = atomic_load(&num_threads);
    if (n == 0) {
        /* omp_get_max_threads honours OMP_NUM_THREADS and otherwise counts
         * the CPUs this process may run on (its affinity mask). */
        n = omp_get_max_threads();
        n = n > 0 ? n : 1;
        atomic_store(&num_threads, n);
    }
    return n;
}
#else
void gptc_set_num_threads(int n)
{
    (void)n;
}

int gptc_get_num_threads(void)
{
    return 1;
}
#endif

/*
 * threads.c - the thread count of gptc's parallel loops.
 *
 * gptc keeps its own count instead of calling omp_set_num_threads():
 * OpenMP's setting belongs to the calling thread, but gptc is called from
 * whichever Python thread runs a forward, so one process-wide value is the
 * only one that means what gptc.set_num_threads() promises.
 */
#include "gptc.h"
#include "internal.h"

#include <stdatomic.h>

static atomic_int num_threads = 0;   /* 0: not chosen yet */

static int default_num_threads(void)
{
#ifdef _OPENMP
    /* omp_get_max_threads honours OMP_NUM_THREADS and otherwise counts the
     * CPUs this process may run on (its affinity mask). */
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

void gptc_set_num_threads(int n)
{
    atomic_store(&num_threads, n > 0 ? n : 1);
}

int gptc_get_num_threads(void)
{
    int n = atomic_load(&num_threads);
    if (n == 0) {
        n = default_num_threads();
        atomic_store(&num_threads, n);
    }
    return n;
}

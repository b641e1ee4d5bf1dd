/*
 * buffer_pool.c - the memory of the float32 arrays gptc makes (new_f32 and
 * gptc._C.zeros): blocks of dropped arrays are kept and handed to the next
 * array of the same size.
 *
 * Why: a training step of GPT-2 124M on (2, 256) tokens makes and drops over
 * a gigabyte of arrays (activations, their gradients, the logits, the
 * parameters' gradients after zero_grad). Memory that the C library maps
 * afresh for each is faulted in page by page on first touch, and zeroed by
 * the kernel; on the project's 2-vCPU VM that was about 50,000 page faults
 * and 0.6 s of kernel time in a 2.8 s step. With the pool a step reuses the
 * blocks of the step before and faults almost nothing.
 *
 * The pool is a NumPy memory handler (NEP 49). new_f32 installs it around
 * its one allocation, so only gptc's own arrays use it; NumPy remembers the
 * handler in each array and frees the array's data through it, whoever
 * drops the array and whenever. Arrays stay ordinary owning arrays.
 *
 * Each block carries a header of POOL_ALIGN bytes before the data (the block
 * as malloc returned it, its capacity, and the bytes asked for); the data is
 * POOL_ALIGN-aligned, which the kernels' vector loads like. Blocks under
 * POOL_MIN_BYTES are not kept (the C library recycles those well). Kept
 * blocks are matched by capacity (the request rounded up to POOL_GRAIN), the
 * most recently dropped first; at most POOL_LIMIT_BYTES are kept, the oldest
 * freed first beyond that. gptc.empty_cache() frees them all.
 *
 * In a sanitizer build nothing is kept, so AddressSanitizer still sees every
 * free and reports a use after one.
 */
#include "args.h"

#include "bindings.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define POOL_ALIGN 64
#define POOL_MIN_BYTES ((size_t)256 << 10)
#define POOL_GRAIN ((size_t)64 << 10)
#define POOL_SLOTS 512
/* From this size a fresh block is offered to the kernel for transparent huge
 * pages, as NumPy's own allocator does with its arrays (fewer TLB misses in
 * the products that stream the activations). */
#define POOL_HUGEPAGE_BYTES ((size_t)4 << 20)
#ifdef GPTC_SANITIZE
#define POOL_LIMIT_BYTES ((size_t)0)
#else
#define POOL_LIMIT_BYTES ((size_t)2 << 30)
#endif

typedef struct block_header {
    void *raw;          /* what malloc returned */
    size_t capacity;    /* usable bytes after the header; 0: never kept */
    size_t bytes;       /* what the array asked for */
} block_header;

_Static_assert(sizeof(block_header) <= POOL_ALIGN, "the header must fit before the data");

static struct {
    PyThread_type_lock lock;   /* NumPy may free an array from any thread */
    void *kept[POOL_SLOTS];    /* data pointers, oldest first */
    int n_kept;
    size_t kept_bytes;
    uint64_t reused, fresh;    /* kept-size allocations served from / not from the pool */
} pool;

static block_header *header_of(void *data)
{
    return (block_header *)((char *)data - POOL_ALIGN);
}

static void release_block(void *data)
{
    free(header_of(data)->raw);
}

/* A fresh block with room for `capacity` bytes after the header. */
static void *new_block(size_t capacity, size_t bytes)
{
    if (capacity > SIZE_MAX - 2 * POOL_ALIGN) return NULL;
    void *raw = malloc(capacity + 2 * POOL_ALIGN);
    if (raw == NULL) return NULL;
    uintptr_t data = ((uintptr_t)raw + 2 * POOL_ALIGN - 1) & ~(uintptr_t)(POOL_ALIGN - 1);
    block_header *h = header_of((void *)data);
    h->raw = raw;
    h->capacity = capacity;
    h->bytes = bytes;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (capacity >= POOL_HUGEPAGE_BYTES) {
        /* advice only: a kernel without THP refuses it, which changes nothing */
        const uintptr_t page = 4096;
        uintptr_t start = (data + page - 1) & ~(page - 1);
        uintptr_t end = (data + capacity) & ~(page - 1);
        if (end > start) (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#endif
    return (void *)data;
}

static void *pool_malloc(void *ctx, size_t bytes)
{
    if (bytes < POOL_MIN_BYTES) {
        void *data = new_block(bytes, bytes);
        if (data != NULL) header_of(data)->capacity = 0;
        return data;
    }
    if (bytes > SIZE_MAX - POOL_GRAIN) return NULL;
    size_t capacity = (bytes + POOL_GRAIN - 1) / POOL_GRAIN * POOL_GRAIN;
    void *data = NULL;
    PyThread_acquire_lock(pool.lock, WAIT_LOCK);
    for (int i = pool.n_kept - 1; i >= 0; i--) {
        if (header_of(pool.kept[i])->capacity == capacity) {
            data = pool.kept[i];
            memmove(pool.kept + i, pool.kept + i + 1,
                    (size_t)(pool.n_kept - 1 - i) * sizeof(void *));
            pool.n_kept--;
            pool.kept_bytes -= capacity;
            break;
        }
    }
    if (data != NULL) pool.reused++; else pool.fresh++;
    PyThread_release_lock(pool.lock);
    if (data != NULL) {
        header_of(data)->bytes = bytes;
        return data;
    }
    return new_block(capacity, bytes);
}

static void *pool_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > SIZE_MAX / elsize) return NULL;
    void *data = pool_malloc(ctx, nelem * elsize);
    if (data != NULL) memset(data, 0, nelem * elsize);
    return data;
}

static void pool_free(void *ctx, void *data, size_t size)
{
    if (data == NULL) return;
    block_header *h = header_of(data);
    size_t capacity = h->capacity;
    if (capacity == 0 || capacity > POOL_LIMIT_BYTES) {
        release_block(data);
        return;
    }
    void *evicted[POOL_SLOTS];
    int n_evicted = 0;
    PyThread_acquire_lock(pool.lock, WAIT_LOCK);
    /* make room: the oldest kept blocks go first */
    while (pool.n_kept > 0 &&
           (pool.n_kept == POOL_SLOTS || pool.kept_bytes + capacity > POOL_LIMIT_BYTES)) {
        evicted[n_evicted++] = pool.kept[0];
        pool.kept_bytes -= header_of(pool.kept[0])->capacity;
        memmove(pool.kept, pool.kept + 1, (size_t)(pool.n_kept - 1) * sizeof(void *));
        pool.n_kept--;
    }
    pool.kept[pool.n_kept++] = data;
    pool.kept_bytes += capacity;
    PyThread_release_lock(pool.lock);
    for (int i = 0; i < n_evicted; i++) release_block(evicted[i]);
}

static void *pool_realloc(void *ctx, void *data, size_t bytes)
{
    if (data == NULL) return pool_malloc(ctx, bytes);
    block_header *h = header_of(data);
    if (h->capacity >= bytes && h->capacity != 0) {
        h->bytes = bytes;
        return data;
    }
    void *moved = pool_malloc(ctx, bytes);
    if (moved == NULL) return NULL;
    memcpy(moved, data, h->bytes < bytes ? h->bytes : bytes);
    pool_free(ctx, data, h->bytes);
    return moved;
}

static PyDataMem_Handler pool_handler = {
    "gptc_buffer_pool",
    1,
    {NULL, pool_malloc, pool_calloc, pool_realloc, pool_free},
};

/* The handler as the capsule NumPy wants; made once, kept for the process's
 * life (arrays hold references to it). */
static PyObject *pool_capsule;

int buffer_pool_init(void)
{
    pool.lock = PyThread_allocate_lock();
    if (pool.lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pool_capsule = PyCapsule_New(&pool_handler, "mem_handler", NULL);
    return pool_capsule == NULL ? -1 : 0;
}

PyArrayObject *new_f32(int ndim, const npy_intp *dims)
{
    PyObject *previous = PyDataMem_SetHandler(pool_capsule);
    if (previous == NULL) return NULL;
    PyObject *out = PyArray_SimpleNew(ndim, (npy_intp *)dims, NPY_FLOAT32);
    PyObject *restored = PyDataMem_SetHandler(previous);
    Py_DECREF(previous);
    if (restored == NULL) {
        Py_XDECREF(out);
        return NULL;
    }
    Py_DECREF(restored);
    return (PyArrayObject *)out;
}

/* zeros(shape) -> a float32 array of zeros from the pool */
PyObject *py_zeros(PyObject *self, PyObject *shape)
{
    PyArray_Dims dims = {NULL, 0};
    if (!PyArray_IntpConverter(shape, &dims)) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "zeros: shape must be an int or a sequence of "
                         "ints, got %R", shape);
        }
        return NULL;
    }
    for (int i = 0; i < dims.len; i++) {
        if (dims.ptr[i] < 0) {
            PyErr_Format(PyExc_ValueError, "zeros: shape must not hold negative sizes, got %zd "
                         "at position %d", (Py_ssize_t)dims.ptr[i], i);
            PyDimMem_FREE(dims.ptr);
            return NULL;
        }
    }
    PyArrayObject *out = new_f32(dims.len, dims.ptr);
    PyDimMem_FREE(dims.ptr);
    if (out == NULL) return NULL;
    memset(PyArray_DATA(out), 0, (size_t)PyArray_NBYTES(out));
    return (PyObject *)out;
}

/* empty_cache() -> bytes released */
PyObject *py_empty_cache(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    void *released[POOL_SLOTS];
    PyThread_acquire_lock(pool.lock, WAIT_LOCK);
    int n = pool.n_kept;
    size_t bytes = pool.kept_bytes;
    memcpy(released, pool.kept, (size_t)n * sizeof(void *));
    pool.n_kept = 0;
    pool.kept_bytes = 0;
    PyThread_release_lock(pool.lock);
    for (int i = 0; i < n; i++) release_block(released[i]);
    return PyLong_FromSize_t(bytes);
}

/* buffer_pool_stats() -> dict */
PyObject *py_buffer_pool_stats(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyThread_acquire_lock(pool.lock, WAIT_LOCK);
    size_t bytes = pool.kept_bytes;
    int n = pool.n_kept;
    uint64_t reused = pool.reused, fresh = pool.fresh;
    PyThread_release_lock(pool.lock);
    return Py_BuildValue("{s:n,s:i,s:K,s:K,s:n,s:n}", "kept_bytes", (Py_ssize_t)bytes,
                         "kept_blocks", n, "reused", (unsigned long long)reused,
                         "fresh", (unsigned long long)fresh,
                         "min_bytes", (Py_ssize_t)POOL_MIN_BYTES,
                         "limit_bytes", (Py_ssize_t)POOL_LIMIT_BYTES);
}

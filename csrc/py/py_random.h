/*
 * py_random.h - gptc.Generator, shared with every binding that draws (dropout,
 * attention, sampling, the model).
 */
#ifndef GPTC_PY_RANDOM_H
#define GPTC_PY_RANDOM_H

#include "args.h"

/* gptc_generator plus a lock, since the layers draw with the GIL released. */
typedef struct {
    PyObject_HEAD
    gptc_generator gen;
    PyThread_type_lock lock;
} GeneratorObject;

extern PyTypeObject GeneratorType;

/* `O&` converter: obj must be a gptc.Generator; fills a GeneratorObject *. */
int to_generator(PyObject *obj, void *generator_ptr);
void lock_generator(GeneratorObject *g);
void unlock_generator(GeneratorObject *g);

#endif /* GPTC_PY_RANDOM_H */

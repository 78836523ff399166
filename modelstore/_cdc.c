/*
 * modelstore._cdc -- push-style content-defined chunker (FastCDC-2020 style gear hash with
 * normalized chunking, level 2).
 *
 * THE ALGORITHM BELOW IS PART OF THE ON-DISK FORMAT ("fastcdc-gear-nc2-v1"). Changing anything
 * in it changes every chunk boundary, so every chunk id, and breaks deduplication against
 * existing repositories. modelstore/chunker.py:reference_cut_points is a deliberately simple
 * pure-Python statement of the same algorithm and the tests pin golden vectors.
 *
 * Parameters: gear[256] (uint64, given as 2048 bytes little-endian), min_size, avg_size,
 * max_size with avg_size a power of two and 64 <= min_size <= avg_size <= max_size <= 2**31.
 *
 *   bits   = log2(avg_size)
 *   mask_s = the top (bits + 2) bits of a uint64 set   (e.g. bits=16: 0xFFFFC00000000000)
 *   mask_l = the top (bits - 2) bits of a uint64 set   (e.g. bits=16: 0xFFFC000000000000)
 *
 * The stream is cut into chunks one after another. Inside a chunk, let p be the 0-based position
 * of a byte within the chunk, and h a uint64 that is 0 at the start of every chunk:
 *
 *   - bytes with p < min_size are skipped (not hashed; h stays 0);
 *   - every byte b with p >= min_size updates h = (h << 1) + gear[b]  (mod 2**64); then
 *       mask = mask_s if p < avg_size else mask_l;
 *       if (h & mask) == 0 the chunk ends after this byte;
 *   - independently, the chunk ends after the byte with p == max_size - 1 (chunk length max_size),
 *     whether or not that byte was hashed (it is not when min_size == max_size);
 *   - after a cut, the next chunk starts with p = 0, h = 0.
 *   - at the end of the stream, whatever is left (any length >= 1, possibly < min_size) is the
 *     last chunk; an empty remainder is no chunk.
 *
 * Push interface: feed() may be called with blocks of any size; the state (p and h) carries over,
 * so the boundaries do not depend on how the stream was split into blocks. feed() returns the
 * chunk end offsets (exclusive) that fall inside the block, relative to the block's start; a cut
 * is reported in the block that contains the chunk's last byte (so an offset is never 0).
 * finish() returns the length of the last, partial chunk and resets the state.
 *
 * The scan runs with the GIL released; a busy flag (tested and set under the GIL) makes a second
 * concurrent call on the same object fail with RuntimeError instead of corrupting the state.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CDC_MIN_LIMIT 64
#define CDC_MAX_LIMIT (((size_t)1) << 31)

typedef struct {
    PyObject_HEAD
    uint64_t gear[256];
    uint64_t mask_s;
    uint64_t mask_l;
    size_t min_size;
    size_t avg_size;
    size_t max_size;
    /* streaming state */
    size_t pos;   /* bytes consumed in the current chunk */
    uint64_t h;   /* rolling hash; 0 while pos <= min_size */
    int busy;     /* set while a feed() runs without the GIL */
} CdcChunker;

/* Growable array of cut offsets, filled without the GIL (plain malloc/realloc). */
typedef struct {
    size_t *v;
    size_t n;
    size_t cap;
    int oom;
} OffsetVec;

static inline int
vec_push(OffsetVec *vec, size_t x)
{
    if (vec->n == vec->cap) {
        size_t ncap = vec->cap ? vec->cap * 2 : 64;
        size_t *nv = (size_t *)realloc(vec->v, ncap * sizeof(size_t));
        if (nv == NULL) {
            vec->oom = 1;
            return -1;
        }
        vec->v = nv;
        vec->cap = ncap;
    }
    vec->v[vec->n++] = x;
    return 0;
}

/*
 * Hash bytes [cur, stop) testing `mask` after each; return a pointer just past the byte that
 * made a cut, or NULL if none did (then *hp holds the hash after the last byte).
 * Unrolled by 8: the cut branch is almost never taken, so it predicts well; the dependency chain
 * is one shift-add (lea) per byte.
 */
#define CDC_STEP(k)                                      \
    h = (h << 1) + gear[cur[k]];                         \
    if ((h & mask) == 0) {                               \
        *hp = h;                                         \
        return cur + (k) + 1;                            \
    }

static inline const uint8_t *
scan_region(const uint64_t *restrict gear, const uint8_t *cur, const uint8_t *stop,
            uint64_t mask, uint64_t *hp)
{
    uint64_t h = *hp;
    while ((size_t)(stop - cur) >= 8) {
        CDC_STEP(0)
        CDC_STEP(1)
        CDC_STEP(2)
        CDC_STEP(3)
        CDC_STEP(4)
        CDC_STEP(5)
        CDC_STEP(6)
        CDC_STEP(7)
        cur += 8;
    }
    while (cur < stop) {
        CDC_STEP(0)
        cur++;
    }
    *hp = h;
    return NULL;
}

#undef CDC_STEP

/* Scan one block; appends cut offsets (relative to data) to vec. Runs without the GIL. */
static void
cdc_scan(CdcChunker *self, const uint8_t *data, size_t n, OffsetVec *vec)
{
    const uint64_t *gear = self->gear;
    const size_t min_size = self->min_size;
    const size_t avg_size = self->avg_size;
    const size_t max_size = self->max_size;
    const uint8_t *cur = data;
    const uint8_t *const end = data + n;
    size_t pos = self->pos;
    uint64_t h = self->h;

    for (;;) {
        size_t avail, need, lim;
        const uint8_t *hit;

        /* 1. skip the first min_size bytes of the chunk (h is 0 here) */
        if (pos < min_size) {
            need = min_size - pos;
            avail = (size_t)(end - cur);
            if (need > avail) {
                pos += avail;
                break;
            }
            cur += need;
            pos = min_size;
        }
        /* 2. positions [min_size, avg_size): the strict mask */
        if (pos < avg_size) {
            need = avg_size - pos;
            avail = (size_t)(end - cur);
            lim = need < avail ? need : avail;
            hit = scan_region(gear, cur, cur + lim, self->mask_s, &h);
            if (hit != NULL) {
                cur = hit;
                goto cut;
            }
            cur += lim;
            pos += lim;
            if (lim < need)
                break; /* out of data */
        }
        /* 3. positions [avg_size, max_size): the loose mask */
        if (pos < max_size) {
            need = max_size - pos;
            avail = (size_t)(end - cur);
            lim = need < avail ? need : avail;
            hit = scan_region(gear, cur, cur + lim, self->mask_l, &h);
            if (hit != NULL) {
                cur = hit;
                goto cut;
            }
            cur += lim;
            pos += lim;
            if (lim < need)
                break; /* out of data */
        }
        /* 4. pos == max_size: forced cut */
    cut:
        if (vec_push(vec, (size_t)(cur - data)) < 0)
            break; /* state is garbage now; the caller raises MemoryError and resets */
        pos = 0;
        h = 0;
    }
    self->pos = pos;
    self->h = h;
}

/* ---- Python glue ---------------------------------------------------------------------- */

static int
get_size_arg(PyObject *obj, const char *name, long long *out)
{
    int overflow = 0;
    long long v;
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL)
        return -1;
    v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < CDC_MIN_LIMIT || v > (long long)CDC_MAX_LIMIT) {
        PyErr_Format(PyExc_ValueError, "%s must be in [64, 2**31]", name);
        return -1;
    }
    *out = v;
    return 0;
}

static int
Chunker_init(CdcChunker *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"gear", "min_size", "avg_size", "max_size", NULL};
    Py_buffer gear;
    PyObject *omin, *oavg, *omax;
    long long mn, av, mx;
    int bits, i;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*OOO:Chunker", kwlist, &gear, &omin, &oavg,
                                     &omax))
        return -1;
    if (gear.len != 256 * 8) {
        PyErr_Format(PyExc_ValueError, "gear must be 2048 bytes (256 little-endian uint64), got %zd",
                     gear.len);
        PyBuffer_Release(&gear);
        return -1;
    }
    if (get_size_arg(omin, "min_size", &mn) < 0 || get_size_arg(oavg, "avg_size", &av) < 0 ||
        get_size_arg(omax, "max_size", &mx) < 0) {
        PyBuffer_Release(&gear);
        return -1;
    }
    if ((av & (av - 1)) != 0) {
        PyBuffer_Release(&gear);
        PyErr_SetString(PyExc_ValueError, "avg_size must be a power of two");
        return -1;
    }
    if (!(mn <= av && av <= mx)) {
        PyBuffer_Release(&gear);
        PyErr_SetString(PyExc_ValueError, "need min_size <= avg_size <= max_size");
        return -1;
    }
    {
        const unsigned char *g = (const unsigned char *)gear.buf;
        for (i = 0; i < 256; i++) {
            uint64_t x = 0;
            int k;
            for (k = 7; k >= 0; k--)
                x = (x << 8) | g[i * 8 + k];
            self->gear[i] = x;
        }
    }
    PyBuffer_Release(&gear);

    bits = 0;
    while ((1LL << bits) < av)
        bits++;
    /* 6 <= bits <= 31, so both shifts are in (0, 64) */
    self->mask_s = ~(uint64_t)0 << (64 - (bits + 2));
    self->mask_l = ~(uint64_t)0 << (64 - (bits - 2));
    self->min_size = (size_t)mn;
    self->avg_size = (size_t)av;
    self->max_size = (size_t)mx;
    self->pos = 0;
    self->h = 0;
    self->busy = 0;
    return 0;
}

static PyObject *
Chunker_feed(CdcChunker *self, PyObject *arg)
{
    Py_buffer view;
    OffsetVec vec = {NULL, 0, 0, 0};
    PyObject *result;
    size_t i;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return NULL;
    }
    if (self->max_size == 0) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker.__init__ was not called");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    self->busy = 1;
    if (view.len > 0) {
        Py_BEGIN_ALLOW_THREADS
        cdc_scan(self, (const uint8_t *)view.buf, (size_t)view.len, &vec);
        Py_END_ALLOW_THREADS
    }
    self->busy = 0;
    PyBuffer_Release(&view);

    if (vec.oom) {
        free(vec.v);
        self->pos = 0;
        self->h = 0;
        return PyErr_NoMemory();
    }
    result = PyList_New((Py_ssize_t)vec.n);
    if (result == NULL) {
        free(vec.v);
        return NULL;
    }
    for (i = 0; i < vec.n; i++) {
        PyObject *o = PyLong_FromSize_t(vec.v[i]);
        if (o == NULL) {
            Py_DECREF(result);
            free(vec.v);
            return NULL;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, o);
    }
    free(vec.v);
    return result;
}

static PyObject *
Chunker_finish(CdcChunker *self, PyObject *Py_UNUSED(ignored))
{
    size_t rest;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return NULL;
    }
    rest = self->pos;
    self->pos = 0;
    self->h = 0;
    return PyLong_FromSize_t(rest);
}

static PyObject *
Chunker_reset(CdcChunker *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return NULL;
    }
    self->pos = 0;
    self->h = 0;
    Py_RETURN_NONE;
}

static PyObject *
Chunker_get_min(CdcChunker *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->min_size);
}

static PyObject *
Chunker_get_avg(CdcChunker *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->avg_size);
}

static PyObject *
Chunker_get_max(CdcChunker *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->max_size);
}

static PyObject *
Chunker_get_pending(CdcChunker *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->pos);
}

static PyMethodDef Chunker_methods[] = {
    {"feed", (PyCFunction)Chunker_feed, METH_O,
     "feed(data) -> list[int]\n--\n\n"
     "Scan a block of the stream; return the chunk end offsets inside it, relative to its "
     "start."},
    {"finish", (PyCFunction)Chunker_finish, METH_NOARGS,
     "finish() -> int\n--\n\n"
     "End the stream: return the length of the last partial chunk (0 if none) and reset."},
    {"reset", (PyCFunction)Chunker_reset, METH_NOARGS,
     "reset() -> None\n--\n\nForget the current chunk and start a new stream."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Chunker_getset[] = {
    {"min_size", (getter)Chunker_get_min, NULL, "Minimum chunk size.", NULL},
    {"avg_size", (getter)Chunker_get_avg, NULL, "Target average chunk size.", NULL},
    {"max_size", (getter)Chunker_get_max, NULL, "Maximum chunk size.", NULL},
    {"pending", (getter)Chunker_get_pending, NULL, "Bytes fed into the current, unfinished chunk.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CdcChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "modelstore._cdc.Chunker",
    .tp_doc = "Chunker(gear, min_size, avg_size, max_size)\n--\n\n"
              "Push-style FastCDC gear-hash chunker (normalized chunking level 2).",
    .tp_basicsize = sizeof(CdcChunker),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chunker_init,
    .tp_methods = Chunker_methods,
    .tp_getset = Chunker_getset,
};

static struct PyModuleDef cdc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "modelstore._cdc",
    .m_doc = "Native content-defined chunker (see modelstore.chunker).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cdc(void)
{
    PyObject *m;
    if (PyType_Ready(&CdcChunkerType) < 0)
        return NULL;
    m = PyModule_Create(&cdc_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CdcChunkerType);
    if (PyModule_AddObject(m, "Chunker", (PyObject *)&CdcChunkerType) < 0) {
        Py_DECREF(&CdcChunkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

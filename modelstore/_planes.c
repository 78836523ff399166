/*
 * modelstore._planes -- byte-plane split and join for the plane codec (docs/FORMAT.md §8.1)
 * and the XOR delta codec (§8.2); buffers of 4 MiB or more are moved with the GIL released.
 *
 * join(planes, out, base): out[i*w + j] = planes[j][i] (XOR base[i*w + j] when base is not
 * None), for w = len(planes) in {2, 4, 8} and every element i < m = len(planes[0]).
 * split(src, planes): the inverse, planes[j][i] = src[i*w + j].
 *
 * Both are byte moves with no format choices of their own: the plane layout is defined by the
 * format, and the Python fallback in modelstore.compress computes the same bytes.
 *
 * decode_many(jobs): for each (layers, n), the XOR of the raw chunks that ``layers`` decode
 * to, each ``(codec, payload)`` with codec 0 (raw), 1 (zstd) or 2 (planes, transform 0) and
 * raw length n: one stored chunk, or a delta chain (the base's stored chunk and each
 * residual), a whole batch with the GIL released once. Every length is checked as
 * docs/FORMAT.md §8 and §8.1 say before it is used; a job that does not decode gives a str
 * saying why. zstd is the system
 * libzstd (libzstd.so.1), opened at import; without it ``have_zstd`` is False and callers use
 * the Python decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_W 8
/* A chunk takes ~2 us to move: releasing the GIL for that costs more than it frees (a thread
   that gave it up waits for it back behind the others). Only large buffers release it. */
#define RELEASE_GIL_ABOVE (4 << 20)

static int
get_planes(PyObject *seq, Py_buffer *views, int writable, Py_ssize_t *m_out)
{
    Py_ssize_t w, j;
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "planes must be a tuple");
        return -1;
    }
    w = PyTuple_GET_SIZE(seq);
    if (w != 2 && w != 4 && w != 8) {
        PyErr_SetString(PyExc_ValueError, "planes: width must be 2, 4 or 8");
        return -1;
    }
    for (j = 0; j < w; j++) {
        int flags = writable ? PyBUF_WRITABLE : PyBUF_SIMPLE;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(seq, j), &views[j], flags) < 0) {
            while (j-- > 0)
                PyBuffer_Release(&views[j]);
            return -1;
        }
        if (!PyBuffer_IsContiguous(&views[j], 'C') || views[j].len != views[0].len) {
            PyErr_SetString(PyExc_ValueError, "planes must be contiguous and of equal length");
            for (; j >= 0; j--)
                PyBuffer_Release(&views[j]);
            return -1;
        }
    }
    *m_out = views[0].len;
    return (int)w;
}

static void
release_all(Py_buffer *views, int w)
{
    for (int j = 0; j < w; j++)
        PyBuffer_Release(&views[j]);
}

static void
join_impl(const uint8_t **p, int w, Py_ssize_t m, uint8_t *o, const uint8_t *b)
{
    Py_ssize_t i;
    int j;
    if (w == 2) {
        const uint8_t *p0 = p[0], *p1 = p[1];
        if (b) {
            for (i = 0; i < m; i++) {
                o[2 * i] = p0[i] ^ b[2 * i];
                o[2 * i + 1] = p1[i] ^ b[2 * i + 1];
            }
        } else {
            for (i = 0; i < m; i++) {
                o[2 * i] = p0[i];
                o[2 * i + 1] = p1[i];
            }
        }
    } else if (w == 4) {
        const uint8_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
        if (b) {
            for (i = 0; i < m; i++) {
                o[4 * i] = p0[i] ^ b[4 * i];
                o[4 * i + 1] = p1[i] ^ b[4 * i + 1];
                o[4 * i + 2] = p2[i] ^ b[4 * i + 2];
                o[4 * i + 3] = p3[i] ^ b[4 * i + 3];
            }
        } else {
            for (i = 0; i < m; i++) {
                o[4 * i] = p0[i];
                o[4 * i + 1] = p1[i];
                o[4 * i + 2] = p2[i];
                o[4 * i + 3] = p3[i];
            }
        }
    } else {
        for (i = 0; i < m; i++)
            for (j = 0; j < w; j++)
                o[i * w + j] = p[j][i] ^ (b ? b[i * w + j] : 0);
    }
}

static void
split_impl(const uint8_t *s, int w, Py_ssize_t m, uint8_t **p)
{
    Py_ssize_t i;
    int j;
    if (w == 2) {
        uint8_t *p0 = p[0], *p1 = p[1];
        for (i = 0; i < m; i++) {
            p0[i] = s[2 * i];
            p1[i] = s[2 * i + 1];
        }
    } else if (w == 4) {
        uint8_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
        for (i = 0; i < m; i++) {
            p0[i] = s[4 * i];
            p1[i] = s[4 * i + 1];
            p2[i] = s[4 * i + 2];
            p3[i] = s[4 * i + 3];
        }
    } else {
        for (i = 0; i < m; i++)
            for (j = 0; j < w; j++)
                p[j][i] = s[i * w + j];
    }
}

static PyObject *
planes_join(PyObject *self, PyObject *args)
{
    PyObject *seq, *base_obj;
    Py_buffer views[MAX_W], out, base;
    const uint8_t *ptrs[MAX_W];
    Py_ssize_t m;
    int w, has_base = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ow*O", &seq, &out, &base_obj))
        return NULL;
    w = get_planes(seq, views, 0, &m);
    if (w < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    if (base_obj != Py_None) {
        if (PyObject_GetBuffer(base_obj, &base, PyBUF_SIMPLE) < 0)
            goto fail;
        has_base = 1;
    }
    if (out.len != m * w || (has_base && base.len != out.len) ||
        !PyBuffer_IsContiguous(&out, 'C')) {
        PyErr_SetString(PyExc_ValueError, "join: out (and base) must be len(planes) * m bytes");
        goto fail;
    }
    for (int j = 0; j < w; j++)
        ptrs[j] = (const uint8_t *)views[j].buf;
    if (out.len >= RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        join_impl(ptrs, w, m, (uint8_t *)out.buf, has_base ? (const uint8_t *)base.buf : NULL);
        Py_END_ALLOW_THREADS
    } else {
        join_impl(ptrs, w, m, (uint8_t *)out.buf, has_base ? (const uint8_t *)base.buf : NULL);
    }
    release_all(views, w);
    PyBuffer_Release(&out);
    if (has_base)
        PyBuffer_Release(&base);
    Py_RETURN_NONE;
fail:
    release_all(views, w);
    PyBuffer_Release(&out);
    if (has_base)
        PyBuffer_Release(&base);
    return NULL;
}

static PyObject *
planes_split(PyObject *self, PyObject *args)
{
    PyObject *seq;
    Py_buffer views[MAX_W], src;
    uint8_t *ptrs[MAX_W];
    Py_ssize_t m;
    int w;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O", &src, &seq))
        return NULL;
    w = get_planes(seq, views, 1, &m);
    if (w < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (src.len != m * w) {
        PyErr_SetString(PyExc_ValueError, "split: src must be len(planes) * m bytes");
        release_all(views, w);
        PyBuffer_Release(&src);
        return NULL;
    }
    for (int j = 0; j < w; j++)
        ptrs[j] = (uint8_t *)views[j].buf;
    if (src.len >= RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        split_impl((const uint8_t *)src.buf, w, m, ptrs);
        Py_END_ALLOW_THREADS
    } else {
        split_impl((const uint8_t *)src.buf, w, m, ptrs);
    }
    release_all(views, w);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
}


/* -- libzstd, opened at import (no headers or link-time dependency needed) -------------- */

typedef void ZSTD_DCtx;
static ZSTD_DCtx *(*p_createDCtx)(void);
static size_t (*p_decompressDCtx)(ZSTD_DCtx *, void *, size_t, const void *, size_t);
static unsigned long long (*p_getFrameContentSize)(const void *, size_t);
static unsigned (*p_isError)(size_t);
static int have_zstd = 0;

static void
load_zstd(void)
{
    void *h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return;
    p_createDCtx = (ZSTD_DCtx * (*)(void)) dlsym(h, "ZSTD_createDCtx");
    p_decompressDCtx = (size_t(*)(ZSTD_DCtx *, void *, size_t, const void *, size_t))dlsym(
        h, "ZSTD_decompressDCtx");
    p_getFrameContentSize =
        (unsigned long long (*)(const void *, size_t))dlsym(h, "ZSTD_getFrameContentSize");
    p_isError = (unsigned (*)(size_t))dlsym(h, "ZSTD_isError");
    have_zstd = p_createDCtx && p_decompressDCtx && p_getFrameContentSize && p_isError;
}

/* per thread: a decompression context and a scratch buffer, reused (fresh memory is slow) */
static __thread ZSTD_DCtx *t_dctx = NULL;
static __thread uint8_t *t_scratch = NULL;
static __thread size_t t_scratch_cap = 0;

static uint8_t *
scratch(size_t n)
{
    if (t_scratch_cap < n) {
        uint8_t *p = (uint8_t *)realloc(t_scratch, n);
        if (p == NULL)
            return NULL;
        t_scratch = p;
        t_scratch_cap = n;
    }
    return t_scratch;
}

/* decompress one frame that must declare exactly n bytes into dst; 0 or an error string */
static const char *
unzstd(const uint8_t *src, size_t len, uint8_t *dst, size_t n)
{
    unsigned long long declared;
    size_t got;
    if (t_dctx == NULL && (t_dctx = p_createDCtx()) == NULL)
        return "cannot create a zstd context";
    declared = p_getFrameContentSize(src, len);
    if (declared != (unsigned long long)n || n == 0)
        return "zstd frame does not declare the expected size";
    got = p_decompressDCtx(t_dctx, dst, n, src, len);
    if (p_isError(got) || got != n)
        return "zstd frame does not decompress to the expected size";
    return NULL;
}

static void
xor_or_copy(uint8_t *acc, const uint8_t *src, size_t n, int first)
{
    size_t i;
    if (first)
        memcpy(acc, src, n);
    else
        for (i = 0; i < n; i++)
            acc[i] ^= src[i];
}

/* The layout of a tag-2 payload for a chunk of n bytes (docs/FORMAT.md §8.1). */
struct planes {
    size_t w, p, m, t, pos;  /* width, phase, elements, tail, offset of the head bytes */
    size_t len[MAX_W];       /* each plane's stored length */
    int zstd[MAX_W];         /* each plane's sub-codec: zstd (1) or raw (0) */
};

static size_t
u32le(const uint8_t *d)
{
    return (size_t)d[0] | ((size_t)d[1] << 8) | ((size_t)d[2] << 16) | ((size_t)d[3] << 24);
}

/* Check a tag-2 payload from its lengths and frame headers alone, filling in its layout: 0 or
   the reason. Transform 1 (rotate) is left to the Python decoder. */
static const char *
parse_planes(const uint8_t *pl, size_t len, size_t n, struct planes *tb)
{
    size_t j, total = 0, off;
    if (len < 4)
        return "plane payload is shorter than its header";
    tb->w = pl[0];
    tb->p = pl[1];
    if ((tb->w != 2 && tb->w != 4 && tb->w != 8) || tb->p >= tb->w || pl[2] > 1 || pl[3] != 0)
        return "plane payload has a bad header";
    if (pl[2] != 0)
        return "rotate";
    if (n < tb->p + tb->w)
        return "plane payload is wider than its chunk";
    tb->m = (n - tb->p) / tb->w;
    tb->t = n - tb->p - tb->m * tb->w;
    tb->pos = 4 + 5 * tb->w;
    if (len < tb->pos)
        return "plane payload is shorter than its plane table";
    for (j = 0; j < tb->w; j++) {
        const uint8_t *d = pl + 4 + 5 * j;
        tb->len[j] = u32le(d + 1);
        if (d[0] > 1)
            return "plane payload uses an unknown plane codec";
        tb->zstd[j] = d[0];
        if (d[0] == 0 && tb->len[j] != tb->m)
            return "raw plane length differs from the chunk";
        total += tb->len[j];
    }
    if (tb->pos + tb->p + total + tb->t != len)
        return "plane payload length does not add up";
    off = tb->pos + tb->p;
    for (j = 0; j < tb->w; j++) {
        if (tb->zstd[j] &&
            p_getFrameContentSize(pl + off, tb->len[j]) != (unsigned long long)tb->m)
            return "zstd plane does not declare the expected size";
        off += tb->len[j];
    }
    return NULL;
}

/* Whether a layer can decode to n bytes, from its lengths and frame headers alone: checked
   before the n-byte result is allocated, so a hostile index entry (n = 4 GiB) with a payload
   that does not back it allocates nothing. 0 or the reason. */
static const char *
check_layer(int codec, const uint8_t *pl, size_t len, size_t n)
{
    struct planes tb;
    if (codec == 0)
        return len == n ? NULL : "raw chunk length differs from the index";
    if (codec == 1)
        return p_getFrameContentSize(pl, len) == (unsigned long long)n && n > 0
                   ? NULL
                   : "zstd frame does not declare the expected size";
    if (codec == 2)
        return parse_planes(pl, len, n, &tb);
    return "unknown codec";
}

/* one checked layer (codec, payload) of raw length n, XORed into acc (or copied: first) */
static const char *
decode_layer(int codec, const uint8_t *pl, size_t len, size_t n, uint8_t *acc, int first)
{
    if (codec == 0) {
        xor_or_copy(acc, pl, n, first);
        return NULL;
    }
    if (codec == 1) {
        uint8_t *tmp = scratch(n ? n : 1);
        const char *e;
        if (tmp == NULL)
            return "out of memory";
        if ((e = unzstd(pl, len, tmp, n)) != NULL)
            return e;
        xor_or_copy(acc, tmp, n, first);
        return NULL;
    }
    if (codec == 2) {
        struct planes tb;
        const uint8_t *src[MAX_W];
        const char *e = parse_planes(pl, len, n, &tb);
        size_t j, off;
        uint8_t *tmp;
        if (e != NULL)
            return e;
        tmp = scratch(tb.m * tb.w > 0 ? tb.m * tb.w : 1);
        if (tmp == NULL)
            return "out of memory";
        off = tb.pos + tb.p;
        for (j = 0; j < tb.w; j++) {
            if (tb.zstd[j]) {
                if ((e = unzstd(pl + off, tb.len[j], tmp + j * tb.m, tb.m)) != NULL)
                    return e;
                src[j] = tmp + j * tb.m;
            } else {
                src[j] = pl + off;
            }
            off += tb.len[j];
        }
        xor_or_copy(acc, pl + tb.pos, tb.p, first);
        join_impl(src, (int)tb.w, (Py_ssize_t)tb.m, acc + tb.p, first ? NULL : acc + tb.p);
        xor_or_copy(acc + tb.p + tb.m * tb.w, pl + off, tb.t, first);
        return NULL;
    }
    return "unknown codec";
}

#define MAX_LAYERS 64

/* decode_many(jobs): for each (layers, n) of jobs, the bytes the layers decode to, or a str
   saying why they do not; the GIL released once for them all. */
static PyObject *
planes_decode_many(PyObject *self, PyObject *args)
{
    PyObject *jobs, *result = NULL;
    Py_ssize_t njobs, j, k, total = 0, got = 0;
    Py_buffer *views = NULL;
    int *codecs = NULL;
    Py_ssize_t *first = NULL, *count = NULL, *sizes = NULL;
    const char **errs = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &jobs))
        return NULL;
    if (!have_zstd) {
        PyErr_SetString(PyExc_NotImplementedError, "libzstd.so.1 is not available");
        return NULL;
    }
    if (!PyList_Check(jobs)) {
        PyErr_SetString(PyExc_TypeError, "decode_many(jobs: list)");
        return NULL;
    }
    njobs = PyList_GET_SIZE(jobs);
    for (j = 0; j < njobs; j++) {
        PyObject *job = PyList_GET_ITEM(jobs, j), *layers;
        if (!PyTuple_Check(job) || PyTuple_GET_SIZE(job) != 2 ||
            !PyList_Check(layers = PyTuple_GET_ITEM(job, 0)) ||
            PyList_GET_SIZE(layers) < 1 || PyList_GET_SIZE(layers) > MAX_LAYERS) {
            PyErr_SetString(PyExc_TypeError, "decode_many: each job is ([(codec, payload)], n)");
            return NULL;
        }
        total += PyList_GET_SIZE(layers);
    }
    views = PyMem_Calloc(total ? total : 1, sizeof(Py_buffer));
    codecs = PyMem_Calloc(total ? total : 1, sizeof(int));
    first = PyMem_Calloc(njobs ? njobs : 1, sizeof(Py_ssize_t));
    count = PyMem_Calloc(njobs ? njobs : 1, sizeof(Py_ssize_t));
    sizes = PyMem_Calloc(njobs ? njobs : 1, sizeof(Py_ssize_t));
    errs = PyMem_Calloc(njobs ? njobs : 1, sizeof(char *));
    result = PyList_New(njobs);
    if (!views || !codecs || !first || !count || !sizes || !errs || !result) {
        PyErr_NoMemory();
        goto done;
    }
    for (j = 0; j < njobs; j++) {
        PyObject *job = PyList_GET_ITEM(jobs, j);
        PyObject *layers = PyTuple_GET_ITEM(job, 0), *out;
        sizes[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(job, 1));
        if (sizes[j] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "decode_many: negative size");
            goto done;
        }
        first[j] = got;
        count[j] = PyList_GET_SIZE(layers);
        for (k = 0; k < count[j]; k++) {
            PyObject *item = PyList_GET_ITEM(layers, k);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
                PyErr_SetString(PyExc_TypeError, "decode_many: a layer is (codec, payload)");
                goto done;
            }
            codecs[got] = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
            if (codecs[got] == -1 && PyErr_Occurred())
                goto done;
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 1), &views[got], PyBUF_SIMPLE) < 0)
                goto done;
            got++;
        }
        for (k = 0; k < count[j] && errs[j] == NULL; k++) {
            Py_buffer *v = &views[first[j] + k];
            errs[j] = check_layer(codecs[first[j] + k], (const uint8_t *)v->buf, (size_t)v->len,
                                  (size_t)sizes[j]);
        }
        if (errs[j] != NULL) {  /* nothing allocated for it: replaced by the reason below */
            Py_INCREF(Py_None);
            PyList_SET_ITEM(result, j, Py_None);
            continue;
        }
        out = PyBytes_FromStringAndSize(NULL, sizes[j]);
        if (out == NULL)
            goto done;
        PyList_SET_ITEM(result, j, out);
    }
    Py_BEGIN_ALLOW_THREADS
    for (j = 0; j < njobs; j++) {
        uint8_t *acc;
        const char *err = errs[j];
        if (err != NULL)
            continue;
        acc = (uint8_t *)PyBytes_AS_STRING(PyList_GET_ITEM(result, j));
        for (k = 0; k < count[j] && err == NULL; k++) {
            Py_buffer *v = &views[first[j] + k];
            err = decode_layer(codecs[first[j] + k], (const uint8_t *)v->buf, (size_t)v->len,
                               (size_t)sizes[j], acc, k == 0);
        }
        errs[j] = err;
    }
    Py_END_ALLOW_THREADS
    for (j = 0; j < njobs; j++) {
        if (errs[j] != NULL) {
            PyObject *why = PyUnicode_FromString(errs[j]);
            if (why == NULL)
                goto done_released;
            Py_DECREF(PyList_GET_ITEM(result, j));
            PyList_SET_ITEM(result, j, why);
        }
    }
done_released:
    for (k = 0; k < got; k++)
        PyBuffer_Release(&views[k]);
    got = 0;
    if (PyErr_Occurred())
        Py_CLEAR(result);
    PyMem_Free(views);
    PyMem_Free(codecs);
    PyMem_Free(first);
    PyMem_Free(count);
    PyMem_Free(sizes);
    PyMem_Free(errs);
    return result;
done:
    for (k = 0; k < got; k++)
        PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    PyMem_Free(codecs);
    PyMem_Free(first);
    PyMem_Free(count);
    PyMem_Free(sizes);
    PyMem_Free(errs);
    Py_XDECREF(result);
    return NULL;
}

static PyMethodDef planes_methods[] = {
    {"join", planes_join, METH_VARARGS,
     "join(planes, out, base) -> None\n--\n\n"
     "Interleave byte planes into out (XOR base when it is not None), GIL released."},
    {"split", planes_split, METH_VARARGS,
     "split(src, planes) -> None\n--\n\n"
     "Scatter src into len(planes) byte planes (writable, equal length), GIL released."},
    {"decode_many", planes_decode_many, METH_VARARGS,
     "decode_many(jobs) -> list[bytes | str]\n--\n\n"
     "For each (layers, n): the XOR of the raw chunks of n bytes that [(codec, payload), "
     "...] decode to, or why not (str); the GIL released once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef planes_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "modelstore._planes",
    .m_doc = "Native byte-plane split and join (see modelstore.compress).",
    .m_size = -1,
    .m_methods = planes_methods,
};

PyMODINIT_FUNC
PyInit__planes(void)
{
    PyObject *m;
    load_zstd();
    m = PyModule_Create(&planes_module);
    if (m != NULL && PyModule_AddIntConstant(m, "have_zstd", have_zstd) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
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

static PyMethodDef planes_methods[] = {
    {"join", planes_join, METH_VARARGS,
     "join(planes, out, base) -> None\n--\n\n"
     "Interleave byte planes into out (XOR base when it is not None), GIL released."},
    {"split", planes_split, METH_VARARGS,
     "split(src, planes) -> None\n--\n\n"
     "Scatter src into len(planes) byte planes (writable, equal length), GIL released."},
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
    return PyModule_Create(&planes_module);
}

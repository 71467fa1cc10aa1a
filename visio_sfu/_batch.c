/* sendmmsg for visio-sfu's media port: many datagrams, one system call; and the forwarding
   path's per-subscriber header rewrite. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#define MAX_BATCH 256

static PyObject *
send_batch(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *items, *skipped = NULL;
    if (!PyArg_ParseTuple(args, "iO!|O!", &fd, &PyList_Type, &items, &PyList_Type, &skipped))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n > MAX_BATCH) n = MAX_BATCH;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iovs[MAX_BATCH];
    struct sockaddr_in names[MAX_BATCH];
    Py_buffer views[MAX_BATCH];
    Py_ssize_t held = 0, count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) goto bad;
        PyObject *data = PyTuple_GET_ITEM(item, 0), *addr = PyTuple_GET_ITEM(item, 1);
        if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2) goto bad;
        const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
        if (host == NULL) goto fail;
        long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
        if (port < 0 || port > 65535) { if (!PyErr_Occurred()) goto bad; goto fail; }
        memset(&names[count], 0, sizeof(names[count]));
        names[count].sin_family = AF_INET;
        names[count].sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &names[count].sin_addr) != 1) goto bad;
        if (PyObject_GetBuffer(data, &views[held], PyBUF_SIMPLE) < 0) goto fail;
        held++;
        iovs[count].iov_base = views[held - 1].buf;
        iovs[count].iov_len = (size_t)views[held - 1].len;
        memset(&msgs[count], 0, sizeof(msgs[count]));
        msgs[count].msg_hdr.msg_name = &names[count];
        msgs[count].msg_hdr.msg_namelen = sizeof(names[count]);
        msgs[count].msg_hdr.msg_iov = &iovs[count];
        msgs[count].msg_hdr.msg_iovlen = 1;
        count++;
    }
    /* sendmmsg stops at the first datagram that fails and reports it only when it is the
       first of the call: a destination that refuses (EPERM from a firewall rule, EINVAL,
       unreachable) is skipped and the others still go; a full buffer ends the call, and
       the caller sends what is left its own way (it returns how far it got) */
    Py_ssize_t pos = 0;
    while (pos < count) {
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg(fd, msgs + pos, (unsigned int)(count - pos), 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r > 0) { pos += r; continue; }
        if (r < 0 && err == EINTR) continue;
        if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)) break;
        if (skipped != NULL) {  /* the caller counts it as not sent */
            PyObject *index = PyLong_FromSsize_t(pos);
            if (index == NULL || PyList_Append(skipped, index) < 0) {
                Py_XDECREF(index);
                for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
                return NULL;
            }
            Py_DECREF(index);
        }
        pos += 1;  /* this one failed: skipped */
    }
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    return PyLong_FromSsize_t(pos);
bad:
    PyErr_SetString(PyExc_ValueError, "items must be (bytes, (IPv4 address, port)) tuples");
fail:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    return NULL;
}

/* The forwarding path's per-subscriber rewrite (visio_sfu/downtrack.py), in one call: a copy
   of the publisher's packet with its payload type, sequence number, timestamp and SSRC
   rewritten (the marker kept), and its header-extension ids mapped through a 256-byte table
   (0 or, in a one-byte block, over 14: the element is zeroed, which is padding). The same
   bytes as rtp.header.rewrite_header then rewrite_extensions, which stay the fallback when
   this extension is not built. */
static PyObject *
rewrite_rtp(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "rewrite_rtp(data, pt, seq, ts, ssrc, table) takes 6 arguments");
        return NULL;
    }
    unsigned long pt = PyLong_AsUnsignedLongMask(args[1]);
    if (pt == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long seq = PyLong_AsUnsignedLongMask(args[2]);
    if (seq == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long ts = PyLong_AsUnsignedLongMask(args[3]);
    if (ts == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long ssrc = PyLong_AsUnsignedLong(args[4]);
    if (ssrc == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (ssrc > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "ssrc out of range");
        return NULL;
    }
    PyObject *table_obj = args[5];
    const unsigned char *table = NULL;
    if (table_obj != Py_None) {
        if (!PyBytes_Check(table_obj) || PyBytes_GET_SIZE(table_obj) != 256) {
            PyErr_SetString(PyExc_ValueError, "table must be 256 bytes or None");
            return NULL;
        }
        table = (const unsigned char *)PyBytes_AS_STRING(table_obj);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n = view.len;
    if (n < 12) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "an RTP packet has 12 bytes at least");
        return NULL;
    }
    PyObject *out = PyByteArray_FromStringAndSize((const char *)view.buf, n);
    PyBuffer_Release(&view);
    if (out == NULL) return NULL;
    unsigned char *b = (unsigned char *)PyByteArray_AS_STRING(out);
    b[1] = (unsigned char)((b[1] & 0x80) | (pt & 0x7F));
    b[2] = (unsigned char)(seq >> 8); b[3] = (unsigned char)seq;
    b[4] = (unsigned char)(ts >> 24); b[5] = (unsigned char)(ts >> 16);
    b[6] = (unsigned char)(ts >> 8); b[7] = (unsigned char)ts;
    b[8] = (unsigned char)(ssrc >> 24); b[9] = (unsigned char)(ssrc >> 16);
    b[10] = (unsigned char)(ssrc >> 8); b[11] = (unsigned char)ssrc;
    long hole = -1;
    if (table != NULL && (b[0] & 0x10)) {
        Py_ssize_t off = 12 + 4 * (b[0] & 0x0F);
        if (off + 4 <= n) {
            unsigned int profile = ((unsigned int)b[off] << 8) | b[off + 1];
            Py_ssize_t end = off + 4 + 4 * (((Py_ssize_t)b[off + 2] << 8) | b[off + 3]);
            Py_ssize_t i = off + 4;
            if (end > n) {
                /* not a valid block: left as it is */
            } else if (profile == 0xBEDE) {
                while (i < end) {
                    unsigned char c = b[i];
                    if (c == 0) { i++; continue; }
                    unsigned int eid = c >> 4;
                    Py_ssize_t length = (c & 0x0F) + 1;
                    if (eid == 15 || i + 1 + length > end) break;
                    unsigned char m = table[eid];
                    if (m == 0 || m > 14) {
                        memset(b + i, 0, (size_t)(1 + length));
                        if (hole < 0 && length >= 2) hole = (long)i;
                    } else {
                        b[i] = (unsigned char)((m << 4) | (c & 0x0F));
                    }
                    i += 1 + length;
                }
            } else if ((profile & 0xFFF0) == 0x1000) {
                while (i < end) {
                    unsigned char eid = b[i];
                    if (eid == 0) { i++; continue; }
                    if (i + 1 >= end) break;
                    Py_ssize_t length = b[i + 1];
                    if (i + 2 + length > end) break;
                    unsigned char m = table[eid];
                    if (m == 0) memset(b + i, 0, (size_t)(2 + length));
                    else b[i] = m;
                    i += 2 + length;
                }
            }
        }
    }
    PyObject *h = PyLong_FromLong(hole);
    if (h == NULL) { Py_DECREF(out); return NULL; }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) { Py_DECREF(out); Py_DECREF(h); return NULL; }
    PyTuple_SET_ITEM(result, 0, out);
    PyTuple_SET_ITEM(result, 1, h);
    return result;
}

/* SRTP protect through libsrtp's srtp_protect (2.x: ctx, packet, in/out length), whose address
   and context the caller takes from pylibsrtp (cffi) and keeps alive: one call from Python
   instead of a copy into a cffi buffer, the call and a slice out of it. Returns the SRTP
   packet as new bytes, or None when the packet is over 1500 bytes or libsrtp refuses it. */
typedef int (*srtp_protect_fn)(void *ctx, void *packet, int *len);
#define MAX_PACKET 1500
#define SRTP_TRAILER 144

static PyObject *
srtp_protect_copy(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "srtp_protect_copy(function, context, data)");
        return NULL;
    }
    void *fn = PyLong_AsVoidPtr(args[0]);
    if (fn == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "no function");
        return NULL;
    }
    void *ctx = PyLong_AsVoidPtr(args[1]);
    if (ctx == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "no context");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n = view.len;
    if (n > MAX_PACKET) { PyBuffer_Release(&view); Py_RETURN_NONE; }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + SRTP_TRAILER);
    if (out == NULL) { PyBuffer_Release(&view); return NULL; }
    memcpy(PyBytes_AS_STRING(out), view.buf, (size_t)n);
    PyBuffer_Release(&view);
    int len = (int)n;
    if (((srtp_protect_fn)fn)(ctx, PyBytes_AS_STRING(out), &len) != 0
            || len < 0 || len > n + SRTP_TRAILER) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, len) < 0) return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, [(data, (host, port)), ...], skipped=None) -> how many were handed to "
     "the kernel or skipped (a destination that refused one: its index appended to the list "
     "skipped, if given); less than all: the socket's buffer is full and the rest were not "
     "sent. One sendmmsg call, more only if one is interrupted."},
    {"rewrite_rtp", (PyCFunction)(void (*)(void))rewrite_rtp, METH_FASTCALL,
     "rewrite_rtp(data, pt, seq, ts, ssrc, table) -> (bytearray, hole): a copy of an RTP "
     "packet with payload type, sequence number, timestamp and SSRC rewritten (marker kept) "
     "and, unless table is None, its header-extension ids mapped through the 256-byte table "
     "(0: the element zeroed); hole: where the first dropped one-byte element of 3 bytes or "
     "more began, or -1 (rtp.header.rewrite_header + rewrite_extensions)."},
    {"srtp_protect_copy", (PyCFunction)(void (*)(void))srtp_protect_copy, METH_FASTCALL,
     "srtp_protect_copy(function, context, data) -> bytes or None: libsrtp's srtp_protect "
     "(its address, an int) on a copy of data with the srtp_t context (an int); None when data "
     "is over 1500 bytes or libsrtp refuses. The caller keeps the context alive."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_batch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__batch(void) { return PyModule_Create(&module); }

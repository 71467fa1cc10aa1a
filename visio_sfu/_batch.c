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
#include <structmember.h>

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

/* rewrite_rtp's work on the bytes of a copy (n >= 12): returns the hole (or -1) */
static long
rewrite_in_place(unsigned char *b, Py_ssize_t n, unsigned long pt, unsigned long seq,
                 unsigned long ts, unsigned long ssrc, const unsigned char *table)
{
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
    return hole;
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
    long hole = rewrite_in_place(b, n, pt, seq, ts, ssrc, table);
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


/* ---- Batch and Route: the forwarding path's send, one call per packet ------------------

   A Batch is the media port's datagrams to send after the one being handled (visio_sfu/
   udpmux.py): each protected into a slot of its own and sent with one sendmmsg. A Route is one
   connection's way into it (visio_sfu/transport.py arms it with the nominated pair's address
   and the SRTP context once they are known): Route.send protects a packet straight into the
   open Batch. Whenever that cannot be done as armed (the Batch closed or full, the nominated
   pair or the SRTP session changed, the route disarmed), it calls its fallback, the Python
   send_rtp, which does what it always did and may arm the route again. */

#define SLOT (MAX_PACKET + SRTP_TRAILER)

typedef struct {
    PyObject_HEAD
    int open;
    Py_ssize_t count;
    unsigned char *arena;  /* MAX_BATCH slots of SLOT bytes */
    int lens[MAX_BATCH];
    struct sockaddr_in names[MAX_BATCH];
} BatchObject;

static PyTypeObject BatchType;

static PyObject *
Batch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Batch() takes no arguments");
        return NULL;
    }
    BatchObject *self = (BatchObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->arena = PyMem_Malloc((size_t)MAX_BATCH * SLOT);
    if (self->arena == NULL) { Py_DECREF(self); return PyErr_NoMemory(); }
    return (PyObject *)self;
}

static void
Batch_dealloc(BatchObject *self)
{
    PyMem_Free(self->arena);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Batch_len(BatchObject *self) { return self->count; }

static int
parse_ipv4(PyObject *host, PyObject *port, struct sockaddr_in *name)
{
    /* 1: parsed; 0: not an IPv4 address and port; -1: a Python error */
    if (!PyUnicode_Check(host) || !PyLong_Check(port)) return 0;
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL) return -1;
    long p = PyLong_AsLong(port);
    if (p == -1 && PyErr_Occurred()) return -1;
    if (p < 0 || p > 65535) return 0;
    memset(name, 0, sizeof(*name));
    name->sin_family = AF_INET;
    name->sin_port = htons((unsigned short)p);
    return inet_pton(AF_INET, text, &name->sin_addr) == 1;
}

static PyObject *
Batch_begin(BatchObject *self, PyObject *unused)
{
    self->open = 1;
    Py_RETURN_NONE;
}

static PyObject *
Batch_end(BatchObject *self, PyObject *unused)
{
    self->open = 0;
    return PyLong_FromSsize_t(self->count);
}

static PyObject *
Batch_add(BatchObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) < 2) {
        PyErr_SetString(PyExc_TypeError, "add(data, (host, port))");
        return NULL;
    }
    if (self->count >= MAX_BATCH) Py_RETURN_FALSE;
    struct sockaddr_in *name = &self->names[self->count];
    int r = parse_ipv4(PyTuple_GET_ITEM(args[1], 0), PyTuple_GET_ITEM(args[1], 1), name);
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_FALSE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (view.len > SLOT) { PyBuffer_Release(&view); Py_RETURN_FALSE; }
    memcpy(self->arena + (size_t)self->count * SLOT, view.buf, (size_t)view.len);
    self->lens[self->count] = (int)view.len;
    PyBuffer_Release(&view);
    self->count++;
    Py_RETURN_TRUE;
}

static PyObject *
Batch_send(BatchObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send(fd, skipped)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return NULL;
    }
    PyObject *skipped = args[1];
    Py_ssize_t count = self->count;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iovs[MAX_BATCH];
    for (Py_ssize_t i = 0; i < count; i++) {
        iovs[i].iov_base = self->arena + (size_t)i * SLOT;
        iovs[i].iov_len = (size_t)self->lens[i];
        memset(&msgs[i], 0, sizeof(msgs[i]));
        msgs[i].msg_hdr.msg_name = &self->names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(self->names[i]);
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    /* as send_batch: a refusing destination skipped, a full buffer ends the call */
    Py_ssize_t pos = 0;
    while (pos < count) {
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg((int)fd, msgs + pos, (unsigned int)(count - pos), 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r > 0) { pos += r; continue; }
        if (r < 0 && err == EINTR) continue;
        if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)) break;
        PyObject *index = PyLong_FromSsize_t(pos);
        if (index == NULL || PyList_Append(skipped, index) < 0) { Py_XDECREF(index); return NULL; }
        Py_DECREF(index);
        pos += 1;
    }
    return PyLong_FromSsize_t(pos);
}

static PyObject *
Batch_take(BatchObject *self, PyObject *arg)
{
    Py_ssize_t start = PyLong_AsSsize_t(arg);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (start < 0) start = 0;
    Py_ssize_t count = self->count;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = start; i < count; i++) {
        char host[INET_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &self->names[i].sin_addr, host, sizeof(host)) == NULL) continue;
        PyObject *item = Py_BuildValue("(y#(si))", (const char *)(self->arena + (size_t)i * SLOT),
                                       (Py_ssize_t)self->lens[i], host,
                                       (int)ntohs(self->names[i].sin_port));
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    self->count = 0;
    return out;
}

static PyObject *
Batch_clear(BatchObject *self, PyObject *unused)
{
    self->count = 0;
    Py_RETURN_NONE;
}

static PyObject *
Batch_get_open(BatchObject *self, void *closure) { return PyBool_FromLong(self->open); }

static PyMethodDef Batch_methods[] = {
    {"begin", (PyCFunction)Batch_begin, METH_NOARGS,
     "begin(): datagrams sent from now on are collected (Route.send, add)."},
    {"end", (PyCFunction)Batch_end, METH_NOARGS,
     "end() -> how many are waiting: collection stops; send or take them."},
    {"add", (PyCFunction)(void (*)(void))Batch_add, METH_FASTCALL,
     "add(data, (host, port)) -> True if copied in; False if full, not IPv4, or over "
     "1644 bytes."},
    {"send", (PyCFunction)(void (*)(void))Batch_send, METH_FASTCALL,
     "send(fd, skipped) -> how many were handed to the kernel or skipped (their indexes "
     "appended to skipped), from the first; less than all: the socket's buffer is full. "
     "They stay in the batch until take or clear."},
    {"take", (PyCFunction)Batch_take, METH_O,
     "take(start) -> [(bytes, (host, port)), ...] from index start on; the batch is emptied."},
    {"clear", (PyCFunction)Batch_clear, METH_NOARGS, "clear(): empty the batch."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Batch_getset[] = {
    {"open", (getter)Batch_get_open, NULL, "collecting (between begin and end)", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PySequenceMethods Batch_as_sequence = {.sq_length = (lenfunc)Batch_len};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.Batch",
    .tp_doc = "Datagrams of the media port waiting for one sendmmsg, each in a slot of its own.",
    .tp_basicsize = sizeof(BatchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Batch_new,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
    .tp_getset = Batch_getset,
    .tp_as_sequence = &Batch_as_sequence,
};

typedef struct {
    PyObject_HEAD
    BatchObject *batch;
    PyObject *fallback;   /* the Python send_rtp */
    PyObject *session;    /* the pylibsrtp Session armed with (keeps the context alive) */
    PyObject *dtls;       /* whose _tx_srtp must still be that session */
    PyObject *nominated;  /* the ICE connection's nominated pairs, whose [1] must still be pair */
    PyObject *pair;
    PyObject *protocol;   /* the pair's StunProtocol, whose transport must still be ... */
    PyObject *transport;  /* ... the media port's one it was armed with (not a wrapper) */
    PyObject *owners;     /* the mux's address -> protocol table, where addr must still be */
    PyObject *addr;       /* ... protocol's (as the mux's sendto claims it when nobody's) */
    srtp_protect_fn fn;
    void *ctx;
    struct sockaddr_in name;
    unsigned long long sent;  /* packets put into the batch by send */
    unsigned long long checked;  /* route_epoch when the checks last passed; 0: never */
} RouteObject;

/* What a route checks (the nominated pair, the mux's owner table, the protocol's transport,
   the DTLS session) changes seldom, and whoever changes it calls invalidate(), which moves
   this on: a route whose checks passed in the same epoch sends without making them again
   (they touch four objects of its connection per packet, most of them cold in a fan-out). */
static unsigned long long route_epoch = 1;

static PyObject *one;  /* the component number of RTP, 1 */
static PyObject *tx_srtp_name, *transport_name;

static PyObject *
Route_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *batch, *fallback;
    static char *kwlist[] = {"batch", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Route", kwlist, &BatchType, &batch,
                                     &fallback))
        return NULL;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    RouteObject *self = (RouteObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(batch);
    self->batch = (BatchObject *)batch;
    Py_INCREF(fallback);
    self->fallback = fallback;
    return (PyObject *)self;
}

static void
Route_disarm_refs(RouteObject *self)
{
    Py_CLEAR(self->session);
    Py_CLEAR(self->dtls);
    Py_CLEAR(self->nominated);
    Py_CLEAR(self->pair);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->owners);
    Py_CLEAR(self->addr);
    self->fn = NULL;
    self->ctx = NULL;
    self->checked = 0;
}

static int
Route_traverse(RouteObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->batch);
    Py_VISIT(self->fallback);
    Py_VISIT(self->session);
    Py_VISIT(self->dtls);
    Py_VISIT(self->nominated);
    Py_VISIT(self->pair);
    Py_VISIT(self->protocol);
    Py_VISIT(self->transport);
    Py_VISIT(self->owners);
    Py_VISIT(self->addr);
    return 0;
}

static int
Route_clear(RouteObject *self)
{
    Route_disarm_refs(self);
    Py_CLEAR(self->batch);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
Route_dealloc(RouteObject *self)
{
    PyObject_GC_UnTrack(self);
    Route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Route_arm(RouteObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "arm(function, context, session, dtls, nominated, "
                        "pair, protocol, transport, owners, addr)");
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
    if (!PyDict_Check(args[4]) || !PyDict_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "nominated and owners must be dicts");
        return NULL;
    }
    if (!PyTuple_Check(args[9]) || PyTuple_GET_SIZE(args[9]) != 2) {
        PyErr_SetString(PyExc_TypeError, "addr must be a (host, port) tuple");
        return NULL;
    }
    struct sockaddr_in name;
    int r = parse_ipv4(PyTuple_GET_ITEM(args[9], 0), PyTuple_GET_ITEM(args[9], 1), &name);
    if (r < 0) return NULL;
    Route_disarm_refs(self);
    if (r == 0) Py_RETURN_FALSE;  /* not IPv4: the fallback sends */
    Py_INCREF(args[2]); self->session = args[2];
    Py_INCREF(args[3]); self->dtls = args[3];
    Py_INCREF(args[4]); self->nominated = args[4];
    Py_INCREF(args[5]); self->pair = args[5];
    Py_INCREF(args[6]); self->protocol = args[6];
    Py_INCREF(args[7]); self->transport = args[7];
    Py_INCREF(args[8]); self->owners = args[8];
    Py_INCREF(args[9]); self->addr = args[9];
    self->fn = (srtp_protect_fn)fn;
    self->ctx = ctx;
    self->name = name;
    Py_RETURN_TRUE;
}

static PyObject *
Route_disarm(RouteObject *self, PyObject *unused)
{
    Route_disarm_refs(self);
    Py_RETURN_NONE;
}

/* 1: the route can put a packet into the batch now, as armed; 0: not (the fallback sends);
   -1: a Python error */
static int
Route_ready(RouteObject *self)
{
    BatchObject *batch = self->batch;
    if (batch == NULL || self->pair == NULL || !batch->open || batch->count >= MAX_BATCH)
        return 0;
    if (self->checked == route_epoch) return 1;
    PyObject *pair = PyDict_GetItemWithError(self->nominated, one);  /* borrowed */
    if (pair != self->pair) return PyErr_Occurred() ? -1 : 0;
    PyObject *session = PyObject_GetAttr(self->dtls, tx_srtp_name);
    if (session == NULL) { PyErr_Clear(); return 0; }
    Py_DECREF(session);  /* only compared */
    if (session != self->session) return 0;
    PyObject *transport = PyObject_GetAttr(self->protocol, transport_name);
    if (transport == NULL) { PyErr_Clear(); return 0; }
    Py_DECREF(transport);  /* only compared */
    if (transport != self->transport) return 0;
    PyObject *owner = PyDict_GetItemWithError(self->owners, self->addr);  /* borrowed */
    if (owner != self->protocol) return PyErr_Occurred() ? -1 : 0;
    self->checked = route_epoch;
    return 1;
}

/* Protect the packet in the next slot (where the caller wrote it, n bytes) and take it into
   the batch for the armed address; 0 if libsrtp refused it (the slot stays free). */
static int
Route_take(RouteObject *self, Py_ssize_t n)
{
    BatchObject *batch = self->batch;
    unsigned char *slot = batch->arena + (size_t)batch->count * SLOT;
    int len = (int)n;
    if (self->fn(self->ctx, slot, &len) != 0 || len < 0 || len > SLOT) return 0;
    batch->lens[batch->count] = len;
    batch->names[batch->count] = self->name;
    batch->count++;
    self->sent++;
    return 1;
}

static PyObject *
Route_send(RouteObject *self, PyObject *data)
{
    int ready = Route_ready(self);
    if (ready < 0) return NULL;
    if (!ready) goto fallback;
    const char *buf;
    Py_ssize_t n;
    if (PyByteArray_CheckExact(data)) {
        buf = PyByteArray_AS_STRING(data); n = PyByteArray_GET_SIZE(data);
    } else if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AS_STRING(data); n = PyBytes_GET_SIZE(data);
    } else goto fallback;
    if (n > MAX_PACKET) goto fallback;
    memcpy(self->batch->arena + (size_t)self->batch->count * SLOT, buf, (size_t)n);
    if (!Route_take(self, n)) goto fallback;
    Py_RETURN_TRUE;
fallback:
    if (self->fallback == NULL) Py_RETURN_FALSE;  /* cleared by the garbage collector */
    return PyObject_CallOneArg(self->fallback, data);
}

static PyObject *
Route_get_pair(RouteObject *self, void *closure)
{
    PyObject *pair = self->pair ? self->pair : Py_None;
    Py_INCREF(pair);
    return pair;
}

static PyObject *
Route_get_session(RouteObject *self, void *closure)
{
    PyObject *session = self->session ? self->session : Py_None;
    Py_INCREF(session);
    return session;
}

static PyObject *
Route_get_sent(RouteObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->sent);
}

static PyMethodDef Route_methods[] = {
    {"arm", (PyCFunction)(void (*)(void))Route_arm, METH_FASTCALL,
     "arm(function, context, session, dtls, nominated, pair, protocol, transport, owners, "
     "addr) -> True if armed (addr an IPv4 (host, port)): send protects with libsrtp's "
     "srtp_protect (its address) and the context (an int) of session, while dtls._tx_srtp is "
     "session, nominated[1] is pair, protocol.transport is transport and owners[addr] is "
     "protocol (checked again once invalidate() was called since they last held)."},
    {"disarm", (PyCFunction)Route_disarm, METH_NOARGS,
     "disarm(): every send goes to the fallback until armed again."},
    {"send", (PyCFunction)Route_send, METH_O,
     "send(packet) -> bool: protected into the open batch for the armed address (True), or "
     "the fallback's answer."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Route_getset[] = {
    {"pair", (getter)Route_get_pair, NULL, "the pair armed for, or None", NULL},
    {"session", (getter)Route_get_session, NULL, "the SRTP session armed with, or None", NULL},
    {"sent", (getter)Route_get_sent, NULL, "packets put into the batch by send", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.Route",
    .tp_doc = "One connection's send into the media port's Batch: protect and queue, in C.",
    .tp_basicsize = sizeof(RouteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Route_new,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_traverse = (traverseproc)Route_traverse,
    .tp_clear = (inquiry)Route_clear,
    .tp_methods = Route_methods,
    .tp_getset = Route_getset,
};


/* ---- The steady state of DownTrack.write, compiled ------------------------------------

   MungerCore, ForwarderCore and DownTrackCore hold the state visio_sfu/munger.py,
   forwarder.py and downtrack.py keep per subscriber of a track (their Python classes derive
   from them and do everything else). DownTrackCore.write forwards a packet in the steady
   state (bound, the layer forwarded is the one chosen, the munger on this source, the
   publisher not back from a pause) as the Python path does, calling back into Python only for
   what is rare or kept there (VP8 picture ids, the transport-wide number, a freeze, a failed
   send); anything else goes to the Python write, ``_write``, before any state is changed. */

typedef struct {
    PyObject_HEAD
    PyObject *source;  /* None or the SSRC of the current source */
    unsigned long long source_value;
    int has_source;
    long long clock_rate, seq_offset, ts_offset, last_seq, last_ts;
    long long highest_src_seq, epoch_first_seq, epoch_first_ts;
    double last_time;
    char started;
    PyObject *previous;
} MungerCoreObject;

static int
MungerCore_traverse(MungerCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->source);
    Py_VISIT(self->previous);
    return 0;
}

static int
MungerCore_clear(MungerCoreObject *self)
{
    Py_CLEAR(self->source);
    Py_CLEAR(self->previous);
    return 0;
}

static void
MungerCore_dealloc(MungerCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    MungerCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
MungerCore_get_source(MungerCoreObject *self, void *closure)
{
    PyObject *v = self->source ? self->source : Py_None;
    Py_INCREF(v);
    return v;
}

static int
MungerCore_set_source(MungerCoreObject *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->source);
        self->has_source = 0;
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "source must be an int or None");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        /* a negative or huge source is kept, never matched by the compiled path */
        PyErr_Clear();
        self->has_source = 0;
    } else {
        self->source_value = v;
        self->has_source = 1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->source, value);
    return 0;
}

static PyMemberDef MungerCore_members[] = {
    {"clock_rate", T_LONGLONG, offsetof(MungerCoreObject, clock_rate), 0, NULL},
    {"seq_offset", T_LONGLONG, offsetof(MungerCoreObject, seq_offset), 0, NULL},
    {"ts_offset", T_LONGLONG, offsetof(MungerCoreObject, ts_offset), 0, NULL},
    {"last_seq", T_LONGLONG, offsetof(MungerCoreObject, last_seq), 0, NULL},
    {"last_ts", T_LONGLONG, offsetof(MungerCoreObject, last_ts), 0, NULL},
    {"highest_src_seq", T_LONGLONG, offsetof(MungerCoreObject, highest_src_seq), 0, NULL},
    {"epoch_first_seq", T_LONGLONG, offsetof(MungerCoreObject, epoch_first_seq), 0, NULL},
    {"epoch_first_ts", T_LONGLONG, offsetof(MungerCoreObject, epoch_first_ts), 0, NULL},
    {"last_time", T_DOUBLE, offsetof(MungerCoreObject, last_time), 0, NULL},
    {"started", T_BOOL, offsetof(MungerCoreObject, started), 0, NULL},
    {"previous", T_OBJECT, offsetof(MungerCoreObject, previous), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyGetSetDef MungerCore_getset[] = {
    {"source", (getter)MungerCore_get_source, (setter)MungerCore_set_source,
     "the SSRC of the current source, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject MungerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.MungerCore",
    .tp_doc = "The state of visio_sfu.munger.Munger, readable by DownTrackCore.write.",
    .tp_basicsize = sizeof(MungerCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)MungerCore_dealloc,
    .tp_traverse = (traverseproc)MungerCore_traverse,
    .tp_clear = (inquiry)MungerCore_clear,
    .tp_members = MungerCore_members,
    .tp_getset = MungerCore_getset,
};

typedef struct {
    PyObject_HEAD
    char video;
    long long current, target, keyframe_wanted, switches, starts;
} ForwarderCoreObject;

static PyMemberDef ForwarderCore_members[] = {
    {"video", T_BOOL, offsetof(ForwarderCoreObject, video), 0, NULL},
    {"current", T_LONGLONG, offsetof(ForwarderCoreObject, current), 0, NULL},
    {"target", T_LONGLONG, offsetof(ForwarderCoreObject, target), 0, NULL},
    {"keyframe_wanted", T_LONGLONG, offsetof(ForwarderCoreObject, keyframe_wanted), 0, NULL},
    {"switches", T_LONGLONG, offsetof(ForwarderCoreObject, switches), 0, NULL},
    {"starts", T_LONGLONG, offsetof(ForwarderCoreObject, starts), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject ForwarderCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.ForwarderCore",
    .tp_doc = "The layer state of visio_sfu.forwarder.Forwarder, readable by DownTrackCore.write.",
    .tp_basicsize = sizeof(ForwarderCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_members = ForwarderCore_members,
};

/* The transport-wide sequence number (transport-cc) written into each packet a subscriber
   connection sends, and its send time and size recorded for the estimator
   (visio_sfu/bwe.py TransportStamper, which derives from this). */
typedef struct {
    PyObject_HEAD
    long long ext_id;  /* 0: not negotiated, nothing written */
    long long seq;
    PyObject *sent;  /* array('d') of 65536: send time per number */
    PyObject *size;  /* array('H') of 65536: size per number */
} StamperCoreObject;

static PyTypeObject StamperCoreType;
static PyObject *str_stamp;

static int
StamperCore_traverse(StamperCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->sent);
    Py_VISIT(self->size);
    return 0;
}

static int
StamperCore_clear(StamperCoreObject *self)
{
    Py_CLEAR(self->sent);
    Py_CLEAR(self->size);
    return 0;
}

static void
StamperCore_dealloc(StamperCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    StamperCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether the compiled stamp does it all: nothing to write, or a one-byte id written into
   the hole a dropped element left */
static int
Stamper_fast(StamperCoreObject *self, long hole, Py_ssize_t n)
{
    if (self->ext_id == 0) return 1;
    return self->ext_id > 0 && self->ext_id < 15 && hole >= 12 && hole + 2 < n;
}

static void
Stamper_put(StamperCoreObject *self, unsigned char *b, long hole, long long number)
{
    b[hole] = (unsigned char)((self->ext_id << 4) | 1);
    b[hole + 1] = (unsigned char)(number >> 8);
    b[hole + 2] = (unsigned char)(number & 0xFF);
}

/* Write the next number into the hole and record it (Stamper_fast said so): the number
   written, -1 if none (not negotiated), -2 on a Python error */
static long long
Stamper_write(StamperCoreObject *self, unsigned char *b, Py_ssize_t n, double now, long hole)
{
    if (self->ext_id == 0) return -1;
    long long number = self->seq & 0xFFFF;
    Py_buffer sent, size;
    if (self->sent == NULL || self->size == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the stamper has no record");
        return -2;
    }
    if (PyObject_GetBuffer(self->sent, &sent, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return -2;
    if (PyObject_GetBuffer(self->size, &size, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&sent);
        return -2;
    }
    int ok = sent.itemsize == 8 && sent.format != NULL && strcmp(sent.format, "d") == 0
        && size.itemsize == 2 && size.format != NULL && strcmp(size.format, "H") == 0
        && sent.len >= 8 * 65536 && size.len >= 2 * 65536 && n <= 0xFFFF;
    if (ok) {
        Stamper_put(self, b, hole, number);
        ((double *)sent.buf)[number] = now;
        ((unsigned short *)size.buf)[number] = (unsigned short)n;
        self->seq = (number + 1) & 0xFFFF;
    }
    PyBuffer_Release(&sent);
    PyBuffer_Release(&size);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "the stamper's record must be array('d') and array('H')");
        return -2;
    }
    return number;
}

static PyObject *
StamperCore_stamp(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    StamperCoreObject *self = (StamperCoreObject *)op;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "stamp(buf, now, hole=-1)");
        return NULL;
    }
    long hole = -1;
    if (nargs == 3) {
        hole = PyLong_AsLong(args[2]);
        if (hole == -1 && PyErr_Occurred()) return NULL;
    }
    if (self->ext_id == 0) Py_RETURN_NONE;
    PyObject *buf = args[0];
    if (PyByteArray_CheckExact(buf) && PyFloat_CheckExact(args[1])
            && Stamper_fast(self, hole, PyByteArray_GET_SIZE(buf))) {
        if (Stamper_write(self, (unsigned char *)PyByteArray_AS_STRING(buf),
                          PyByteArray_GET_SIZE(buf), PyFloat_AS_DOUBLE(args[1]), hole) == -2)
            return NULL;
        Py_RETURN_NONE;
    }
    /* the element to be placed in the block some other way: in Python */
    PyObject *stack[4] = {op, args[0], args[1], nargs == 3 ? args[2] : NULL};
    if (nargs == 2) {
        PyObject *h = PyLong_FromLong(-1);
        if (h == NULL) return NULL;
        stack[3] = h;
        PyObject *r = PyObject_VectorcallMethod(str_stamp, stack, 4, NULL);
        Py_DECREF(h);
        return r;
    }
    return PyObject_VectorcallMethod(str_stamp, stack, 4, NULL);
}

/* The StamperCore behind a DownTrack's stamp, when it is its compiled stamp method */
static StamperCoreObject *
Stamper_of(PyObject *stamp)
{
    if (!PyCFunction_Check(stamp)) return NULL;
    PyObject *owner = PyCFunction_GET_SELF(stamp);
    if (owner == NULL || !PyObject_TypeCheck(owner, &StamperCoreType)) return NULL;
    if (PyCFunction_GET_FUNCTION(stamp) != (PyCFunction)(void (*)(void))StamperCore_stamp)
        return NULL;
    return (StamperCoreObject *)owner;
}

static PyMemberDef StamperCore_members[] = {
    {"ext_id", T_LONGLONG, offsetof(StamperCoreObject, ext_id), 0, NULL},
    {"seq", T_LONGLONG, offsetof(StamperCoreObject, seq), 0, NULL},
    {"_sent", T_OBJECT, offsetof(StamperCoreObject, sent), 0, NULL},
    {"_size", T_OBJECT, offsetof(StamperCoreObject, size), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyMethodDef StamperCore_methods[] = {
    {"stamp", (PyCFunction)(void (*)(void))StamperCore_stamp, METH_FASTCALL,
     "stamp(buf, now, hole=-1): write the next transport-wide number into a packet about to "
     "leave and record when and how large (into the hole a dropped element left, compiled; "
     "anywhere else through self._stamp)."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject StamperCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.StamperCore",
    .tp_doc = "The state of visio_sfu.bwe.TransportStamper and its compiled stamp.",
    .tp_basicsize = sizeof(StamperCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)StamperCore_dealloc,
    .tp_traverse = (traverseproc)StamperCore_traverse,
    .tp_clear = (inquiry)StamperCore_clear,
    .tp_members = StamperCore_members,
    .tp_methods = StamperCore_methods,
};

typedef struct {
    PyObject_HEAD
    PyObject *forwarder, *munger, *send, *stamp, *recent, *ext_table;
    unsigned int ssrc;
    int payload_type;
    char bound, vp8;
    long long packets, bytes;
    double last_in, last_out, freeze_after, resume_gap;
    unsigned long long compiled;  /* packets forwarded by the compiled path */
    /* VP8 picture id and TL0PICIDX kept continuous (DownTrack._munge_vp8) */
    char vp8_switch;
    long long pid_offset, tl0_offset, last_pid, last_tl0;
} DownTrackCoreObject;

/* RTP payload offset, or -1 if not valid RTP (rtp.header.payload_offset) */
static Py_ssize_t
rtp_payload_offset(const unsigned char *b, Py_ssize_t n)
{
    if (n < 12 || (b[0] >> 6) != 2) return -1;
    Py_ssize_t off = 12 + 4 * (b[0] & 0x0F);
    if (b[0] & 0x10) {
        if (off + 4 > n) return -1;
        off += 4 + 4 * (((Py_ssize_t)b[off + 2] << 8) | b[off + 3]);
    }
    if (off > n) return -1;
    if (b[0] & 0x20) {
        if (off >= n) return -1;
        unsigned char pad = b[n - 1];
        if (pad == 0 || off + pad > n) return -1;
    }
    return off;
}

/* DownTrack._munge_vp8 between switches (the switch itself stays in Python): the picture id
   (its width kept) and TL0PICIDX moved by the offsets of this epoch. */
static void
munge_vp8_steady(DownTrackCoreObject *self, unsigned char *b, Py_ssize_t n)
{
    Py_ssize_t off = rtp_payload_offset(b, n);
    if (off < 0 || off >= n) return;
    const unsigned char *p = b + off;
    Py_ssize_t len = n - off, i = 1;
    long long pid = -1, tl0 = -1;
    int bits = 0;
    Py_ssize_t pid_at = -1, tl0_at = -1;
    if (!(p[0] & 0x80)) return;  /* no X: no picture id */
    if (len < 2) return;
    unsigned char x = p[1];
    i = 2;
    if (x & 0x80) {
        if (i >= len) return;
        pid_at = i;
        if (p[i] & 0x80) {
            if (i + 1 >= len) return;
            pid = ((long long)(p[i] & 0x7F) << 8) | p[i + 1];
            bits = 15;
            i += 2;
        } else {
            pid = p[i] & 0x7F;
            bits = 7;
            i += 1;
        }
    }
    if (x & 0x40) {
        if (i >= len) return;
        tl0_at = i;
        tl0 = p[i];
        i += 1;
    }
    if (x & 0x30) {
        if (i >= len) return;
        i += 1;
    }
    if (i > len || bits == 0) return;
    long long mask = bits == 15 ? 0x7FFF : 0x7F;
    long long out_pid = (pid + self->pid_offset) & mask;
    long long out_tl0 = tl0 >= 0 ? ((tl0 + self->tl0_offset) & 0xFF) : -1;
    self->last_pid = out_pid;
    if (out_tl0 >= 0) self->last_tl0 = out_tl0;
    unsigned char *w = b + off;
    if (bits == 15) {
        w[pid_at] = (unsigned char)(0x80 | ((out_pid >> 8) & 0x7F));
        w[pid_at + 1] = (unsigned char)(out_pid & 0xFF);
    } else {
        w[pid_at] = (unsigned char)(out_pid & 0x7F);
    }
    if (tl0_at >= 0 && out_tl0 >= 0) w[tl0_at] = (unsigned char)out_tl0;
}

static PyObject *str_write, *str_munge_vp8, *str_append, *str_send_failed;


static int
DownTrackCore_traverse(DownTrackCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->forwarder);
    Py_VISIT(self->munger);
    Py_VISIT(self->send);
    Py_VISIT(self->stamp);
    Py_VISIT(self->recent);
    Py_VISIT(self->ext_table);
    return 0;
}

static int
DownTrackCore_clear(DownTrackCoreObject *self)
{
    Py_CLEAR(self->forwarder);
    Py_CLEAR(self->munger);
    Py_CLEAR(self->send);
    Py_CLEAR(self->stamp);
    Py_CLEAR(self->recent);
    Py_CLEAR(self->ext_table);
    return 0;
}

static void
DownTrackCore_dealloc(DownTrackCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    DownTrackCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
DownTrackCore_slow(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    /* the Python path: self._write(*args) */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *stack[16];
    if (nargs + nkw + 1 > 16) {
        PyErr_SetString(PyExc_TypeError, "write: too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) stack[i + 1] = args[i];
    return PyObject_VectorcallMethod(str_write, stack, (size_t)(nargs + 1), kwnames);
}

/* A video packet leaves at ``now``: a gap since the last over freeze_after counts as a
   freeze (DownTrack._freeze, in Python). 1 if one was counted, 0 if not, -1 on an error. */
static int
DownTrackCore_freeze(DownTrackCoreObject *self, double now)
{
    double last = self->last_out;
    self->last_out = now;
    if (!(now - last > self->freeze_after && last > 0)) return 0;
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_freeze", "dd", now - last, now);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 1;
}

static PyObject *
DownTrackCore_write(PyObject *op, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    DownTrackCoreObject *self = (DownTrackCoreObject *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs < 6 || nargs > 7 || !self->bound) goto slow;
    PyObject *fwd_obj = self->forwarder, *mun_obj = self->munger, *data = args[0];
    if (fwd_obj == NULL || !PyObject_TypeCheck(fwd_obj, &ForwarderCoreType)) goto slow;
    if (mun_obj == NULL || !PyObject_TypeCheck(mun_obj, &MungerCoreType)) goto slow;
    if (!PyBytes_CheckExact(data)) goto slow;
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n < 12 || n > MAX_PACKET) goto slow;
    ForwarderCoreObject *fwd = (ForwarderCoreObject *)fwd_obj;
    MungerCoreObject *m = (MungerCoreObject *)mun_obj;
    long long layer = 0;
    if (nargs == 7) {
        if (!PyLong_CheckExact(args[6])) goto slow;
        layer = PyLong_AsLongLong(args[6]);
        if (layer == -1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
    }
    if (layer != fwd->current || layer != fwd->target) goto slow;
    if (!PyFloat_CheckExact(args[5]) || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2])
            || !PyLong_CheckExact(args[3])) goto slow;
    double now = PyFloat_AS_DOUBLE(args[5]);
    if (fwd->video && now - self->last_in > self->resume_gap) goto slow;
    unsigned long long ssrc = PyLong_AsUnsignedLongLong(args[1]);
    if (ssrc == (unsigned long long)-1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
    if (!m->has_source || ssrc != m->source_value) goto slow;
    long long seq = PyLong_AsLongLong(args[2]);
    long long ts = PyLong_AsLongLong(args[3]);
    if ((seq == -1 || ts == -1) && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
    if (seq < 0 || seq > 0xFFFF || ts < 0 || ts > 0xFFFFFFFFLL) goto slow;
    long long d = (seq - m->highest_src_seq) & 0xFFFF;
    if (d >= 0x8000) d -= 0x10000;
    long long out_seq = (seq + m->seq_offset) & 0xFFFF;
    long long out_ts = (ts + m->ts_offset) & 0xFFFFFFFFLL;
    if (d <= 0) {
        long long e = (out_seq - m->epoch_first_seq) & 0xFFFF;
        if (e >= 0x8000) e -= 0x10000;
        if (d < -1000 || e < 0) goto slow;  /* the Python path drops it (and counts why) */
    }
    const unsigned char *table = NULL;
    PyObject *t = self->ext_table;
    if (t != NULL && t != Py_None) {
        if (!PyBytes_CheckExact(t) || PyBytes_GET_SIZE(t) != 256) goto slow;
        table = (const unsigned char *)PyBytes_AS_STRING(t);
    }
    /* the send is a Route's that can take it now, and nothing of it needs Python (a VP8
       switch's new offsets, a transport-wide number written some other way than into the
       hole a dropped extension left): rewritten, numbered and protected in its batch slot */
    RouteObject *route = NULL;
    StamperCoreObject *stamper = NULL;
    PyObject *send = self->send, *stamp = self->stamp;
    long slot_hole = -1, hole = -1;
    int froze = 0;  /* the freeze check made already (the slot path makes it first) */
    if (!(self->vp8 && self->vp8_switch) && send != NULL && PyCFunction_Check(send)
            && PyCFunction_GET_SELF(send) != NULL
            && Py_IS_TYPE(PyCFunction_GET_SELF(send), &RouteType)) {
        route = (RouteObject *)PyCFunction_GET_SELF(send);
        int ready = Route_ready(route);
        if (ready < 0) return NULL;
        if (!ready) route = NULL;
    }
    if (route != NULL) {  /* the slot is scratch until the route takes it */
        unsigned char *slot = route->batch->arena + (size_t)route->batch->count * SLOT;
        memcpy(slot, PyBytes_AS_STRING(data), (size_t)n);
        slot_hole = rewrite_in_place(slot, n, (unsigned long)self->payload_type,
                                     (unsigned long)out_seq, (unsigned long)out_ts,
                                     (unsigned long)self->ssrc, table);
        if (stamp != NULL && stamp != Py_None) {
            stamper = Stamper_of(stamp);
            if (stamper == NULL || !Stamper_fast(stamper, slot_hole, n)) route = NULL;
        }
    }
    PyObject *buf = NULL;
    if (route == NULL) {
        buf = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(data), n);
        if (buf == NULL) return NULL;
    }
    /* from here on, as the Python path: the state changes */
    if (fwd->video) self->last_in = now;
    if (d > 0) {
        m->highest_src_seq = seq;
        m->last_seq = out_seq;
        m->last_ts = out_ts;
        m->last_time = now;
        m->started = 1;
    }
    PyObject *r;
    if (route != NULL) {
        /* the freeze first: _freeze is Python, which could do anything (reassign the send or
           the table, send through the same batch): after it, the slot path is taken only if
           nothing it relies on changed, else the packet is made again for the send */
        Py_INCREF(route);
        Py_XINCREF(t);
        Py_ssize_t count = route->batch->count;
        int ready = 1;
        if (fwd->video) {
            int froze_now = DownTrackCore_freeze(self, now);
            if (froze_now < 0) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
            if (froze_now) {
                ready = Route_ready(route);
                if (ready < 0) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
                ready = ready && route->batch->count == count && self->send == send
                    && self->stamp == stamp && self->ext_table == t;
            }
        }
        froze = 1;
        if (!ready) {  /* made again, from the publisher's packet, for the send */
            buf = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(data), n);
            if (buf == NULL) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
            hole = rewrite_in_place((unsigned char *)PyByteArray_AS_STRING(buf), n,
                                    (unsigned long)self->payload_type, (unsigned long)out_seq,
                                    (unsigned long)out_ts, (unsigned long)self->ssrc, table);
            Py_DECREF(route);
            Py_XDECREF(t);  /* table is not read after this */
            goto rewritten;
        }
        unsigned char *slot = route->batch->arena + (size_t)route->batch->count * SLOT;
        if (self->vp8) munge_vp8_steady(self, slot, n);
        long long number = -1;  /* the transport-wide number written, if any */
        if (stamper != NULL) {
            number = Stamper_write(stamper, slot, n, now, slot_hole);
            if (number == -2) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
            if (self->recent != NULL && self->recent != Py_None) {
                /* deque.append runs no Python code of ours */
                PyObject *copy = PyByteArray_FromStringAndSize((const char *)slot, n);
                if (copy == NULL) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
                r = PyObject_CallMethodOneArg(self->recent, str_append, copy);
                Py_DECREF(copy);
                if (r == NULL) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
                Py_DECREF(r);
            }
        }
        if (Route_take(route, n)) {
            self->packets++;
            self->bytes += n;
            self->compiled++;
            Py_DECREF(route);
            Py_XDECREF(t);
            Py_RETURN_NONE;
        }
        /* libsrtp refused it (protected in place: the slot is lost): made again, with the
           same transport-wide number, for the send (whose fallback counts the failure) */
        buf = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(data), n);
        if (buf == NULL) { Py_DECREF(route); Py_XDECREF(t); return NULL; }
        unsigned char *b = (unsigned char *)PyByteArray_AS_STRING(buf);
        rewrite_in_place(b, n, (unsigned long)self->payload_type, (unsigned long)out_seq,
                         (unsigned long)out_ts, (unsigned long)self->ssrc, table);
        if (self->vp8) munge_vp8_steady(self, b, n);
        if (number >= 0) Stamper_put(stamper, b, slot_hole, number);
        Py_DECREF(route);
        Py_XDECREF(t);
        goto send;
    }
    hole = rewrite_in_place((unsigned char *)PyByteArray_AS_STRING(buf), n,
                            (unsigned long)self->payload_type, (unsigned long)out_seq,
                            (unsigned long)out_ts, (unsigned long)self->ssrc, table);
rewritten:
    if (self->vp8 && self->vp8_switch) {  /* a switch: new offsets, in Python */
        r = PyObject_CallMethodOneArg(op, str_munge_vp8, buf);
        if (r == NULL) goto error;
        Py_DECREF(r);
    } else if (self->vp8) {
        munge_vp8_steady(self, (unsigned char *)PyByteArray_AS_STRING(buf), n);
    }
    if (self->stamp != NULL && self->stamp != Py_None) {
        PyObject *h = PyLong_FromLong(hole);
        if (h == NULL) goto error;
        PyObject *stamp_args[3] = {buf, args[5], h};
        r = PyObject_Vectorcall(self->stamp, stamp_args, 3, NULL);
        Py_DECREF(h);
        if (r == NULL) goto error;
        Py_DECREF(r);
        if (self->recent != NULL && self->recent != Py_None) {
            r = PyObject_CallMethodOneArg(self->recent, str_append, buf);
            if (r == NULL) goto error;
            Py_DECREF(r);
        }
    }
    if (fwd->video && !froze && DownTrackCore_freeze(self, now) < 0) goto error;
send:
    if (self->send == NULL) {
        PyErr_SetString(PyExc_AttributeError, "no _send");
        goto error;
    }
    r = PyObject_CallOneArg(self->send, buf);
    if (r == NULL) goto error;
    int sent = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (sent < 0) goto error;
    if (sent) {
        self->packets++;
        self->bytes += PyByteArray_GET_SIZE(buf);
        self->compiled++;
    } else {
        r = PyObject_CallMethodNoArgs(op, str_send_failed);
        if (r == NULL) goto error;
        Py_DECREF(r);
    }
    Py_DECREF(buf);
    Py_RETURN_NONE;
error:
    Py_DECREF(buf);
    return NULL;
slow:
    return DownTrackCore_slow(op, args, (size_t)nargsf, kwnames);
}

static PyObject *
DownTrackCore_get_compiled(DownTrackCoreObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->compiled);
}

static PyMemberDef DownTrackCore_members[] = {
    {"forwarder", T_OBJECT, offsetof(DownTrackCoreObject, forwarder), 0, NULL},
    {"munger", T_OBJECT, offsetof(DownTrackCoreObject, munger), 0, NULL},
    {"_send", T_OBJECT, offsetof(DownTrackCoreObject, send), 0, NULL},
    {"stamp", T_OBJECT, offsetof(DownTrackCoreObject, stamp), 0, NULL},
    {"recent", T_OBJECT, offsetof(DownTrackCoreObject, recent), 0, NULL},
    {"ext_table", T_OBJECT, offsetof(DownTrackCoreObject, ext_table), 0, NULL},
    {"ssrc", T_UINT, offsetof(DownTrackCoreObject, ssrc), 0, NULL},
    {"payload_type", T_INT, offsetof(DownTrackCoreObject, payload_type), 0, NULL},
    {"bound", T_BOOL, offsetof(DownTrackCoreObject, bound), 0, NULL},
    {"_vp8", T_BOOL, offsetof(DownTrackCoreObject, vp8), 0, NULL},
    {"packets", T_LONGLONG, offsetof(DownTrackCoreObject, packets), 0, NULL},
    {"bytes", T_LONGLONG, offsetof(DownTrackCoreObject, bytes), 0, NULL},
    {"_last_in", T_DOUBLE, offsetof(DownTrackCoreObject, last_in), 0, NULL},
    {"_last_out", T_DOUBLE, offsetof(DownTrackCoreObject, last_out), 0, NULL},
    {"freeze_after", T_DOUBLE, offsetof(DownTrackCoreObject, freeze_after), 0, NULL},
    {"resume_gap", T_DOUBLE, offsetof(DownTrackCoreObject, resume_gap), 0, NULL},
    {"_vp8_switch", T_BOOL, offsetof(DownTrackCoreObject, vp8_switch), 0, NULL},
    {"_pid_offset", T_LONGLONG, offsetof(DownTrackCoreObject, pid_offset), 0, NULL},
    {"_tl0_offset", T_LONGLONG, offsetof(DownTrackCoreObject, tl0_offset), 0, NULL},
    {"_last_pid", T_LONGLONG, offsetof(DownTrackCoreObject, last_pid), 0, NULL},
    {"_last_tl0", T_LONGLONG, offsetof(DownTrackCoreObject, last_tl0), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyGetSetDef DownTrackCore_getset[] = {
    {"compiled", (getter)DownTrackCore_get_compiled, NULL,
     "packets forwarded by the compiled write", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyMethodDef DownTrackCore_methods[] = {
    {"write", (PyCFunction)(void (*)(void))DownTrackCore_write,
     METH_FASTCALL | METH_KEYWORDS,
     "write(data, ssrc, seq, ts, key, now, layer=0): forward one publisher packet (the steady "
     "state compiled; anything else through self._write)."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject DownTrackCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "visio_sfu._batch.DownTrackCore",
    .tp_doc = "The per-packet state of visio_sfu.downtrack.DownTrack and its compiled write.",
    .tp_basicsize = sizeof(DownTrackCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)DownTrackCore_dealloc,
    .tp_traverse = (traverseproc)DownTrackCore_traverse,
    .tp_clear = (inquiry)DownTrackCore_clear,
    .tp_members = DownTrackCore_members,
    .tp_getset = DownTrackCore_getset,
    .tp_methods = DownTrackCore_methods,
};

static PyObject *
invalidate(PyObject *module, PyObject *unused)
{
    route_epoch++;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"invalidate", invalidate, METH_NOARGS,
     "invalidate(): something a Route checks may have changed (a nominated pair, the media "
     "port's owner table, a protocol's transport, a DTLS session): every route checks again "
     "before its next packet. Cheap: whoever changes one calls it."},
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

PyMODINIT_FUNC
PyInit__batch(void)
{
    if (PyType_Ready(&BatchType) < 0 || PyType_Ready(&RouteType) < 0
            || PyType_Ready(&MungerCoreType) < 0 || PyType_Ready(&ForwarderCoreType) < 0
            || PyType_Ready(&DownTrackCoreType) < 0 || PyType_Ready(&StamperCoreType) < 0)
        return NULL;
    str_stamp = PyUnicode_InternFromString("_stamp");
    if (str_stamp == NULL) return NULL;
    one = PyLong_FromLong(1);
    tx_srtp_name = PyUnicode_InternFromString("_tx_srtp");
    transport_name = PyUnicode_InternFromString("transport");
    str_write = PyUnicode_InternFromString("_write");
    str_munge_vp8 = PyUnicode_InternFromString("_munge_vp8");
    str_append = PyUnicode_InternFromString("append");
    str_send_failed = PyUnicode_InternFromString("_send_failed");
    if (one == NULL || tx_srtp_name == NULL || transport_name == NULL || str_write == NULL || str_munge_vp8 == NULL
            || str_append == NULL || str_send_failed == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyTypeObject *cores[4] = {&MungerCoreType, &ForwarderCoreType, &DownTrackCoreType,
                              &StamperCoreType};
    const char *names[4] = {"MungerCore", "ForwarderCore", "DownTrackCore", "StamperCore"};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(cores[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)cores[i]) < 0) {
            Py_DECREF(cores[i]); Py_DECREF(m); return NULL;
        }
    }
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType); Py_DECREF(m); return NULL;
    }
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0) {
        Py_DECREF(&RouteType); Py_DECREF(m); return NULL;
    }
    return m;
}

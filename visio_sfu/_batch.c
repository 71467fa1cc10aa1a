/* sendmmsg for visio-sfu's media port: many datagrams, one system call. */
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
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!", &fd, &PyList_Type, &items))
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

static PyMethodDef methods[] = {
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, [(data, (host, port)), ...]) -> how many were handed to the kernel or "
     "skipped (a destination that refused one); less than all: the socket's buffer is full "
     "and the rest were not sent. One sendmmsg call, more only if one is interrupted."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_batch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__batch(void) { return PyModule_Create(&module); }

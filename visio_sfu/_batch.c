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
    int sent = 0;
    while (sent < count) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg(fd, msgs + sent, (unsigned int)(count - sent), 0);
        Py_END_ALLOW_THREADS
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;  /* EAGAIN (buffer full) or an error: the rest are dropped, as UDP may */
        }
        sent += r;
    }
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    return PyLong_FromLong(sent);
bad:
    PyErr_SetString(PyExc_ValueError, "items must be (bytes, (IPv4 address, port)) tuples");
fail:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, [(data, (host, port)), ...]) -> datagrams sent: one sendmmsg call."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_batch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__batch(void) { return PyModule_Create(&module); }

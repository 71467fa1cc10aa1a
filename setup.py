"""The one compiled part: visio_sfu._batch (sendmmsg for the media port, and the forwarding
path's per-subscriber header rewrite), built at install time when a C compiler and Python's
headers are there; without them the install goes on, the server sends each datagram with
sendto (visio_sfu/udpmux.py) and rewrites headers in Python (visio_sfu/downtrack.py).
Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("visio_sfu._batch", ["visio_sfu/_batch.c"], optional=True),
    ]
)

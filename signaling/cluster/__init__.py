"""Beyond one process: a worker per core, and a cluster of nodes coordinated through Redis.

docs/cluster.md describes the design. In short: the process that listens on the public port is
the *front*. It reads the room from a connection's access token (or an admin request's path)
and asks where the room lives: in a local worker process (``--workers N``, workers.py), on
another node of the cluster (``--redis URL``, node.py), or in its own SFU. A connection for a
room that lives elsewhere is relayed there (proxy.py: WebSocket frames and HTTP requests);
media never goes through the front: ICE candidates are those of the process owning the room.
"""

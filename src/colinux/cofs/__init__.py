"""cofs: host directories shared into the guest over FUSE-over-virtio.

The guest mounts a share with the stock ``virtiofs`` module; on the host,
``CofsServer`` (``server.py``) is the vhost-user backend of that virtio-fs
device and answers its FUSE requests from the share's directory. The layers:

- ``vhost_user.py``: the vhost-user message codec (pure functions over bytes).
- ``virtqueue.py``: split virtqueues in the guest memory UML hands us.
- ``fuse_proto.py``: the FUSE request/reply codec (pure functions over bytes).
- ``fs.py``: the file system the guest sees: confinement beneath the share
  root, and the flat view (owner and modes from the mount options).
- ``server.py``: the I/O: the socket, the eventfds, one thread per share.
"""

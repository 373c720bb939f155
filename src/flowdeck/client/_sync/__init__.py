# Generated from client/_async/__init__.py by scripts/gen_sync_client.py: do not edit.
"""One face of the client.  ``_async`` is the source of both faces and ``_sync`` is
generated from it by ``scripts/gen_sync_client.py``: edit ``_async``, then ``make sdk``."""

"""Executors run one step attempt each: a local process, or a worker of the in-server pool.

(This package file imports nothing: ``python -m flowdeck.executors.pystep`` starts fast.)
"""

"""Host processes: executors run out of the worker's process (and Python environment).

``protocol`` frames the messages, ``main`` is the host process, ``pool`` the worker's side.
"""

from roadie.hosts.pool import HostError, HostPool

__all__ = ["HostError", "HostPool"]

"""Host processes: executors run out of the worker's process (and Python environment).

``protocol`` frames the messages, ``main`` is the host process, ``pool`` the worker's side,
and ``template`` the warm template hosts the pool forks hosts from.
``main`` builds an app of its own, so it sits at the top of roadie's layers, with the
programs, while ``pool``, ``template`` and ``protocol`` sit below the worker (docs/architecture.md).
"""

from roadie.hosts.pool import HostError, HostPool

__all__ = ["HostError", "HostPool"]

"""Environments: Python environments of their own for plugins (``roadie env ...``).

``layout`` says where they live (names, folders, their Python); ``manage`` creates, installs
into, lists and removes them; ``discovery`` finds their executors without importing plugin
code in this process (it runs the environment's Python with ``probe``, and caches the answer
by the environment's state).
"""

from roadie.envs.manage import EnvInfo, create_env, install, list_envs, remove_env

__all__ = ["EnvInfo", "create_env", "install", "list_envs", "remove_env"]

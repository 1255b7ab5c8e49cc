"""Example executors and hooks for roadie: the code the plugin author guide walks through."""

"""roadie's own behaviour, registered as plugins through the same hooks as any other."""

"""``python -m roadie``: the CLI."""

from roadie.cli import main

main()

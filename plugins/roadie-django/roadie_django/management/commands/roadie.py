"""``python manage.py roadie ...``: any roadie command on the database of a TASKS backend."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    """Run the ``roadie`` command line on the database of a roadie backend."""

    help = ("Run a roadie command on the database of a TASKS backend: `roadie worker`, "
            "`roadie db upgrade`, `roadie list`, `roadie web`, ... (`roadie --help` lists "
            "them). Give Django's options before the roadie command.")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """``--backend ALIAS`` and the roadie command with its arguments."""
        parser.add_argument("--backend", default="default",
                            help="The TASKS alias whose database to use (default: default).")
        parser.add_argument("roadie_args", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                            help="The roadie command and its arguments.")

    def handle(self, *args: Any, backend: str, roadie_args: list[str], **options: Any) -> None:
        """Set ``ROADIE_URL`` to the backend's database (worker processes inherit it) and run
        the roadie command line."""
        from roadie.cli import cli

        from roadie_django.backend import RoadieBackend
        from roadie_django.compat import task_backends

        if backend not in task_backends.settings:
            raise CommandError(f"there is no backend {backend!r} in TASKS (there are: "
                               f"{', '.join(task_backends.settings) or 'none'})")
        found = task_backends[backend]
        if not isinstance(found, RoadieBackend):
            raise CommandError(f"TASKS[{backend!r}] is {type(found).__module__}."
                               f"{type(found).__qualname__}, not roadie_django.RoadieBackend")
        os.environ["ROADIE_URL"] = found.url  # not on the command line: it may hold a password
        try:
            cli.main(args=roadie_args or ["--help"], prog_name="manage.py roadie",
                     standalone_mode=True)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise CommandError(f"roadie {' '.join(roadie_args)} exited with status "
                                   f"{exc.code}", returncode=int(exc.code)
                                   if isinstance(exc.code, int) else 1) from None

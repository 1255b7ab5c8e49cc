"""The built-in attachment store: a folder per task under ``<data dir>/attachments``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roadie.hookspecs import hookimpl

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.attachments import LocalAttachmentStore


@hookimpl(trylast=True)
def roadie_attachment_store(app: Roadie) -> LocalAttachmentStore:
    """Keep attachments on the local file system."""
    from roadie.attachments import LocalAttachmentStore  # on first use: most tasks have none

    return LocalAttachmentStore(app.settings.data_dir / "attachments")

"""The built-in attachment store: a folder per task under ``<data dir>/attachments``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roadie.attachments import LocalAttachmentStore
from roadie.hookspecs import hookimpl

if TYPE_CHECKING:
    from roadie.app import Roadie


@hookimpl(trylast=True)
def roadie_attachment_store(app: Roadie) -> LocalAttachmentStore:
    """Keep attachments on the local file system."""
    return LocalAttachmentStore(app.settings.data_dir / "attachments")

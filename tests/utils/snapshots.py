"""State built once per module, put back unchanged before each test."""

import shutil
from pathlib import Path

from tests.conftest import clear_cached_settings


class FolderSnapshot:
    """A copy of an embedded-defaults folder (its SQLite database and artefacts).

    Restored in place, so the absolute paths the database holds stay true: each test of a
    module starts from the state built once (trained versions, say), whatever the test
    before it moved, deleted or corrupted.
    """

    def __init__(self, folder: Path):
        clear_cached_settings()  # no engine of the folder's database is reused after this
        self.folder = folder
        self.copy = folder.with_name(f"{folder.name}-snapshot")
        shutil.copytree(folder, self.copy)

    def restore(self):
        """The folder as it was when taken; the settings, read afresh."""
        from app.config import get_settings

        clear_cached_settings()
        shutil.rmtree(self.folder)
        shutil.copytree(self.copy, self.folder)
        return get_settings()

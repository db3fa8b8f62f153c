"""What ``--overwrite`` / ``--force`` may delete: only a folder that an earlier run of the same command wrote.

A command that replaces its output folder deletes it first. Given ``--out .``, the project's folder or a parent of
the database, that deleted the project and its store. So a folder is replaced only where it holds the file the
command leaves there (an export's manifest, a model's card), and never where it is or holds the current directory,
the database file or the project file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import UserError
from pipeline.project import PROJECT_FILE, find_project_file


def sqlite_file(engine: object) -> Path | None:
    """The database file behind an engine (or a session factory bound to one); None for a server or in memory."""
    engine = getattr(engine, "kw", {}).get("bind", engine)  # a sessionmaker keeps its engine in kw["bind"]
    url = getattr(engine, "url", None)
    if url is None or url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_current(folder: Path, *, flag: str) -> None:
    """Refuse to delete the current directory or a folder above it."""
    target = folder.resolve()
    if _inside(Path.cwd().resolve(), target):
        raise UserError(f"{folder} is the current directory or holds it: {flag} would delete it (and whatever project "
                        "is in it); give the output a folder of its own")


def check_replaceable(folder: Path, *, marker: str, what: str, flag: str = "--overwrite",
                      protected: Iterable[Path | None] = ()) -> None:
    """Raise UserError unless deleting ``folder`` (to write it again) is safe: an empty folder, or one holding
    ``marker`` (an earlier ``what``); never the current directory or a folder above it, and never one that holds
    the current project's file, a project file or any of ``protected`` (the database file)."""
    if not folder.exists():
        return
    check_not_current(folder, flag=flag)
    target = folder.resolve()
    project = find_project_file(Path.cwd())
    for path in (*protected, project, target / PROJECT_FILE):
        if path is not None and path.exists() and _inside(path.resolve(), target):
            raise UserError(f"{folder} holds {path}: {flag} would delete it; give the output a folder of its own")
    if any(target.iterdir()) and not (target / marker).is_file():
        raise UserError(f"{folder} is not empty and holds no {marker}, so it is not {what}: {flag} only replaces "
                        f"{what}; give a new or empty folder")

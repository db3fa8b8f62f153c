"""The project file ``rlhf.toml``: one typed section per stage; CLI flags override it.

Where the database is, in order: the ``--db`` flag, the ``RLHF_DB_URL`` environment variable, ``[db] url`` of the
project file (found in the current directory or a parent, or given by ``--project`` / ``RLHF_PROJECT``), and last
``./rlhf.db``. A relative SQLite path in the project file is relative to the project file's directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from db.engine import DEFAULT_SQLITE_FILE, sqlite_url
from pipeline.errors import UserError

PROJECT_FILE = "rlhf.toml"
DB_URL_ENV = "RLHF_DB_URL"
PROJECT_ENV = "RLHF_PROJECT"


def opt(default: Any, help: str) -> Any:
    """A config field with its help text (shown in the generated project file and in ``--help``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class DbSection:
    url: str = opt(
        f"sqlite:///{DEFAULT_SQLITE_FILE}",
        "SQLAlchemy URL: sqlite:///rlhf.db (relative to this file) or postgresql+psycopg://user:pw@host:5432/db",
    )


@dataclass
class ImportSection:
    test_fraction: float = opt(
        0.1, "share of newly imported prompts placed in the test split (chosen by content hash, so stable)"
    )


@dataclass
class ComparisonsSection:
    k: int = opt(2, "responses per comparison")
    overlap: int = opt(3, "distinct human annotators wanted per comparison")
    strategy: str = opt("all-pairs", "all-pairs (every K-subset of a prompt's responses) or random")
    per_prompt: int = opt(1, "with strategy random: comparisons drawn per prompt")


@dataclass
class LabelingSection:
    host: str = opt("127.0.0.1", "address `rlhf label serve` listens on (0.0.0.0 to serve a team)")
    port: int = opt(7860, "port of the labelling app")
    guidelines: str = opt("", "labelling guidelines: a Markdown file (relative to this file) or Markdown text")
    lease_minutes: float = opt(30.0, "minutes an item stays reserved for the annotator it was handed to")
    session_hours: float = opt(12.0, "hours a browser login lasts")
    idle_seconds: int = opt(60, "seconds without keyboard or mouse after which time stops counting as active")
    secure_cookies: bool = opt(False, "send the login cookie over HTTPS only (set when served behind TLS)")
    trusted_proxies: str = opt(
        "", "addresses of the reverse proxies in front of the app whose X-Forwarded-For header is believed "
        "(comma-separated, e.g. \"127.0.0.1\"); empty: none (clients are counted by their own address)",
    )
    require_strength: bool = opt(
        False, "pairs (K = 2): a preference is saved only with its strength (much better, better, slightly better); "
        "false: the strength is optional (unknown when not given)",
    )


SECTIONS: dict[str, type] = {
    "db": DbSection,
    "import": ImportSection,
    "comparisons": ComparisonsSection,
    "labeling": LabelingSection,
}

# Sections of the stages' own settings: kept as written here and checked by the command that uses them against its
# config class (TRL's configs, hundreds of fields: loading TRL for every command would be slow).
# ``[generate]``: the sampling of ``rlhf generate``; ``[rm]``, ``[sft]``, ``[dpo]``, ``[ppo]``, ``[grpo]``,
# ``[rloo]``: any field of that command's training config, as with ``--set``. Command-line options and ``--set`` override them.
STAGE_SECTIONS = ("generate", "rm", "sft", "dpo", "ppo", "grpo", "rloo")


@dataclass
class Project:
    root: Path
    file: Path | None
    name: str = "rlhf-project"
    db: DbSection = field(default_factory=DbSection)
    import_: ImportSection = field(default_factory=ImportSection)
    comparisons: ComparisonsSection = field(default_factory=ComparisonsSection)
    labeling: LabelingSection = field(default_factory=LabelingSection)
    # API keys by name (e.g. OPENAI_API_KEY = "sk-..."), for judges whose key is not in the environment.
    # Keep a project file with secrets out of version control; the environment wins over it.
    secrets: dict[str, str] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # STAGE_SECTIONS as written

    def section(self, name: str) -> Any:
        return getattr(self, "import_" if name == "import" else name)

    def where(self, section: str) -> str:
        """How errors name a section: ``/path/rlhf.toml [rm]``."""
        return f"{self.file or PROJECT_FILE} [{section}]"


def _section(file: Path, name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"{file}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{file}: unknown key {key!r} in [{name}] (known: {', '.join(known)})")
        expected = type(getattr(cls(), key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) is not (expected is bool):
            raise UserError(f"{file}: [{name}] {key} must be a {expected.__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load_project(file: Path) -> Project:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{file}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot be read: {exc}") from None
    project = Project(root=file.parent.resolve(), file=file.resolve())
    for key, value in data.items():
        if key == "name":
            if not isinstance(value, str):
                raise UserError(f"{file}: name must be a string")
            project.name = value
        elif key == "secrets":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise UserError(f"{file}: [secrets] must map names to strings")
            project.secrets = dict(value)
        elif key in SECTIONS:
            setattr(project, "import_" if key == "import" else key, _section(file, key, SECTIONS[key], value))
        elif key in STAGE_SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"{file}: [{key}] must be a table")
            project.stages[key] = dict(value)
        else:
            raise UserError(f"{file}: unknown section or key {key!r} (known: name, secrets, "
                            f"{', '.join((*SECTIONS, *STAGE_SECTIONS))})")
    return project


def find_project_file(start: Path) -> Path | None:
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def discover_project(explicit: Path | None = None, cwd: Path | None = None) -> Project:
    """The project named by ``--project``/``RLHF_PROJECT``, else the nearest ``rlhf.toml``, else defaults."""
    explicit = explicit or (Path(os.environ[PROJECT_ENV]) if os.environ.get(PROJECT_ENV) else None)
    if explicit is not None:
        file = explicit / PROJECT_FILE if explicit.is_dir() else explicit
        if not file.is_file():
            raise UserError(f"{file}: no such project file")
        return load_project(file)
    cwd = cwd or Path.cwd()
    file = find_project_file(cwd)
    return load_project(file) if file else Project(root=cwd.resolve(), file=None)


def resolve_db_url(project: Project, flag: str | None = None) -> str:
    """The database URL by precedence: flag, environment, project file, ./rlhf.db."""
    if flag:
        return flag
    if os.environ.get(DB_URL_ENV):
        return os.environ[DB_URL_ENV]
    url = make_url(project.db.url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        return sqlite_url(project.root / url.database)
    return project.db.url


def project_file_text(name: str, db_url: str) -> str:
    """A commented ``rlhf.toml`` with every section at its defaults."""
    lines = [
        "# rlhf-pipeline project file: one section per stage; command-line flags override these values.",
        f"name = {_toml_str(name)}",
        "",
    ]
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        defaults = cls()
        for f in fields(cls):
            lines.append(f"# {f.metadata['help']}")
            value = db_url if (section, f.name) == ("db", "url") else getattr(defaults, f.name)
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    lines += [
        "# The stages' own settings (command-line options and --set override them):",
        "# [generate] the sampling of `rlhf generate`: n, temperature, top_p, max_new_tokens, seed, backend, base_url;",
        "# [rm], [sft], [dpo], [ppo], [grpo], [rloo]: any field of that command's training config, TRL's included, e.g.",
        "# [rm]",
        "# learning_rate = 5e-5",
        "# [dpo]",
        "# beta = 0.05",
        '# loss_type = ["sigmoid", "sft"]',
        "",
    ]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _toml_str(value) if isinstance(value, str) else str(value)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

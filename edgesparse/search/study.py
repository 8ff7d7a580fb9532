"""Where a search keeps its trials: an Optuna study in SQLite (one machine, no server) or
PostgreSQL (several machines share one study).

- A storage URL's password is never printed or written: `redact(url)` is what errors and reports
  show.
- The study remembers what it searches (the space's fingerprint, the objectives, the
  constraints); opening it again with another model or space is refused with both named, so two
  searches never mix. Opening it again with the same ones resumes it (`load_if_exists`).
- SQLite is for one coordinator: many writers on one file lock it (DESIGN trap 15).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from edgesparse.errors import UserError

OBJECTIVES = ("accuracy", "latency_ms", "bytes")
DIRECTIONS = ("maximize", "minimize", "minimize")


# `password=...` anywhere: libpq takes it in a URL's query (?password=) and in a keyword string
# ("host=db password=..."), so it is hidden wherever it stands, not only in USER:PASSWORD@.
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)=('[^']*'|[^&\s]*)")
# What a libpq keyword/value string looks like, so it is not taken for a SQLite file name.
_LIBPQ_KEYWORDS = re.compile(r"(?i)(^|\s)(host|hostaddr|port|dbname|user|password|sslmode)=")


def redact(url: str) -> str:
    """The URL with any password replaced by ***, in the form the user wrote (postgresql://, not
    the driver-qualified form handed to SQLAlchemy)."""
    url = _PASSWORD_PARAM.sub(r"\1=***", url.replace("postgresql+psycopg2://", "postgresql://", 1))
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable storage URL>"
    if parts.password is None:
        return url
    # Everything between the user's colon and the last @ is the password: an unescaped @ in it
    # must not leave its tail visible.
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


POSTGRES_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DB"


def storage_url(storage: str | None, out: Path, *, existing: bool = False) -> str:
    """An SQLAlchemy URL for Optuna. Default: a SQLite file in the output folder's parent
    (the output folder itself is written atomically at the end).

    `existing`: the storage must already hold a study (`tune worker` joins one); a SQLite file
    that is not there is refused rather than created empty and left behind.
    """
    if storage is None:
        return f"sqlite:///{(out.parent / (out.name + '.study.db')).resolve()}"
    if storage.startswith("postgresql://") or storage.startswith("postgres://"):
        _check_postgres_url(storage)
        return "postgresql+psycopg2://" + storage.split("://", 1)[1]
    if re.match(r"^postgresql\+\w+://", storage):
        _check_postgres_url(storage)
        return storage
    if storage.startswith("sqlite:///"):
        _check_sqlite_file(Path(storage[len("sqlite:///"):]), existing)
        return storage
    if "://" not in storage:
        if _LIBPQ_KEYWORDS.search(storage):
            raise UserError(f"storage {redact(storage)!r} is a libpq keyword string; give it as a "
                            f"URL: {POSTGRES_FORM}")
        path = Path(storage).expanduser()        # a plain file path: SQLite
        _check_sqlite_file(path, existing)
        return f"sqlite:///{path.resolve()}"
    raise UserError(f"storage {redact(storage)}: unsupported scheme; give a SQLite file path, "
                    f"sqlite:///FILE or {POSTGRES_FORM}")


def _check_postgres_url(storage: str) -> None:
    # SQLAlchemy splits USER:PASSWORD@HOST at the first @, libpq at the last: a raw @ in the
    # password sends the driver to a host made of the password's tail, and echoes it.
    netloc = storage.split("://", 1)[1].split("/", 1)[0]
    if netloc.count("@") > 1:
        raise UserError(f"storage {redact(storage)}: the user or password holds an @; write it "
                        "as %40 (URL-encode the password)")


def _check_sqlite_file(path: Path, existing: bool) -> None:
    if path.is_dir():
        raise UserError(f"storage {path} is a folder; give a SQLite file inside it, e.g. "
                        f"{path / 'study.db'}")
    if existing and not path.exists():
        raise UserError(f"storage {path} does not exist; a worker joins a study that "
                        "`edgesparse tune MODEL --storage FILE --study NAME` started")
    if not path.parent.is_dir():
        raise UserError(f"storage {path}: the folder {path.parent} does not exist; create it or "
                        "give a SQLite file in an existing folder")


def open_storage(url: str):
    """An Optuna RDB storage, or one clear line saying why it cannot be reached."""
    optuna = import_optuna()
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:   # sqlalchemy/psycopg2 errors carry the URL: never echo them raw
        reason = _first_line(exc, url)
        advice = ("check that it is a study file `edgesparse tune` wrote, or give a new file name"
                  if url.startswith("sqlite") else "check the URL, that the server runs and accepts this user")
        raise UserError(f"cannot open the study storage {redact(url)}: {reason}; {advice}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"connect_args": {"timeout": 60}}      # SQLite: wait for the file lock, do not fail


def _first_line(exc: Exception, url: str) -> str:
    text = _PASSWORD_PARAM.sub(r"\1=***", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    parts = urlsplit(url)
    passwords = [parts.password] + [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    # Only where the password stands as its own token: replaced inside words, a short password
    # ("p") turned "psycopg2.OperationalError" into "***syco***g2.O***erationalError".
    for secret in {s for p in passwords if p for s in (p, unquote(p))}:
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text[:200]


def import_optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise UserError("edgesparse tune needs Optuna: pip install \"edgesparse[search]\"") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(storage_url_: str, name: str, identity: dict[str, Any], sampler=None):
    """Create or resume the study `name`; refuse one that searches something else.

    `identity` is what must match for two runs to share a study: the space fingerprint, the
    target, the constraints and the objectives. It is stored in the study's user attributes.
    """
    optuna = import_optuna()
    storage = open_storage(storage_url_)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS),
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:   # an existing study with other directions
        raise UserError(f"study {name!r} in {redact(storage_url_)} exists with other objectives "
                        f"({exc}); choose another --study") from None
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity:
        differ = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        raise UserError(f"study {name!r} in {redact(storage_url_)} was started for another search "
                        f"(differs in: {', '.join(differ)}); use the same model, target, data and "
                        "constraints to resume it, or choose another --study")
    return study

"""Ratings in one SQLite file (stdlib sqlite3, WAL mode): one row per rating, each committed on its own.

Many raters can write at once, from separate kernels or processes on one machine: WAL lets readers run beside
the one writer, every insert is its own ``BEGIN IMMEDIATE`` transaction (waiting up to ``timeout`` seconds for
the write lock), and ``synchronous=FULL`` makes a committed rating survive a killed process or a power cut.
A rating is either wholly in the file or not at all. ``UNIQUE(test, rater, kind, trial)`` refuses duplicates.
A new file is built aside and appears, already in WAL mode, with one atomic link, so raters may start at once.

The schema is versioned (``meta.schema_version``) and checked whenever a file is opened.
SQLite's locking needs a local disk: keep the file off network shares (NFS, SMB), where WAL does not work.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pwn_lib import __version__

SCHEMA_VERSION = 1
APP_VERSION = f"pwn_lib {__version__}"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    id          INTEGER PRIMARY KEY,
    test        TEXT    NOT NULL,
    rater       TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('mos', 'ab')),
    trial       INTEGER NOT NULL CHECK (trial >= 0),
    n_trials    INTEGER NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('test', 'gold', 'trap')),
    system      TEXT    NOT NULL,
    system_b    TEXT,
    utterance   TEXT    NOT NULL,
    score       INTEGER CHECK (score BETWEEN 1 AND 5),
    choice      TEXT    CHECK (choice IN ('A', 'B', 'none')),
    expected    INTEGER,
    plays       INTEGER NOT NULL,
    ended       INTEGER NOT NULL,
    plays_b     INTEGER,
    ended_b     INTEGER,
    response_ms REAL,
    listening   TEXT,
    rated_at    TEXT    NOT NULL,
    app_version TEXT    NOT NULL,
    UNIQUE (test, rater, kind, trial),
    CHECK ((kind = 'mos' AND score IS NOT NULL AND choice IS NULL)
        OR (kind = 'ab' AND choice IS NOT NULL AND score IS NULL AND system_b IS NOT NULL))
);
"""


class StoreError(RuntimeError):
    """A ratings file that cannot be used, or a rating it refused; the message says which file and what to do."""


class SchemaVersionError(StoreError):
    """The file was written with another schema version."""


class BadRatingsWarning(UserWarning):
    """Rows of a ratings file that break the rules were left out; the message names them."""


class DuplicateRatingError(StoreError):
    """This rater has already rated this trial."""


@dataclass
class Rating:
    """One row of ``ratings``. ``score`` (1-5) for MOS trials; ``choice`` ("A", "B" or "none") for A/B trials.

    ``plays``/``ended``: how often the (A) clip's audio element fired ``play`` and ``ended``; ``plays_b``/``ended_b``
    the same for B. ``response_ms``: from the end of the first complete playback to the answer.
    """

    test: str
    rater: str
    kind: str
    trial: int
    n_trials: int
    role: str
    system: str
    utterance: str
    plays: int
    ended: int
    score: int | None = None
    choice: str | None = None
    system_b: str | None = None
    expected: int | None = None
    plays_b: int | None = None
    ended_b: int | None = None
    response_ms: float | None = None
    listening: str | None = None
    rated_at: str = ""
    app_version: str = APP_VERSION


COLUMNS = ["id"] + [f.name for f in dataclasses.fields(Rating)]


def utc_now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RatingStore:
    """One ratings file. ``RatingStore(path)`` creates it (schema version :data:`SCHEMA_VERSION`) or opens it;
    ``create=False`` refuses a missing file instead (for reading and exporting).

    Opening first checks, reading only, that the file is a pwn_lib ratings database of this schema version, so
    another application's file is refused untouched. Use one store per process or kernel; :meth:`add` is safe
    while other processes write the same file.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0, create: bool = True):
        self.path = Path(path)
        started = time.monotonic()
        if not self.path.is_file() and not create:
            raise StoreError(
                f"{self.path}: no such ratings database; check the path (a rating page or "
                "`python -m pwn_lib.listening simulate` creates one)"
            )
        try:
            if not self.path.exists():
                _create(self.path)
            uri = f"{self.path.resolve().as_uri()}?mode=rw"  # opens an existing file, never creates one
            self._conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: cannot create or open the ratings database ({err})") from None
        try:
            self._check_schema()
            _use_wal(self._conn, self.path)
        except sqlite3.OperationalError as err:
            self._conn.close()
            if "locked" not in str(err):
                raise StoreError(f"{self.path}: cannot open the ratings database ({err})") from None
            raise StoreError(
                f"{self.path}: still locked by another writer after {time.monotonic() - started:.1f} s ({err}); "
                "retry, or pass a longer timeout"
            ) from None
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(
                f"{self.path}: not a SQLite ratings database ({err}); pass another path, or move "
                "this file away and start a new database"
            ) from None
        except StoreError:
            self._conn.close()
            raise

    def _check_schema(self) -> None:
        """Refuse a file that is not a ratings database of :data:`SCHEMA_VERSION`, reading only."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            raise StoreError(
                f"{self.path}: an empty file or SQLite database, not a pwn_lib ratings database; delete it, "
                "or pass a new path for the ratings"
            )
        if "meta" not in tables:
            raise StoreError(
                f"{self.path}: a SQLite file but not a pwn_lib ratings database (tables "
                f"{sorted(tables)}); pass a new path for the ratings"
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = None if row is None else int(row[0])
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path}: ratings schema version {found}, but this pwn_lib ({APP_VERSION}) reads and "
                f"writes version {SCHEMA_VERSION}; export it to CSV with the pwn_lib version that wrote it, "
                "or start a new database file"
            )

    # -- writing ----------------------------------------------------------------------
    def add(self, rating: Rating) -> int:
        """Commit one rating atomically; return its row id. Raises :class:`DuplicateRatingError` on a repeat,
        :class:`StoreError` for a rating outside the rules of :func:`invalid_ratings` (nothing is written)."""
        row = dataclasses.asdict(rating)
        row["rated_at"] = row["rated_at"] or utc_now()
        problems = _type_problems(row) or invalid_ratings(pd.DataFrame([row]))["problem"].tolist()
        if problems:
            raise StoreError(
                f"{self.path}: refused the rating of rater {rating.rater}, {rating.kind} trial {rating.trial} of test "
                f"{rating.test!r}: {'; '.join(problems)}; nothing was written, fix the value and submit it again"
            )
        names = list(row)
        sql = f"INSERT INTO ratings ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            cursor = self._conn.execute(sql, [row[n] for n in names])
            self._conn.execute("COMMIT")
        except sqlite3.IntegrityError as err:
            self._conn.execute("ROLLBACK")
            if "UNIQUE" in str(err):
                raise DuplicateRatingError(
                    f"{self.path}: rater {rating.rater} already rated {rating.kind} trial {rating.trial} of test "
                    f"{rating.test!r}; each trial is rated once (resume continues at the first unrated trial)"
                ) from None
            raise StoreError(f"{self.path}: refused rating {row} ({err})") from None
        except sqlite3.OperationalError as err:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: rating not saved ({err}); nothing was written, submit it again") from None
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return int(cursor.lastrowid)

    # -- reading ----------------------------------------------------------------------
    def rated_trials(self, test: str, rater: str, kind: str) -> set[int]:
        """Trial indices this rater has already rated (what resuming skips)."""
        rows = self._conn.execute(
            "SELECT trial FROM ratings WHERE test = ? AND rater = ? AND kind = ?", (test, rater, kind)
        )
        return {int(r[0]) for r in rows}

    def count(self, test: str | None = None) -> int:
        if test is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM ratings WHERE test = ?", (test,)).fetchone()[0])

    def ratings(self, test: str | None = None) -> pd.DataFrame:
        """Every rating (of ``test``, if given) as a DataFrame with the :data:`COLUMNS`, in commit order.

        A row outside the rules (written by another program or an older pwn_lib) is left out with a
        :class:`BadRatingsWarning` that names its id and what is wrong with it."""
        where, args = ("WHERE test = ?", (test,)) if test is not None else ("", ())
        frame = pd.read_sql_query(
            f"SELECT {', '.join(COLUMNS)} FROM ratings {where} ORDER BY id", self._conn, params=args
        )
        return _valid(frame, self.path)

    def to_csv(self, path: str | os.PathLike, test: str | None = None) -> Path:
        """Write :meth:`ratings` to ``path`` as CSV (atomically, through a temporary sibling)."""
        return write_csv(self.ratings(test), path)

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check``: "ok" for a sound file."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RatingStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    """WAL mode (a no-op on a file already in WAL mode) and ``synchronous=FULL`` for ``conn``."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(
            f"{path}: SQLite could not switch to WAL mode (got {mode!r}); keep the database "
            "on a local disk, not a network share"
        )
    conn.execute("PRAGMA synchronous = FULL")


def _fsync_dir(folder: Path) -> None:
    """Make a new name in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path) -> None:
    """A new, empty ratings database at ``path``, built privately and then published atomically.

    The file is built under a temporary sibling name, switched to WAL there (the mode is stored in the file) and
    hard-linked into place, which fails if another process published first; the loser keeps the winner's file.
    So no process ever sees ``path`` before it is a WAL ratings database: two processes switching one new file
    to WAL at once would both upgrade a read lock to a write lock, and SQLite answers that deadlock with an
    immediate "database is locked", without waiting for the busy timeout.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.new-", dir=path.parent)
    os.close(fd)  # SQLite builds a database in the empty file
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            _use_wal(conn, path)
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            meta = [("schema_version", str(SCHEMA_VERSION)), ("created_by", APP_VERSION), ("created_at", utc_now())]
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection: SQLite checkpoints the WAL into the file and removes it
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: everyone uses that one
        _fsync_dir(path.parent)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


_WHOLE = ["trial", "n_trials", "score", "expected", "plays", "ended", "plays_b", "ended_b"]
_NUMBERS = [*_WHOLE, "response_ms"]


def _type_problems(row: dict) -> list[str]:
    """The numeric fields of a new rating that are not Python/NumPy integers (or numbers, for response_ms)."""
    problems = []
    for name in _NUMBERS:
        value = row[name]
        kinds = (int, np.integer) if name in _WHOLE else (int, float, np.integer, np.floating)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            problems.append(f"{name}={value!r} is not {'an integer' if name in _WHOLE else 'a number'}")
        elif value is not None and not np.isfinite(value):  # NaN would be stored as NULL
            problems.append(f"{name}={value!r} is not finite")
    return problems


def invalid_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ratings ``frame`` that break the rules, with a column ``problem`` saying how.

    The rules: ``kind`` mos or ab, ``role`` test, gold or trap; ``0 <= trial < n_trials``; a MOS row has an integer
    ``score`` 1-5 and no choice, an A/B row a ``choice`` A, B or none, no score and a ``system_b``; the play counters
    ``plays``, ``ended`` (and ``plays_b``, ``ended_b`` where given) are integers >= 0, and ``ended`` (``ended_b``)
    >= 1 and <= ``plays`` (``plays_b``): a rating is of a clip heard to its end; ``rated_at`` is an ISO 8601 time;
    ``response_ms`` is finite and >= 0 where given; ``test`` and
    ``rater`` are not empty.
    """
    problems = [[] for _ in range(len(frame))]

    def flag(mask, text: str) -> None:
        for i in np.flatnonzero(np.asarray(mask, dtype=bool)):
            values = {k: frame[k].iloc[i] for k in COLUMNS if k in frame}
            problems[i].append(
                text.format(**{k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()})
            )

    num = {}
    for name in _NUMBERS:
        num[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        flag(frame[name].notna() & num[name].isna(), name + "={" + name + "!r} is not a number")
        present = num[name].notna()
        flag(present & ~np.isfinite(num[name]), name + "={" + name + "!r} is not finite")
        if name in _WHOLE:
            whole = present & np.isfinite(num[name]) & (num[name] != np.round(num[name]))
            flag(whole, name + "={" + name + "!r} is not a whole number")
    mos, ab = frame["kind"] == "mos", frame["kind"] == "ab"
    flag(~(mos | ab), "kind={kind!r} is neither 'mos' nor 'ab'")
    flag(~frame["role"].isin(["test", "gold", "trap"]), "role={role!r} is not test, gold or trap")
    flag(~(num["n_trials"] >= 1), "n_trials={n_trials!r} is not >= 1")
    flag(~((num["trial"] >= 0) & (num["trial"] < num["n_trials"])), "trial={trial!r} is outside 0..n_trials-1")
    flag(mos & ~num["score"].between(1, 5), "score={score!r} is not 1-5")
    flag(mos & frame["choice"].notna(), "a MOS row has choice={choice!r}")
    flag(ab & ~frame["choice"].isin(["A", "B", "none"]), "choice={choice!r} is not A, B or none")
    flag(ab & frame["score"].notna(), "an A/B row has score={score!r}")
    flag(ab & frame["system_b"].isna(), "an A/B row has no system_b")
    for name in ("plays", "ended"):
        flag(~(num[name] >= 0), name + "={" + name + "!r} is not >= 0")
    # a rating is of a clip heard to its end: both clips of an A/B pair
    flag((num["ended"] == 0) | (ab & (num["ended_b"] == 0)), "the clip was never played to its end (ended=0)")
    # an audio element fires `ended` at most once per `play`
    flag((num["plays"] >= 0) & (num["ended"] > num["plays"]), "ended={ended!r} is more than plays={plays!r}")
    flag(
        (num["plays_b"] >= 0) & (num["ended_b"] > num["plays_b"]),
        "ended_b={ended_b!r} is more than plays_b={plays_b!r}",
    )
    stamped = pd.to_datetime(frame["rated_at"], errors="coerce", utc=True, format="ISO8601")
    flag(frame["rated_at"].notna() & stamped.isna(), "rated_at={rated_at!r} is not an ISO 8601 time")
    for name in ("test", "rater"):
        flag(frame[name].isna() | (frame[name].astype(str).str.strip() == ""), f"{name} is empty")
    for name in ("plays_b", "ended_b", "response_ms"):
        flag(num[name] < 0, name + "={" + name + "!r} is not >= 0")
    bad = frame[[bool(p) for p in problems]].copy()
    bad["problem"] = ["; ".join(p) for p in problems if p]
    return bad


def _valid(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """``frame`` without the rows :func:`invalid_ratings` finds (each reported in a warning), with stable dtypes."""
    bad = invalid_ratings(frame)
    if len(bad):
        shown = "; ".join(f"id {row['id']}: {row['problem']}" for _, row in bad.head(5).iterrows())
        warnings.warn(
            f"{source}: left out {len(bad)} invalid rating row(s) of {len(frame)} ({shown}"
            f"{'; ...' if len(bad) > 5 else ''}); fix or delete them (e.g. DELETE FROM ratings WHERE id IN "
            f"({', '.join(str(i) for i in bad['id'].head(20))}))",
            BadRatingsWarning,
            stacklevel=3,
        )
        frame = frame.drop(index=bad.index).reset_index(drop=True)
    return _typed(frame)


_INT_COLUMNS = ["trial", "n_trials", "plays", "ended"]
_NULLABLE_INT = ["id", "score", "expected", "plays_b", "ended_b"]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes whether the rows came from SQLite or CSV (nullable integers where a column may be empty)."""
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]).astype("int64")
    for column in _NULLABLE_INT:
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    frame["response_ms"] = pd.to_numeric(frame["response_ms"]).astype("float64")
    return frame


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``frame`` as CSV at ``path``, written through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_ratings(path: str | os.PathLike, test: str | None = None) -> pd.DataFrame:
    """Ratings from a ``.csv`` export or a SQLite ratings file, as the DataFrame :meth:`RatingStore.ratings` gives."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such ratings file; pass a .csv export or a ratings database")
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        missing = sorted(set(COLUMNS) - set(frame.columns))
        if missing:
            raise StoreError(f"{path}: missing column(s) {missing}; export ratings with RatingStore.to_csv")
        frame = _valid(frame[COLUMNS].copy(), path)
        return frame if test is None else frame[frame["test"] == test].reset_index(drop=True)
    with RatingStore(path, create=False) as store:
        return store.ratings(test)


__all__ = [
    "APP_VERSION",
    "BadRatingsWarning",
    "COLUMNS",
    "DuplicateRatingError",
    "Rating",
    "RatingStore",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "StoreError",
    "invalid_ratings",
    "read_ratings",
    "utc_now",
    "write_csv",
]

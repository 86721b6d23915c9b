"""The SQLite rating store: schema check, duplicates, export, 8 concurrent writers, and a SIGKILL mid-session."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from pwn_lib.listening.store import (
    SCHEMA_VERSION,
    DuplicateRatingError,
    Rating,
    RatingStore,
    SchemaVersionError,
    StoreError,
    read_ratings,
)

FORK = multiprocessing.get_context("fork")  # children inherit the imported modules: no 2-s torch import each
WRITERS, PER_WRITER = 8, 100


def rating(rater: str = "r1", trial: int = 0, score: int = 4, **fields) -> Rating:
    base = dict(
        test="t",
        rater=rater,
        kind="mos",
        trial=trial,
        n_trials=PER_WRITER,
        role="test",
        system="s",
        utterance="u",
        plays=1,
        ended=1,
        score=score,
        response_ms=12.5,
        listening="headphones",
    )
    return Rating(**{**base, **fields})


def test_new_store_is_wal_with_schema_version(tmp_path):
    with RatingStore(tmp_path / "r.sqlite") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row_id = store.add(rating())
        frame = store.ratings()
    assert row_id == 1 and len(frame) == 1
    row = frame.iloc[0]
    got = (row["rater"], row["trial"], row["score"], row["plays"], row["app_version"])
    assert got == ("r1", 0, 4, 1, "pwn_lib 0.1.0")
    assert row["rated_at"].endswith("+00:00")


def test_duplicate_rating_is_refused_and_nothing_else_changes(tmp_path):
    with RatingStore(tmp_path / "r.sqlite") as store:
        store.add(rating(trial=3))
        with pytest.raises(DuplicateRatingError, match="already rated mos trial 3"):
            store.add(rating(trial=3, score=1))
        assert store.count() == 1 and store.ratings()["score"].tolist() == [4]
        assert store.rated_trials("t", "r1", "mos") == {3}


def test_invalid_rating_is_refused_by_the_schema(tmp_path):
    with RatingStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(StoreError, match="refused"):
            store.add(rating(score=7))
        with pytest.raises(StoreError, match="refused"):
            store.add(rating(kind="ab", score=None, choice="A"))  # an A/B row needs system_b
        assert store.count() == 0


def test_other_schema_version_is_refused_on_open(tmp_path):
    path = tmp_path / "r.sqlite"
    RatingStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match=r"schema version 999.*version 1; export it"):
        RatingStore(path)


def test_not_a_ratings_database_is_refused(tmp_path):
    garbage = tmp_path / "notes.sqlite"
    garbage.write_text("these are not ratings\n" * 100)
    with pytest.raises(StoreError, match="notes.sqlite: not a SQLite ratings database"):
        RatingStore(garbage)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match=r"not a pwn_lib ratings database \(tables \['people'\]\)"):
        RatingStore(other)


def test_csv_export_round_trips(tmp_path):
    with RatingStore(tmp_path / "r.sqlite") as store:
        store.add(rating(trial=0))
        store.add(rating(trial=1, kind="ab", score=None, choice="none", system_b="s2", plays_b=2, ended_b=1))
        frame = store.ratings()
        store.to_csv(tmp_path / "r.csv")
    back = read_ratings(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(frame.fillna(pd.NA).astype(str), back.fillna(pd.NA).astype(str))
    assert back["choice"].tolist()[1] == "none"  # not read as a missing value
    assert read_ratings(tmp_path / "r.sqlite")["plays_b"].tolist()[1] == 2


def _writer(path, index: int, start) -> None:
    start.wait()
    with RatingStore(path) as store:
        for trial in range(PER_WRITER):
            store.add(rating(rater=f"w{index}", trial=trial, score=(index + trial) % 5 + 1))


def test_eight_processes_write_800_ratings_none_lost_or_duplicated(tmp_path):
    path = tmp_path / "class.sqlite"
    start = FORK.Event()
    workers = [FORK.Process(target=_writer, args=(path, i, start)) for i in range(WRITERS)]
    for w in workers:
        w.start()
    start.set()  # every writer opens the new file and writes at once
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * WRITERS
    with RatingStore(path) as store:
        frame = store.ratings()
        assert store.integrity_check() == "ok"
    assert len(frame) == WRITERS * PER_WRITER == 800
    assert not frame.duplicated(["rater", "trial"]).any()
    for i in range(WRITERS):
        mine = frame[frame["rater"] == f"w{i}"].sort_values("trial")
        assert mine["trial"].tolist() == list(range(PER_WRITER))
        assert mine["score"].tolist() == [(i + t) % 5 + 1 for t in range(PER_WRITER)]


def test_a_new_file_appears_complete_and_in_wal_mode_and_a_lost_creation_race_uses_the_winner(tmp_path, monkeypatch):
    # Two openers switching one new file to WAL at once deadlock (SQLite answers "database is locked" at once,
    # without waiting); so a new file is built aside and appears only once it is a WAL ratings database.
    path = tmp_path / "class.sqlite"
    real_link = os.link
    seen = {}

    def winner_first(src, dst):
        seen["header"] = Path(src).read_bytes()[18:20]  # the file format's read/write versions: 2 = WAL
        monkeypatch.setattr(os, "link", real_link)
        with RatingStore(dst) as winner:  # another rater creates the file between our check and our link
            winner.add(rating(rater="winner"))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", winner_first)
    with RatingStore(path) as loser:
        loser.add(rating(rater="loser"))
        raters = loser.ratings()["rater"].tolist()
    assert seen["header"] == b"\x02\x02"
    assert raters == ["winner", "loser"]  # one file, both ratings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class.sqlite"]  # no temporary file is left


def _rater_until_killed(path, pipe) -> None:
    with RatingStore(path) as store:
        for trial in range(10_000):
            store.add(rating(trial=trial))
            pipe.send(trial)  # reported only after the commit returned


def test_sigkill_mid_session_keeps_every_committed_rating(tmp_path):
    path = tmp_path / "r.sqlite"
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_rater_until_killed, args=(path, send))
    child.start()
    reported = []
    deadline = time.monotonic() + 60
    while len(reported) < 40 and time.monotonic() < deadline:
        reported.append(receive.recv())
    os.kill(child.pid, signal.SIGKILL)  # mid-session: the child is writing its next rating
    child.join(10)
    while receive.poll():
        reported.append(receive.recv())
    assert child.exitcode == -signal.SIGKILL and len(reported) >= 40
    with RatingStore(path) as store:
        assert store.integrity_check() == "ok"
        trials = sorted(store.rated_trials("t", "r1", "mos"))
        assert set(reported) <= set(trials)
        assert trials == list(range(len(trials)))  # a prefix: nothing half-written, nothing skipped
        assert len(trials) - len(reported) <= 1  # at most the one committed just before the kill
        store.add(rating(trial=len(trials)))  # the rater resumes
        assert store.count() == len(trials) + 1

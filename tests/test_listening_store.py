"""The SQLite rating store: schema check, duplicates, export, 8 concurrent writers, and a SIGKILL mid-session."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from pwn_lib.listening.__main__ import main
from pwn_lib.listening.store import (
    SCHEMA_VERSION,
    BadRatingsWarning,
    DuplicateRatingError,
    Rating,
    RatingStore,
    SchemaVersionError,
    StoreError,
    invalid_ratings,
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


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"score": 3.5}, "score=3.5 is not an integer"),
        ({"score": 4.0}, "score=4.0 is not an integer"),
        ({"score": True}, "score=True is not an integer"),
        ({"score": 0}, "score=0 is not 1-5"),
        ({"plays": -5}, "plays=-5 is not >= 0"),
        ({"ended": -1}, "ended=-1 is not >= 0"),
        ({"response_ms": -100.0}, "response_ms=-100.0 is not >= 0"),
        ({"response_ms": float("nan")}, "response_ms=nan is not finite"),
        ({"trial": 500, "n_trials": 33}, "trial=500 is outside 0..n_trials-1"),
        ({"trial": 33, "n_trials": 33}, "trial=33 is outside 0..n_trials-1"),
        ({"n_trials": 0}, "n_trials=0 is not >= 1"),
        ({"role": "bonus"}, "role='bonus' is not test, gold or trap"),
        ({"kind": "ab", "score": None, "choice": "C", "system_b": "s2"}, "choice='C' is not A, B or none"),
        ({"kind": "ab", "choice": "A", "system_b": "s2"}, "an A/B row has score=4"),
        ({"kind": "ab", "score": None, "choice": "A", "system_b": "s2", "plays_b": -2}, "plays_b=-2 is not >= 0"),
        ({"ended": 0}, "the clip was never played to its end (ended=0)"),
        (
            {"kind": "ab", "score": None, "choice": "A", "system_b": "s2", "plays_b": 1, "ended_b": 0},
            "the clip was never played to its end",
        ),
        ({"plays": 1, "ended": 3}, "ended=3 is more than plays=1"),
        (
            {"kind": "ab", "score": None, "choice": "A", "system_b": "s2", "plays_b": 1, "ended_b": 2},
            "ended_b=2 is more than plays_b=1",
        ),
        ({"rated_at": "yesterday"}, "rated_at='yesterday' is not an ISO 8601 time"),
        ({"rater": ""}, "rater is empty"),
        ({"test": "  "}, "test is empty"),
    ],
)
def test_ratings_outside_the_rules_are_refused_naming_the_value(tmp_path, fields, problem):
    with RatingStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(StoreError, match=rf"r.sqlite: refused .*trial .*{re.escape(problem)}.*nothing was written"):
            store.add(rating(**fields))
        assert store.count() == 0
        store.add(rating(trial=32, n_trials=33, plays=1, ended=1, response_ms=0.0))  # the edges are fine


def _legacy_row(conn, **fields) -> None:
    """A row written past the checks (by another program or an older pwn_lib)."""
    row = {**dataclasses.asdict(rating()), "rated_at": "2026-01-01T00:00:00+00:00", **fields}
    conn.execute(f"INSERT INTO ratings ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))


def test_a_bad_legacy_row_is_left_out_and_reported_and_the_rest_still_reads(tmp_path, capsys):
    path = tmp_path / "r.sqlite"
    with RatingStore(path) as store:
        store.add(rating(trial=0, score=2))
        store.add(rating(trial=2, score=5))
    with sqlite3.connect(path) as conn:
        _legacy_row(conn, trial=1, score=3.5)
        _legacy_row(conn, trial=3, plays=-5, response_ms=-100.0)
        _legacy_row(conn, trial=4, plays="often")
    with pytest.warns(BadRatingsWarning) as caught:
        frame = read_ratings(path)
    assert frame["score"].tolist() == [2, 5] and str(frame["score"].dtype) == "Int64"
    message = str(caught[0].message)
    assert "r.sqlite: left out 3 invalid rating row(s) of 5" in message
    assert "id 3: score=3.5 is not a whole number" in message
    assert "id 4: plays=-5 is not >= 0; response_ms=-100.0 is not >= 0" in message
    assert "id 5: plays='often' is not a number" in message and "DELETE FROM ratings WHERE id IN (3, 4, 5)" in message
    assert list(invalid_ratings(pd.read_csv(_export(path, tmp_path)))["id"]) == []  # the export holds the good rows
    frame.to_csv(tmp_path / "bad.csv", index=False)
    text = (tmp_path / "bad.csv").read_text().replace(",2,", ",2.5,", 1)  # the first row's score, now fractional
    (tmp_path / "bad.csv").write_text(text)
    with pytest.warns(BadRatingsWarning, match=r"bad.csv: left out 1 .* score=2.5 is not a whole number"):
        assert read_ratings(tmp_path / "bad.csv")["score"].tolist() == [5]


def _export(db, folder):
    with pytest.warns(BadRatingsWarning):
        assert main(["export", "--db", str(db), "--csv", str(folder / "out.csv")]) == 0
    return folder / "out.csv"


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match=r"other.sqlite: a SQLite file but not a pwn_lib ratings database"):
        RatingStore(other)
    assert other.read_bytes() == before  # still in its own journal mode: not switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(StoreError, match="empty.sqlite: an empty file or SQLite database, not a pwn_lib ratings"):
        RatingStore(empty)
    assert empty.read_bytes() == b""


def test_reading_or_exporting_a_missing_database_is_an_error_and_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "typo.sqlite"
    assert main(["export", "--db", str(typo), "--csv", str(tmp_path / "out.csv")]) == 2
    assert "typo.sqlite: no such ratings database; check the path" in capsys.readouterr().err
    with pytest.raises(StoreError, match="typo.sqlite: no such ratings"):
        read_ratings(typo)
    with pytest.raises(StoreError, match="typo.sqlite: no such ratings database"):
        RatingStore(typo, create=False)
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.slow
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


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["build", "--utterances", "0"], "argument --utterances: 0 is not >= 1"),
        (["build", "--seconds", "-1"], "argument --seconds: -1.0 is not a finite number > 0"),
        (["build", "--seconds", "1e6"], "argument --seconds: 1e+06 s is longer than a listening clip's 30 s"),
        (["build", "--loudness", "nan"], "argument --loudness: nan is not a finite number"),
        (["build", "--threads", "0"], "argument --threads: 0 is not >= 1"),
        (["simulate", "--test", "t", "--db", "r.sqlite", "--raters", "0"], "argument --raters: 0 is not >= 1"),
        (["analyse", "--test", "t", "--ratings", "r.sqlite", "--n-boot", "-1"], "argument --n-boot: -1 is not >= 1"),
    ],
)
def test_the_command_refuses_bad_counts_and_lengths_before_any_work(tmp_path, capsys, argv, complaint):
    if argv[0] == "build":
        argv = [*argv, "--out", str(tmp_path / "test")]
    with pytest.raises(SystemExit):
        main(argv)
    assert complaint in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

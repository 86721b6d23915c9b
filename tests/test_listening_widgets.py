"""Rating pages driven headlessly (setting the players' counters, clicking buttons) produce the expected rows."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from pwn_lib.listening import ABPage, ListeningSession, MOSPage, RatingStore, answer_from_code, rater_id
from pwn_lib.listening.simulate import simulate_class, toy_test


@pytest.fixture()
def setup(tmp_path):
    test = toy_test(tmp_path / "toy")
    store = RatingStore(tmp_path / "ratings.sqlite")
    yield test, store
    store.close()


def test_rating_needs_the_clip_played_to_the_end(setup):
    test, store = setup
    page = MOSPage(test, store, "r1")
    assert page.progress.value == "<b>trial 1 of 12</b>"
    assert all(b.disabled for b in page.answer_buttons.values()) and page.next_button.disabled
    page.answer_buttons[4].click()  # a click before playing does not count
    assert page.answer is None and "Play the whole clip first" in page.message.value
    page.players[0].plays += 1  # the browser's "play" event ...
    assert all(b.disabled for b in page.answer_buttons.values())
    page.players[0].ended += 1  # ... and "ended" event
    assert not any(b.disabled for b in page.answer_buttons.values()) and page.next_button.disabled
    page.answer_buttons[4].click()
    assert page.answer == 4 and not page.next_button.disabled
    first = page.current
    page.next_button.click()
    row = store.ratings().iloc[0]
    assert (row["kind"], row["trial"], row["n_trials"], row["system"], row["utterance"], row["role"]) == (
        "mos",
        0,
        12,
        first.system,
        first.utterance,
        first.role,
    )
    assert (row["score"], row["plays"], row["ended"], row["listening"]) == (4, 1, 1, "headphones")
    assert row["response_ms"] >= 0 and page.progress.value == "<b>trial 2 of 12</b>"
    assert page.players[0].plays == 0 and page.players[0].clip == 2  # next clip loaded, counters reset


def test_a_whole_mos_session_then_resume_after_a_break(setup):
    test, store = setup
    page = MOSPage(test, store, "r1")
    for score in (5, 3, 1):
        answer_from_code(page, score)
    resumed = MOSPage(test, store, "r1")  # a new kernel, the same rater
    assert resumed.progress.value == "<b>trial 4 of 12</b>" and resumed.current.index == 3
    while not resumed.finished:
        answer_from_code(resumed, 3 if resumed.current.role != "trap" else resumed.current.expected, plays=2)
    rows = store.ratings()
    assert rows["trial"].tolist() == list(range(12)) and rows["score"].head(3).tolist() == [5, 3, 1]
    assert Counter(rows["role"]) == {"test": 9, "gold": 2, "trap": 1}
    assert rows["plays"].tolist()[3:] == [2] * 9
    assert "All 12 trials rated" in resumed.progress.value
    with pytest.raises(RuntimeError, match="rated all 12 mos trials"):
        answer_from_code(resumed, 3)


def _from_browser(player, event: str, clip: int) -> None:
    """Deliver a browser event the way the comm does: a custom message to the widget."""
    player._handle_custom_msg({"event": event, "clip": clip}, [])


def test_a_late_event_of_the_previous_clip_does_not_count_for_the_next(setup):
    test, store = setup
    page = ABPage(test, store, "r1")
    a, b = page.players
    first = a.clip
    for player in page.players:
        _from_browser(player, "play", player.clip)
        _from_browser(player, "ended", player.clip)
    assert (a.plays, a.ended, b.plays, b.ended) == (1, 1, 1, 1)
    _from_browser(a, "play", first)  # the rater replays A while answering ...
    page.answer_buttons["A"].click()
    page.next_button.click()
    assert page.current.index == page.trials[1].index and a.clip == first + 1
    _from_browser(a, "ended", first)  # ... and A's "ended" crosses the next trial's reset
    _from_browser(b, "ended", b.clip - 1)
    assert (a.plays, a.ended, b.plays, b.ended) == (0, 0, 0, 0)
    assert all(button.disabled for button in page.answer_buttons.values())
    for player in page.players:  # the new clips' own events do count
        _from_browser(player, "ended", player.clip)
    assert (a.ended, b.ended) == (1, 1) and not any(button.disabled for button in page.answer_buttons.values())
    assert store.ratings()[["plays", "ended", "plays_b", "ended_b"]].values.tolist() == [[2, 1, 1, 1]]


def test_a_player_refuses_an_event_it_does_not_know(setup):
    page = MOSPage(*setup, "r1")
    with pytest.raises(ValueError, match="'pause'"):
        page.players[0].receive("pause", page.players[0].clip)


def test_ab_page_stores_choice_sides_and_both_play_counts(setup):
    test, store = setup
    page = ABPage(test, store, "r2", listening="loudspeakers")
    trial = page.current
    page.players[0].plays, page.players[0].ended = 2, 1
    assert all(b.disabled for b in page.answer_buttons.values())  # B not heard yet
    page.players[1].plays, page.players[1].ended = 1, 1
    page.answer_buttons["B"].click()
    page.next_button.click()
    row = store.ratings().iloc[0]
    assert (row["kind"], row["choice"], row["system"], row["system_b"]) == ("ab", "B", trial.system, trial.system_b)
    assert (row["plays"], row["ended"], row["plays_b"], row["ended_b"]) == (2, 1, 1, 1)
    assert pd.isna(row["score"]) and row["listening"] == "loudspeakers"


def test_two_windows_of_one_rater_do_not_duplicate(setup):
    test, store = setup
    first, second = MOSPage(test, store, "r3"), MOSPage(test, store, "r3")
    answer_from_code(first, 4)
    assert answer_from_code(second, 2) is None  # trial 1 was already rated in the other window
    assert "already rated" in second.message.value
    assert store.ratings()["score"].tolist() == [4] and second.current.index == 1


def test_session_widget_anonymises_and_chains_mos_then_ab(setup):
    test, store = setup
    session = ListeningSession(test, store)
    session.start.click()
    assert session.page is None and "empty" in session.status.value
    session.name.value, session.device.value = "Grace", "earbuds"
    session.start.click()
    assert isinstance(session.page, MOSPage) and session.page.rater == rater_id("Grace", test.name)
    while isinstance(session.page, MOSPage):
        answer_from_code(session.page, session.page.current.expected or 4)
    assert isinstance(session.page, ABPage)
    while not session.page.finished:
        answer_from_code(session.page, "none")
    rows = store.ratings()
    assert Counter(rows["kind"]) == {"mos": 12, "ab": 3} and set(rows["listening"]) == {"earbuds"}
    assert "Grace" not in rows.to_csv()


def test_session_resumed_after_the_mos_part_goes_straight_to_ab(setup):
    test, store = setup
    mos = MOSPage(test, store, rater_id("Linus", test.name))
    while not mos.finished:
        answer_from_code(mos, 3)
    session = ListeningSession(test, store)
    session.name.value = "linus"
    assert isinstance(session.begin(), ABPage) and session.page.progress.value == "<b>trial 1 of 3</b>"


def test_simulated_class_writes_every_trial_of_every_rater(setup):
    test, store = setup
    ids = simulate_class(test, store, raters=4, progress=False)
    rows = store.ratings()
    assert len(ids) == 4 and len(rows) == 4 * (12 + 3)
    assert not rows.duplicated(["rater", "kind", "trial"]).any()


# ------------------------------------------------------------------- a rating only for a clip heard in full


def _cut(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still declares every frame


def test_a_cut_clip_for_the_next_trial_stops_the_page_and_nothing_is_stored_for_it(setup):
    test, store = setup
    test.sha256.clear()  # as in a test built before hashes were recorded: decoding alone must find the cut
    page = MOSPage(test, store, "r1")
    following = page.trials[1]
    _cut(following.path)
    row = answer_from_code(page, 4)  # trial 1 is saved; loading trial 2 fails
    assert row == 1 and store.ratings()["trial"].tolist() == [page.trials[0].index]
    assert page.current is None and not page.finished and str(following.path) in page.error
    assert "trial 2" not in page.progress.value and "The test stopped" in page.progress.value
    assert "cut short" in page.message.value or "not a readable audio file" in page.message.value
    assert all(p.wav == b"" for p in page.players) and all(b.disabled for b in page.answer_buttons.values())
    page.players[0].ended += 1  # the old clip's "ended" arriving late enables nothing
    assert page.next_button.disabled and page.submit() is None
    with pytest.raises(RuntimeError, match="stopped: Trial 2 cannot be played"):
        answer_from_code(page, 3)
    assert store.count() == 1
    again = MOSPage(test, store, "r1")  # reopening: still stopped, at the same trial
    assert again.error is not None and store.count() == 1


def _another_clip(page):
    """A clip whose bytes differ from the current trial's (a gold clip can be a copy of a real one)."""
    playing = page.trials[0].path.read_bytes()
    return next(t.path for t in page.trials if t.path.read_bytes() != playing)


def test_a_clip_replaced_while_it_was_played_is_not_rated(setup):
    test, store = setup
    page = MOSPage(test, store, "r1")
    playing = page.trials[0].path
    other = _another_clip(page)
    page.players[0].plays += 1
    page.players[0].ended += 1
    page.answer_buttons[4].click()
    playing.write_bytes(other.read_bytes())  # `build --out` rewrote the live test meanwhile
    assert page.submit() is None and store.count() == 0
    assert "Not saved" in page.error and str(playing) in page.error


def test_a_clip_replaced_in_a_test_without_recorded_hashes_is_not_rated(setup):
    test, store = setup
    test.sha256.clear()  # a test built before hashes were recorded
    page = MOSPage(test, store, "r1")
    playing = page.trials[0].path
    playing.write_bytes(_another_clip(page).read_bytes())
    with pytest.raises(RuntimeError, match="changed on disk after it was played"):
        answer_from_code(page, 4)
    assert store.count() == 0

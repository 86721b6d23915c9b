"""Rating pages (ipywidgets 8): a MOS page on the ACR scale and an A/B preference page, writing to a RatingStore.

* :class:`ClipPlayer` is a small anywidget around an HTML ``<audio>`` element. The browser reports each of the
  element's ``play`` and ``ended`` events to Python, tagged with the clip it was playing; Python counts them in
  ``plays`` and ``ended`` and drops an event of an earlier clip that arrives after the next clip was loaded.
* The answer buttons stay disabled until every clip of the trial has played to the end.
* "Submit and next" commits one row (score or choice, play counts, response time) and loads the next trial.
  The header reads "trial k of n". A rater who reopens the page resumes at their first unrated trial.
* Every clip is decoded in full and checked against its recorded hash before its trial is shown, and checked
  again before the answer is stored; a clip that is cut, missing or replaced (a test rebuilt under a live class)
  stops the page with the reason shown, and nothing is stored for a clip the rater did not hear.
* :class:`ListeningSession` is what a class uses: nickname and listening device, then the MOS page, then A/B.

Without a browser (tests, fast mode) drive a page from code exactly as a browser would:
:func:`answer_from_code` sends the players' ``play`` and ``ended`` events, clicks an answer button and clicks
"Submit and next".
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable

import anywidget
import ipywidgets as widgets
import soundfile as sf
import traitlets

from pwn_lib.listening.design import AB, MOS, Trial, rater_id, trials
from pwn_lib.listening.stats import ACR_LABELS
from pwn_lib.listening.stimuli import ListeningTest, StimulusError
from pwn_lib.listening.store import DuplicateRatingError, Rating, RatingStore, StoreError

LISTENING_DEVICES = ("headphones", "earbuds", "loudspeakers", "laptop speakers", "other")
AB_CHOICES = {"A": "A", "B": "B", "none": "No preference"}
MOS_QUESTION = "How would you rate the quality of the speech you have just heard?"  # ITU-T P.800 Annex B wording
AB_QUESTION = "Which of the two clips sounds better?"
TRAP_NOTE = (
    'Some clips end with a spoken instruction such as <i>"press three"</i>: for those, answer with that '
    "number. This checks attention (ITU-T P.808)."
)

_ESM = r"""
function render({ model, el }) {
  // The label and player sit in their own flex row: ipywidgets' Layout strips inline display and
  // align-items from `el` itself, which left the label on the player's baseline, 22 px below its centre.
  const row = document.createElement("div");
  row.className = "pwn-clip-player";
  row.style.display = "flex";
  row.style.alignItems = "center";
  const label = document.createElement("span");
  label.className = "pwn-clip-label";
  label.style.marginRight = "0.6em";
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "auto";
  audio.className = "pwn-clip";
  let url = null;
  function load() {
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([model.get("wav")], { type: "audio/wav" }));
    audio.src = url;
    audio.dataset.clip = String(model.get("clip"));
    label.textContent = model.get("label");
  }
  function report(event) {
    model.send({ event, clip: Number(audio.dataset.clip) });
  }
  audio.addEventListener("play", () => report("play"));
  audio.addEventListener("ended", () => report("ended"));
  model.on("change:clip", load);
  load();
  row.append(label, audio);
  el.append(row);
  return () => { if (url) URL.revokeObjectURL(url); };
}
export default { render };
"""


def wav_bytes(x, sample_rate: int) -> bytes:
    """Mono float audio ``(T,)`` as the bytes of a 16-bit PCM WAV file (what every browser plays)."""
    buffer = io.BytesIO()
    sf.write(buffer, x, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class ClipPlayer(anywidget.AnyWidget):
    """An ``<audio controls>`` element whose ``play`` and ``ended`` events count up ``plays`` and ``ended``.

    :meth:`load` swaps the clip and resets both counters; ``clip`` increments with every load, so the browser
    (and a browser test) can tell which clip it is showing. The browser sends each event as a message
    ``{"event": "play" | "ended", "clip": id}`` (see :meth:`receive`), not as a new counter value, so an event of
    the previous clip that crosses the reset on its way cannot count for the new clip.
    """

    _esm = _ESM
    wav = traitlets.Bytes(b"").tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    clip = traitlets.Int(0).tag(sync=True)
    plays = traitlets.Int(0)
    ended = traitlets.Int(0)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(lambda _, content, buffers: self.receive(content.get("event"), content.get("clip")))

    def load(self, wav: bytes, label: str = "") -> None:
        with self.hold_sync():
            self.wav, self.label, self.plays, self.ended = wav, label, 0, 0
            self.clip += 1

    def receive(self, event: str, clip: int) -> bool:
        """Count one browser ``event`` ("play" or "ended") of clip ``clip``; return whether it was counted.

        An event of another clip (one loaded before the current one) is stale and ignored.
        """
        if event not in ("play", "ended"):
            raise ValueError(f"ClipPlayer got the browser event {event!r}; expected 'play' or 'ended'")
        if clip != self.clip:
            return False
        counter = "plays" if event == "play" else "ended"
        setattr(self, counter, getattr(self, counter) + 1)
        return True


class TrialPage(widgets.VBox):
    """The shared machinery of :class:`MOSPage` and :class:`ABPage`: trial list, resume, progress, submit."""

    kind = ""
    n_players = 1

    def __init__(
        self,
        test: ListeningTest,
        store: RatingStore,
        rater: str,
        listening: str = LISTENING_DEVICES[0],
        on_finished: Callable[[], None] | None = None,
    ):
        self.test, self.store, self.rater, self.on_finished = test, store, rater, on_finished
        self.trials: list[Trial] = trials(test, rater, self.kind)
        self.current: Trial | None = None
        self.error: str | None = None
        self._playing: list[tuple[object, str]] = []  # (path, SHA-256) of the clips in the players
        self.answer: int | str | None = None
        self._first_end: float | None = None
        self.last_row: int | None = None
        self.players = [ClipPlayer() for _ in range(self.n_players)]
        for player in self.players:
            player.observe(self._played, names="ended")
        self.progress = widgets.HTML().add_class("pwn-progress")
        self.message = widgets.HTML().add_class("pwn-message")
        self.listening = widgets.Dropdown(
            options=LISTENING_DEVICES,
            value=listening,
            description="Listening with:",
            style={"description_width": "initial"},
        )
        self.answer_buttons = self._make_answer_buttons()
        for value, button in self.answer_buttons.items():
            button.on_click(lambda _, v=value: self._choose(v))
        self.next_button = widgets.Button(description="Submit and next", button_style="primary", disabled=True)
        self.next_button.add_class("pwn-next")
        self.next_button.on_click(lambda _: self.submit())
        super().__init__(
            [
                self.progress,
                widgets.HTML(self._question()),
                *self._body(),
                widgets.HBox(list(self.answer_buttons.values())),
                self.next_button,
                self.message,
                self.listening,
            ]
        )
        self.add_class(f"pwn-{self.kind}-page")
        self._advance()

    # -- to specialise ----------------------------------------------------------------
    def _make_answer_buttons(self) -> dict:
        raise NotImplementedError

    def _question(self) -> str:
        raise NotImplementedError

    def _body(self) -> list[widgets.Widget]:
        return list(self.players)

    def _clips(self, trial: Trial) -> list[tuple[object, str]]:
        raise NotImplementedError

    def _rating(self, trial: Trial, response_ms: float) -> Rating:
        raise NotImplementedError

    # -- the trial loop ---------------------------------------------------------------
    @property
    def remaining(self) -> list[Trial]:
        done = self.store.rated_trials(self.test.name, self.rater, self.kind)
        return [t for t in self.trials if t.index not in done]

    @property
    def finished(self) -> bool:
        return self.current is None and self.error is None

    def _advance(self) -> None:
        remaining = self.remaining
        self.answer, self._first_end = None, None
        if not remaining:
            self.current = None
            self.progress.value = f"<b>All {len(self.trials)} trials rated. Thank you!</b>"
            for player in self.players:
                player.layout.display = "none"
            self._enable(False)
            if self.on_finished is not None:
                self.on_finished()
            return
        trial = remaining[0]
        clips = self._clips(trial)
        try:
            audio = [self.test.read_clip(path) for path, _ in clips]  # every clip verified before any is shown
        except StimulusError as err:
            self._halt(f"Trial {trial.index + 1} cannot be played: {err}")
            return
        self.current = trial
        self._playing = [(path, digest) for (path, _), (_, digest) in zip(clips, audio, strict=True)]
        self.progress.value = f"<b>trial {trial.index + 1} of {len(self.trials)}</b>"
        for player, (_, label), (x, _) in zip(self.players, clips, audio, strict=True):
            player.load(wav_bytes(x, self.test.sample_rate), label)
        self._enable(False)

    def _halt(self, why: str) -> None:
        """Stop the page: no clip, no trial, no answer can be stored; ``why`` is shown and kept in ``error``."""
        self.current, self.error, self._playing = None, why, []
        self.progress.value = "<b>The test stopped.</b>"
        self.message.value = (
            f"<span style='color:#b00'>{html.escape(why)} Your earlier answers are saved. Tell the organiser; "
            "reopen the test once it is fixed to continue where you stopped.</span>"
        )
        for player in self.players:
            player.load(b"", "")
            player.layout.display = "none"
        self._enable(False)

    def _unchanged(self) -> bool:
        """Whether the clips just played are still the test's files (not rebuilt or replaced meanwhile)."""
        for path, digest in self._playing:
            try:
                now = self.test.read_clip(path)[1]
            except StimulusError as err:
                self._halt(f"Not saved: {err}")
                return False
            if now != digest:
                self._halt(f"Not saved: {path} changed on disk after it was played (was the test rebuilt?).")
                return False
        return True

    def _played(self, change) -> None:
        if self.current is None:
            return
        if self._first_end is None and all(p.ended >= 1 for p in self.players):
            self._first_end = time.monotonic()
        self._enable(self._first_end is not None)

    def _enable(self, ready: bool) -> None:
        for button in self.answer_buttons.values():
            button.disabled = not ready
        self.next_button.disabled = not (ready and self.answer is not None)

    def _choose(self, value) -> None:
        if self._first_end is None:
            self.message.value = "Play the whole clip first."
            return
        self.answer = value
        for key, button in self.answer_buttons.items():
            button.button_style = "info" if key == value else ""
        self.next_button.disabled = False
        self.message.value = ""

    def submit(self) -> int | None:
        """Commit the current answer (one row) and load the next trial; return the new row id (None if not saved)."""
        self.last_row = None
        if self.current is None or self.answer is None or self._first_end is None:
            self.message.value = "Play the clip(s) to the end and choose an answer first."
            return None
        rating = self._rating(self.current, 1000.0 * (time.monotonic() - self._first_end))
        if not self._unchanged():
            return None
        try:
            row = self.store.add(rating)
        except DuplicateRatingError:
            row = None
            self.message.value = "This trial was already rated (another window?); moving on."
        except StoreError as err:
            self.message.value = f"<span style='color:#b00'>Not saved: {html.escape(str(err))}</span>"
            raise
        self.last_row = row
        for button in self.answer_buttons.values():
            button.button_style = ""
        self._advance()
        return row

    def _common(self, trial: Trial, response_ms: float) -> dict:
        return {
            "test": self.test.name,
            "rater": self.rater,
            "kind": self.kind,
            "trial": trial.index,
            "n_trials": len(self.trials),
            "role": trial.role,
            "system": trial.system,
            "utterance": trial.utterance,
            "expected": trial.expected,
            "plays": self.players[0].plays,
            "ended": self.players[0].ended,
            "response_ms": round(response_ms, 1),
            "listening": self.listening.value,
        }


class MOSPage(TrialPage):
    """One clip at a time, rated on the ACR scale 5 Excellent ... 1 Bad (ITU-T P.800 Annex B)."""

    kind = MOS

    def _make_answer_buttons(self) -> dict[int, widgets.Button]:
        buttons = {}
        for score in sorted(ACR_LABELS, reverse=True):
            button = widgets.Button(
                description=f"{score} {ACR_LABELS[score]}", disabled=True, layout=widgets.Layout(width="8.5em")
            )
            buttons[score] = button.add_class(f"pwn-score-{score}")
        return buttons

    def _question(self) -> str:
        return f"<p>{MOS_QUESTION}</p><p style='font-size:0.9em'>{TRAP_NOTE}</p>"

    def _clips(self, trial: Trial) -> list[tuple[object, str]]:
        return [(trial.path, "")]

    def _rating(self, trial: Trial, response_ms: float) -> Rating:
        return Rating(**self._common(trial, response_ms), score=int(self.answer))


class ABPage(TrialPage):
    """Two clips of the same sentence, A and B (sides drawn per trial): A, B or no preference."""

    kind = AB
    n_players = 2

    def _make_answer_buttons(self) -> dict[str, widgets.Button]:
        return {
            key: widgets.Button(description=text, disabled=True).add_class(f"pwn-choice-{key}")
            for key, text in AB_CHOICES.items()
        }

    def _question(self) -> str:
        return f"<p>{AB_QUESTION} Play both to the end, as often as you like.</p>"

    def _clips(self, trial: Trial) -> list[tuple[object, str]]:
        return [(trial.path, "A"), (trial.path_b, "B")]

    def _rating(self, trial: Trial, response_ms: float) -> Rating:
        return Rating(
            **self._common(trial, response_ms),
            choice=str(self.answer),
            system_b=trial.system_b,
            plays_b=self.players[1].plays,
            ended_b=self.players[1].ended,
        )


class ListeningSession(widgets.VBox):
    """A whole session for one rater: nickname and device, then the MOS page, then the A/B page (if any pairs)."""

    def __init__(self, test: ListeningTest, store: RatingStore):
        self.test, self.store = test, store
        self.name = widgets.Text(description="Nickname:", placeholder="a nickname or the code you were given")
        self.device = widgets.Dropdown(
            options=LISTENING_DEVICES, description="Listening with:", style={"description_width": "initial"}
        )
        self.start = widgets.Button(description="Start", button_style="primary").add_class("pwn-start")
        self.start.on_click(lambda _: self.begin())
        self.status = widgets.HTML()
        self.page: TrialPage | None = None
        super().__init__(
            [
                widgets.HTML("<b>Listening test</b>: use headphones in a quiet room if you can."),
                self.name,
                self.device,
                self.start,
                self.status,
            ]
        )

    def begin(self) -> TrialPage | None:
        """Start (or resume) the session of the rater named in ``name``; return the page now shown."""
        try:
            rater = rater_id(self.name.value, self.test.name)
        except ValueError as err:
            self.status.value = str(err)
            return None
        self.status.value = f"Your anonymous rater id: <code>{rater}</code>"
        mos = MOSPage(self.test, self.store, rater, self.device.value)
        mos.on_finished = lambda: self._ab(rater)
        self._show(mos)
        if mos.finished:  # resumed after the MOS part: straight to A/B
            self._ab(rater)
        return self.page

    def _show(self, page: TrialPage) -> None:
        self.page = page
        self.children = [self.status, page]

    def _ab(self, rater: str) -> None:
        if self.test.ab_pairs:
            self._show(ABPage(self.test, self.store, rater, self.device.value))


def answer_from_code(page: TrialPage, answer: int | str, plays: int = 1) -> int | None:
    """Do what a listener does, from code: play every clip to the end ``plays`` times, pick ``answer``, submit.

    Sends each player the ``play`` and ``ended`` events the browser sends, then clicks the page's buttons.
    Returns the committed row id (None if the trial had already been rated elsewhere).
    """
    if page.error is not None:
        raise RuntimeError(f"the {page.kind} page of rater {page.rater} stopped: {page.error}")
    if page.finished:
        raise RuntimeError(f"rater {page.rater} has rated all {len(page.trials)} {page.kind} trials already")
    for player in page.players:
        for _ in range(plays):
            player.receive("play", player.clip)
            player.receive("ended", player.clip)
    page.answer_buttons[answer].click()
    if page.next_button.disabled:
        raise RuntimeError(f"answer {answer!r} did not enable 'Submit and next'; the page says: {page.message.value}")
    page.next_button.click()
    if page.error is not None and page.last_row is None:
        raise RuntimeError(f"the {page.kind} page of rater {page.rater} stopped: {page.error}")
    return page.last_row


__all__ = [
    "AB_CHOICES",
    "ABPage",
    "ClipPlayer",
    "LISTENING_DEVICES",
    "ListeningSession",
    "MOSPage",
    "TrialPage",
    "answer_from_code",
    "wav_bytes",
]

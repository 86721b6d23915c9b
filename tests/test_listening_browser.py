"""A real browser: JupyterLab on loopback, headless Chromium opens notebook 09, plays a clip, clicks a rating,
and the row is in the database.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when run as root). Without them
the test is skipped with the command that installs them. Nothing downloads a browser or a driver: selenium is
given both paths, and ``SE_OFFLINE`` keeps Selenium Manager off the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from pwn_lib.config import REPO_ROOT
from pwn_lib.listening import rater_id

NOTEBOOK = "notebooks/09_listening_tests.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1400,1000",
]
LEARNER = rater_id("fast-mode learner", "example")  # the notebook's rater in fast mode, test "example"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason=f"headless Chromium and chromedriver not found; install them with `{INSTALL}` (as root), "
    "as .ci/run does, to run the real-browser test of notebook 09",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving the repository, fast mode, a fresh ratings DB, autosave off."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for plugin, values in [
        ("docmanager-extension/plugin", {"autosave": False}),  # never write the notebook
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ]:
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "PWN_FAST": "1",
        # the kernel imports this checkout's pwn_lib, not the one an editable install points at
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PWN_LISTENING_DB": str(tmp_path / "ratings.sqlite"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    log = open(tmp_path / "lab.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={REPO_ROOT}",
            "--LabApp.expose_app_in_browser=True",
            "--allow-root",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({process.returncode}); see {tmp_path / 'lab.log'}")
        try:
            return urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).status == 200
        except OSError:
            return False

    try:
        _wait_for(up, 60, "JupyterLab to answer on loopback")
        yield {"url": f"{base}/lab/tree/{NOTEBOOK}?token={token}", "db": tmp_path / "ratings.sqlite", "tmp": tmp_path}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


NOTEBOOK_STATE = """
const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!nb || !nb.content || !nb.sessionContext || !nb.sessionContext.session) return null;
const kernel = nb.sessionContext.session.kernel;
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
const errors = cells.flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error');
return {status: kernel ? kernel.status : 'none', connection: kernel ? kernel.connectionStatus : 'none',
        unrun: cells.filter(c => c.model.executionCount === null).length, cells: cells.length,
        errors: errors.map(o => o.ename + ': ' + o.evalue)};
"""


def _click(driver, element, what: str) -> None:
    """Scroll ``element`` to the middle of the window and click it (retrying while something transient covers it)."""
    from selenium.common.exceptions import ElementClickInterceptedException

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

    def clicked() -> bool:
        try:
            element.click()
            return True
        except ElementClickInterceptedException:
            return False

    _wait_for(clicked, 10, f"{what} to be clickable")


PLAYER_LAYOUT = """
return Array.from(arguments[0].querySelectorAll('.pwn-clip-player')).map(player => {
  const label = player.querySelector('.pwn-clip-label').getBoundingClientRect();
  const audio = player.querySelector('audio.pwn-clip').getBoundingClientRect();
  return {text: player.querySelector('.pwn-clip-label').textContent,
          label: [label.left, label.top, label.right, label.bottom],
          audio: [audio.left, audio.top, audio.right, audio.bottom]};
});
"""


def _players_layout(driver, page) -> list[dict]:
    """Each player's label and ``<audio>`` rectangles, ``[left, top, right, bottom]`` in CSS px, as laid out."""
    return driver.execute_script(PLAYER_LAYOUT, page)


@pytest.mark.slow
def test_notebook_09_in_jupyterlab_plays_a_clip_and_stores_the_rating(lab, browser):
    from selenium.webdriver.common.by import By

    before = hashlib.sha256((REPO_ROOT / NOTEBOOK).read_bytes()).hexdigest()
    browser.get(lab["url"])
    state = lambda: browser.execute_script(NOTEBOOK_STATE)  # noqa: E731
    _wait_for(
        lambda: (s := state()) and s["connection"] == "connected" and s["status"] == "idle",
        120,
        "notebook 09 to open with an idle kernel",
    )
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def finished():
        s = state()
        if s["errors"]:
            raise AssertionError(f"notebook 09 raised in the browser: {s['errors']}")
        return s["unrun"] == 0 and s["status"] == "idle"

    _wait_for(finished, 240, "Run All to finish")
    ab_page = browser.find_element(By.CSS_SELECTOR, ".pwn-ab-page")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", ab_page)
    players = _players_layout(browser, ab_page)
    print("A/B players as laid out:", players)
    assert [p["text"] for p in players] == ["A", "B"], players
    for p in players:
        label_centre, audio_centre = (p["label"][1] + p["label"][3]) / 2, (p["audio"][1] + p["audio"][3]) / 2
        assert abs(label_centre - audio_centre) <= 2, f"label {p['text']} is {label_centre - audio_centre:+.1f} px off"
        assert p["label"][2] <= p["audio"][0], f"label {p['text']} is not left of its player: {p}"
    page = browser.find_element(By.CSS_SELECTOR, ".pwn-mos-page")
    progress = page.find_element(By.CSS_SELECTOR, ".pwn-progress").text
    assert progress.startswith("trial ") and progress.endswith(" of 33"), progress
    trial = int(progress.split()[1]) - 1  # the fast-mode cell rated the first ones from code
    audio = page.find_element(By.CSS_SELECTOR, "audio.pwn-clip")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", page)
    _wait_for(lambda: browser.execute_script("return arguments[0].readyState >= 2", audio), 30, "the clip to load")
    score = page.find_element(By.CSS_SELECTOR, ".pwn-score-4")
    assert not score.is_enabled()  # not before the clip has played

    played = browser.execute_async_script(
        """
        const [audio, done] = arguments;
        audio.addEventListener('play', () => { window.pwnPlayed = true; });
        audio.addEventListener('ended', () => done({played: window.pwnPlayed === true, time: audio.currentTime}));
        audio.play().catch(err => done({error: String(err)}));
    """,
        audio,
    )
    assert played.get("played") and not played.get("error"), played
    _wait_for(score.is_enabled, 30, "the kernel to receive the 'ended' event and enable the rating buttons")
    _click(browser, score, "'4 Good'")
    next_button = page.find_element(By.CSS_SELECTOR, ".pwn-next")
    _wait_for(next_button.is_enabled, 10, "'Submit and next' to enable")
    _click(browser, next_button, "'Submit and next'")

    def stored():
        if not lab["db"].is_file():
            return None
        with sqlite3.connect(f"file:{lab['db']}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT score, plays, ended, response_ms FROM ratings WHERE rater = ? AND kind = 'mos' AND trial = ?",
                (LEARNER, trial),
            ).fetchone()

    score_, plays, ended, response_ms = _wait_for(stored, 30, f"trial {trial}'s rating in {lab['db']}")
    assert (score_, plays, ended) == (4, 1, 1) and response_ms > 0
    _wait_for(
        lambda: page.find_element(By.CSS_SELECTOR, ".pwn-progress").text == f"trial {trial + 2} of 33",
        10,
        "the next trial",
    )
    assert hashlib.sha256((REPO_ROOT / NOTEBOOK).read_bytes()).hexdigest() == before, "the browser saved the notebook"

"""Kill safety: a training process killed with SIGKILL at 20 random moments, half of them inside checkpoint
writes, always resumes, and the resumed run ends bit-equal to one that was never killed. A kill while the oldest
checkpoint is being deleted leaves a run that resumes and tidies up, and of two runs started on one folder the
second is refused at once while the first runs undisturbed.

A checkpoint is six files (resume state, artifact, pointer); pwn_lib.artifacts.commit_checkpoint writes them into
a fresh directory and swaps a pointer, so a kill between any two leaves a whole one. The child processes are
forked from the test, so each restart costs milliseconds instead of an import of torch."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pwn_lib import artifacts
from pwn_lib.config import TrainConfig
from pwn_lib.trainer import Trainer

pytestmark = pytest.mark.slow  # SIGKILLed training subprocesses: over 10 s each

STEPS = 300  # more than 20 kills can reach: each child trains at most 12 steps (below), so none finishes
KILLS = 20


class Toy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 256

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, generator=g)
        return {"x": x, "y": x.sum(0, keepdim=True)}


def noisy_mse(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    noise = 0.01 * torch.randn_like(batch["y"])  # resume must reproduce the noise too
    return ((model(batch["x"]) - batch["y"] - noise) ** 2).mean(), {}


def trainer(out) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    cfg = TrainConfig(steps=STEPS, batch_size=4, lr=1e-2, lr_warmup=2, log_every=1, checkpoint_every=1)
    return Trainer(model, noisy_mse, cfg, out, model_config={"toy": True}, kind="toy")


def train(out, die_at_file: int | None, budget: int | None = None) -> None:
    """Resume and train to the end, or ``budget`` more steps; with ``die_at_file = n``, SIGKILL this process just
    before its n-th file operation of a checkpoint (a write, the directory rename, the pointer swap, a deletion or a
    link)."""
    torch.set_num_threads(1)
    if die_at_file is not None:
        count = iter(range(1, 10**6))

        def dying(function):
            def wrapped(*args, **kwargs):
                if next(count) == die_at_file:
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(*args, **kwargs)

            return wrapped

        artifacts._atomic = dying(artifacts._atomic)
        artifacts.shutil.rmtree = dying(artifacts.shutil.rmtree)
        artifacts.os.rename = dying(os.rename)
        artifacts.os.replace = dying(os.replace)
    t = trainer(out)
    t.resume()
    t.fit(Toy(), steps=min(t.step + budget, STEPS) if budget else None, progress=False)
    os._exit(0)


def assert_whole(out) -> int:
    """The checkpoint LATEST names is complete and of one step; return that step (0 before the first)."""
    checkpoint = artifacts.latest_checkpoint(out)
    if checkpoint is None:
        return 0
    meta = json.loads((checkpoint / "resume" / "state.json").read_text())
    _, config, metrics = artifacts.load_artifact(out)
    assert metrics["steps"] == meta["step"] == len(meta["history"]), "a checkpoint mixes two steps"
    assert config["kind"] == "toy"
    fresh = trainer(out)
    assert fresh.resume() and fresh.step == meta["step"]
    return meta["step"]


def assert_tidy(out, checkpoints: list[str]) -> None:
    """Exactly these checkpoint folders (the last two) and no temporary file or folder are left in ``out``."""
    left = sorted(d.name for d in out.iterdir() if "ckpt-" in d.name)
    assert left == checkpoints, f"killed writes left directories behind: {left}"
    stray = [d.name for d in out.iterdir() if artifacts.TEMPORARY.match(d.name)]
    assert not stray, f"temporary files left behind: {stray}"
    assert artifacts.latest_checkpoint(out).name == checkpoints[-1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the training process")
def test_sigkill_at_twenty_moments_always_resumes_to_the_uninterrupted_run(tmp_path):
    import torch.utils.tensorboard  # noqa: F401  (imported once here, not in every child)

    fork = multiprocessing.get_context("fork")
    rng = np.random.default_rng(10)
    out, steps_seen, in_writes = tmp_path / "killed", [], 0
    for kill in range(KILLS):
        inside = kill % 2 == 1  # every other kill lands inside a checkpoint write, at a random file operation
        # the kills outside writes land at a random moment of at most 12 steps, whatever the machine's speed
        args = (out, int(rng.integers(1, 60)), None) if inside else (out, None, int(rng.integers(2, 13)))
        child = fork.Process(target=train, args=args)
        child.start()
        if not inside:
            child.join(timeout=float(rng.uniform(0.05, 0.5)))
            os.kill(child.pid, signal.SIGKILL) if child.is_alive() else None
        child.join()
        in_writes += inside and child.exitcode == -signal.SIGKILL
        steps_seen.append(assert_whole(out))
    assert in_writes >= KILLS // 2 - 2, "the kills meant for checkpoint writes did not land in them"
    assert 0 < max(steps_seen) < STEPS, f"the kills never interrupted training mid-way: {steps_seen}"

    finisher = fork.Process(target=train, args=(out, None))
    finisher.start()
    finisher.join()
    assert finisher.exitcode == 0 and assert_whole(out) == STEPS
    assert_tidy(out, [f"ckpt-{STEPS - 1:08d}-0", f"ckpt-{STEPS:08d}-0"])

    straight = trainer(tmp_path / "straight")
    straight.fit(Toy(), progress=False)
    resumed = trainer(out)
    assert resumed.resume()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name, value in straight.ema.shadow.items():
        assert torch.equal(resumed.ema.shadow[name], value), f"ema {name}"
    moments, resumed_moments = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for index, slots in moments.items():
        assert all(torch.equal(slots[k], resumed_moments[index][k]) for k in ("exp_avg", "exp_avg_sq")), index
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def train_dying_in_deletion(out, budget: int) -> None:
    """Train ``budget`` more steps, but SIGKILL this process half-way through deleting the oldest checkpoint."""

    def half_then_die(path, *args, **kwargs):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        for file in files[: len(files) // 2]:
            file.unlink()
        os.kill(os.getpid(), signal.SIGKILL)

    artifacts.shutil.rmtree = half_then_die
    train(out, None, budget)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the training process")
def test_a_kill_while_deleting_the_oldest_checkpoint_resumes_and_tidies_up(tmp_path):
    fork = multiprocessing.get_context("fork")
    out = tmp_path / "run"
    for target, args in ((train, (out, None, 3)), (train_dying_in_deletion, (out, 2))):
        child = fork.Process(target=target, args=args)
        child.start()
        child.join()
    assert child.exitcode == -signal.SIGKILL, "the kill inside the deletion did not happen"
    names = sorted(d.name for d in out.iterdir() if d.name.startswith("ckpt-"))
    assert names == [f"ckpt-{s:08d}-0" for s in (2, 3, 4)], names  # step 2 half deleted, after LATEST named step 4
    assert assert_whole(out) == 4

    # the latest checkpoint damaged as well: the resume steps over it to step 3, never to the half-deleted step 2
    (out / "ckpt-00000004-0" / "resume" / "state.json").write_text('{"step": 4, "hist')
    with pytest.warns(UserWarning, match="ckpt-00000004-0/resume/state.json"):
        assert trainer(out).resume()
    assert assert_whole(out) == 3

    finisher = fork.Process(target=train, args=(out, None, 2))
    finisher.start()
    finisher.join()
    assert finisher.exitcode == 0 and assert_whole(out) == 5
    assert_tidy(out, ["ckpt-00000004-1", "ckpt-00000005-0"])


def contend(out, attempted, budget: int) -> None:
    """Take the run lock on ``out`` and train ``budget`` steps; if another process holds it, write the refusal to
    ``out/../refused.txt`` and exit 3. Both contenders wait at ``attempted`` after trying, so they overlap."""
    try:
        with artifacts.lock_run(out):
            attempted.wait()
            train(out, None, budget)
    except artifacts.RunLocked as refusal:
        (out.parent / "refused.txt").write_text(str(refusal))
        attempted.wait()
        os._exit(3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the training process")
def test_two_runs_started_on_one_folder_one_is_refused_at_once(tmp_path):
    import torch.utils.tensorboard  # noqa: F401  (imported once here, not in every child)

    fork = multiprocessing.get_context("fork")
    out, attempted = tmp_path / "run", fork.Barrier(2, timeout=60)
    children = [fork.Process(target=contend, args=(out, attempted, 6)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    codes = sorted(child.exitcode for child in children)
    assert codes == [0, 3], f"exit codes {codes}: both ran, or one crashed"
    winner = next(child for child in children if child.exitcode == 0)
    refusal = (tmp_path / "refused.txt").read_text()
    assert str(out) in refusal and f"pid {winner.pid}" in refusal, refusal
    assert assert_whole(out) == 6
    assert_tidy(out, ["ckpt-00000005-0", "ckpt-00000006-0"])
    with artifacts.lock_run(out):  # a finished (or killed) run leaves its folder unlocked
        pass

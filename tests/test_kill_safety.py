"""Kill safety: a training process killed with SIGKILL at 20 random moments, half of them inside checkpoint
writes, always resumes, and the resumed run ends bit-equal to one that was never killed.

A checkpoint is six files (resume state, artifact, pointer); pwn_lib.artifacts.commit_checkpoint writes them into
a fresh directory and swaps a pointer, so a kill between any two leaves a whole one. The child processes are
forked from the test, so each restart costs milliseconds instead of an import of torch."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from pwn_lib import artifacts
from pwn_lib.config import TrainConfig
from pwn_lib.trainer import Trainer

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
    left = sorted(d.name for d in out.iterdir() if "ckpt-" in d.name)
    assert left == [artifacts.latest_checkpoint(out).name], f"killed writes left directories behind: {left}"

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

"""Training runs that go wrong lose nothing: a diverging run never saves NaN, a damaged checkpoint is stepped over,
a resume under other settings is refused, two runs never share a folder, and no write leaves temporary files."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train import Regression, corpus_trainer, small_config, trainer

from pwn_lib import artifacts
from pwn_lib.trainer import ResumeError

# ----------------------------------------------------------------------------- non-finite state is never saved


def test_learning_rate_1000_stops_with_finite_checkpoints_and_a_rerun_resumes_from_the_last(tmp_path):
    """The tiny teacher at lr 1000: a step with a finite loss but a NaN gradient norm used to be applied and
    saved, so the "last good checkpoint" and the published model.safetensors held NaN."""
    t, windows = corpus_trainer("teacher", tmp_path)
    t.cfg = small_config(steps=20, batch_size=2, window=1_024, checkpoint_every=1, lr=1000.0, lr_warmup=0)
    with pytest.raises(FloatingPointError) as stop:
        t.fit(windows, progress=False)
    last = artifacts.latest_checkpoint(tmp_path)
    artifacts.load_artifact(tmp_path)  # refuses NaN weights (CheckpointError)
    for path in (tmp_path / "model.safetensors", last / "resume" / "state.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_file(str(path)).values() if v.is_floating_point()), path
    assert t.non_finite() == [], "the weights were updated with a non-finite gradient"
    assert str(last) in str(stop.value), f"the error does not name the last good checkpoint: {stop.value}"

    rerun, _ = corpus_trainer("teacher", tmp_path)
    rerun.cfg = t.cfg
    assert rerun.resume() and rerun.step == json.loads((last / "resume" / "state.json").read_text())["step"]
    assert rerun.non_finite() == []


@pytest.mark.parametrize("where", ["model", "ema", "optimizer"])
def test_save_refuses_non_finite_weights_ema_or_optimizer_state_and_writes_nothing(tmp_path, where):
    t = trainer(tmp_path, small_config(steps=4))
    t.fit(Regression(), progress=False)
    before, prefix = sorted(p.name for p in tmp_path.iterdir()), {"optimizer": "optim"}.get(where, where)
    with torch.no_grad():
        if where == "model":
            next(t.model.parameters()).fill_(float("nan"))
        elif where == "ema":
            next(iter(t.ema.shadow.values())).fill_(float("inf"))
        else:
            next(iter(t.optimizer.state.values()))["exp_avg_sq"].fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=rf"{prefix}\.\S+.*last good checkpoint is .*ckpt-00000004-0"):
        t.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert artifacts.latest_checkpoint(tmp_path).name == "ckpt-00000004-0"


# ----------------------------------------------------------------------------- damaged checkpoints


def cut_in_half(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_steps_over_a_cut_resume_state_to_the_previous_checkpoint(tmp_path):
    trainer(tmp_path).fit(Regression(), progress=False)  # checkpoints at steps 4 and 8
    cut_in_half(tmp_path / "ckpt-00000008-0" / "resume" / "state.safetensors")
    resumed = trainer(tmp_path)
    with pytest.warns(UserWarning, match=r"ckpt-00000008-0/resume/state\.safetensors.*resuming from .*ckpt-00000004-0"):
        assert resumed.resume()
    assert resumed.step == 4 and artifacts.latest_checkpoint(tmp_path).name == "ckpt-00000004-0"
    assert os.path.samefile(tmp_path / "model.safetensors", tmp_path / "ckpt-00000004-0" / "model.safetensors")

    resumed.fit(Regression(), progress=False)  # trains steps 5-8 again, then the damaged folder is deleted
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-00000004-0", "ckpt-00000008-1"]


def test_resume_names_every_damaged_checkpoint_when_none_can_be_read(tmp_path):
    trainer(tmp_path).fit(Regression(), progress=False)
    cut_in_half(tmp_path / "ckpt-00000008-0" / "resume" / "state.safetensors")
    (tmp_path / "ckpt-00000004-0" / "resume" / "state.json").write_text('{"step": 4, "ema_upd')
    with pytest.raises(ResumeError) as refused:
        trainer(tmp_path).resume()
    message = str(refused.value)
    assert "ckpt-00000008-0/resume/state.safetensors" in message and "ckpt-00000004-0/resume/state.json" in message
    assert "--fresh" in message


# ----------------------------------------------------------------------------- resuming under other settings


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": 8}, "train.batch_size: 4 -> 8"),
        ({"lr": 0.1}, "train.lr: 0.01 -> 0.1"),
        ({"grad_accum": 2}, "train.grad_accum x processes: 1 -> 2"),
        ({"steps": 6}, "train.steps: 8 -> 6"),
    ],
)
def test_resume_refuses_changed_settings_naming_the_keys(tmp_path, change, named):
    trainer(tmp_path, small_config(stop_at=4)).fit(Regression(), progress=False)
    with pytest.raises(ResumeError, match="use a new --out, or --fresh") as refused:
        trainer(tmp_path, small_config(**change)).resume()
    assert named in str(refused.value) and str(tmp_path) in str(refused.value)


def test_resume_accepts_more_steps_and_other_logging_and_refuses_another_model(tmp_path):
    trainer(tmp_path, small_config(stop_at=4)).fit(Regression(), progress=False)
    grown = trainer(tmp_path, small_config(steps=12, stop_at=6, log_every=2, checkpoint_every=1, num_workers=0))
    assert grown.resume() and grown.step == 4
    other = trainer(tmp_path)
    other.model_config = {"toy": False}
    with pytest.raises(ResumeError, match=r"model\.toy: True -> False"):
        other.resume()


def test_resume_may_turn_bf16_off_and_on_but_not_fp16(tmp_path):
    """bf16 keeps no state, so a run may move to a machine without native bf16 (--fp32) and back; fp16 keeps a
    GradScaler, so turning it on is another recipe."""
    trainer(tmp_path, small_config(stop_at=2, bf16=True)).fit(Regression(), progress=False)
    moved = trainer(tmp_path, small_config(stop_at=4))
    assert moved.resume() and moved.step == 2
    moved.fit(Regression(), progress=False)
    back = trainer(tmp_path, small_config(stop_at=6, bf16=True))
    assert back.resume() and back.step == 4
    with pytest.raises(ResumeError, match="train.fp16: False -> True"):
        trainer(tmp_path, small_config(fp16=True)).resume()


# ----------------------------------------------------------------------------- the command line


def test_cli_refuses_a_locked_out_and_a_resume_with_another_batch_size(tmp_path):
    from pwn_lib.train import main

    out = tmp_path / "teacher"
    run = ["teacher", "--preset", "tiny", "--steps", "2", "--no-eval", "--window", "1024", "--out", str(out)]
    with artifacts.lock_run(out):  # another open of the lock file, as a second process would hold it
        with pytest.raises(SystemExit, match=rf"{out} is in use by another training run \(pid {os.getpid()}"):
            main([*run, "--batch-size", "2"])
    assert not (out / "LATEST").exists(), "the refused run wrote a checkpoint"
    assert main([*run, "--batch-size", "2"]) == 0
    with pytest.raises(SystemExit, match=r"train\.batch_size: 2 -> 3.*--fresh"):
        main([*run, "--batch-size", "3"])


# ----------------------------------------------------------------------------- files on disk


def test_a_full_disk_leaves_no_temporary_directory_and_the_previous_checkpoint_current(tmp_path):
    trainer(tmp_path, small_config(steps=4)).fit(Regression(), progress=False)

    def full(directory):
        (directory / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    for _ in range(2):
        with pytest.raises(OSError, match="No space left"):
            artifacts.commit_checkpoint(tmp_path, 5, full)
    assert not [p.name for p in tmp_path.iterdir() if artifacts.TEMPORARY.match(p.name)]
    assert artifacts.latest_checkpoint(tmp_path).name == "ckpt-00000004-0"


def test_resume_leaves_no_link_files(tmp_path):
    trainer(tmp_path).fit(Regression(), steps=4, progress=False)
    for _ in range(2):
        assert trainer(tmp_path).resume()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_temporaries_of_dead_runs_are_swept_at_start_and_those_of_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(dead.stdout), os.getppid()
    (tmp_path / f".ckpt-tmp-{dead_pid}" / "resume").mkdir(parents=True)
    for name in (f".model.safetensors.link-{dead_pid}", f".LATEST.tmp-{dead_pid}", f".ckpt-tmp-{live_pid}"):
        (tmp_path / name).touch()
    with artifacts.lock_run(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt-tmp-" + str(live_pid), ".lock"]


def test_a_checkpoint_is_fsynced_file_by_file_and_folder_by_folder_before_it_is_renamed(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    fsync, rename, replace = artifacts.fsync, os.rename, os.replace

    def logged(name, function):
        def wrapped(*args):
            events.append((name, str(args[-1] if name != "fsync" else args[0])))
            return function(*args)

        return wrapped

    monkeypatch.setattr(artifacts, "fsync", logged("fsync", fsync))
    monkeypatch.setattr(os, "rename", logged("rename", rename))
    monkeypatch.setattr(os, "replace", logged("replace", replace))
    final = artifacts.commit_checkpoint(tmp_path, 1, lambda d: artifacts.write_json(d / "sub" / "a.json", {"a": 1}))
    tmp = str(tmp_path / f".ckpt-tmp-{os.getpid()}")
    synced = [path for name, path in events if name == "fsync"]
    moved = events.index(("rename", str(final)))
    for path in (f"{tmp}/sub/.a.json.tmp-{os.getpid()}", f"{tmp}/sub", tmp):
        assert path in synced[:moved], f"{path} was not fsynced before the checkpoint was renamed: {events}"
    assert ("fsync", str(tmp_path)) in events[moved:], "the run folder was not fsynced after the rename"
    pointer = events.index(("replace", str(tmp_path / "LATEST")))
    assert events[pointer - 1] == ("fsync", str(tmp_path / f".LATEST.tmp-{os.getpid()}"))
    assert events[pointer + 1] == ("fsync", str(tmp_path))

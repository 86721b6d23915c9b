"""DistributedDataParallel through torchrun on CPU (gloo): two processes train exactly what one process
accumulating the same global batch trains, their windows differ, and a 2-process resume is bit-exact.

Each torchrun launch of the tiny preset costs ~10-20 s, mostly two Python processes importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file

from pwn_lib.artifacts import latest_checkpoint
from pwn_lib.config import REPO_ROOT
from pwn_lib.distributed import World
from pwn_lib.train import main
from pwn_lib.trainer import MicroBatches, micro_batch_index

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")

TINY = ["teacher", "--preset", "tiny", "--steps", "4", "--batch-size", "2", "--no-eval", "--device", "cpu"]


def torchrun(out, *extra: str, processes: int = 2) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m pwn_lib.train`` in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PWN_FAST": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "pwn_lib.train",
        *TINY,
        "--out",
        str(out),
        *extra,
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def state(out) -> tuple[dict[str, torch.Tensor], dict]:
    """The resume state of a run directory: raw weights, EMA and Adam's moments; and its JSON half."""
    resume = latest_checkpoint(out) / "resume"
    return load_file(str(resume / "state.safetensors")), json.loads((resume / "state.json").read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "straight"
    torchrun(out)
    return out


def test_ranks_draw_different_windows_and_one_process_can_draw_them_all():
    ranks = [list(MicroBatches(1_000, 2, 1, World(rank, 2), 0, 3)) for rank in (0, 1)]
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}, "two ranks share windows"
    together = list(MicroBatches(1_000, 2, 2, World(), 0, 3))
    assert together == [batch for pair in zip(*ranks, strict=True) for batch in pair]
    assert micro_batch_index(5, 0, 1, World()) == 5, "one process without accumulation: micro-batch k is step k"


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(two_processes, tmp_path):
    main([*TINY, "--grad-accum", "2", "--out", str(tmp_path / "one")])
    ddp, ddp_meta = state(two_processes)
    one, one_meta = state(tmp_path / "one")
    assert ddp_meta["world_size"] == 2 and one_meta["world_size"] == 1
    for name, value in one.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # The gradient norm is that of the averaged gradient: a sum over the ranks would double it.
    for ours, theirs in zip(ddp_meta["history"], one_meta["history"], strict=True):
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    metrics = json.loads((two_processes / "metrics.json").read_text())
    assert metrics["speed"]["world_size"] == 2 and metrics["speed"]["global_batch"] == 4


@pytest.mark.slow
def test_a_two_process_resume_is_bit_exact(two_processes, tmp_path):
    torchrun(tmp_path / "split", "--steps", "2")
    torchrun(tmp_path / "split")
    straight, straight_meta = state(two_processes)
    resumed, resumed_meta = state(tmp_path / "split")
    assert resumed_meta["step"] == straight_meta["step"] == 4
    assert set(resumed) == set(straight)
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name
    timeless = [{k: v for k, v in m["history"][-1].items() if k != "seconds"} for m in (resumed_meta, straight_meta)]
    assert timeless[0] == timeless[1]


def toy_trainer(out, **overrides):
    from torch import nn

    from pwn_lib.config import TrainConfig
    from pwn_lib.trainer import Trainer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    cfg = TrainConfig(
        **{"steps": 3, "batch_size": 2, "lr_warmup": 0, "log_every": 1, "checkpoint_every": 3, **overrides}
    )

    def loss_fn(m, batch):
        return ((m(batch["x"]) - batch["y"]) ** 2).mean(), {}

    return Trainer(model, loss_fn, cfg, out, model_config={}, kind="toy")


class Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.randn(3, generator=torch.Generator().manual_seed(i))
        return {"x": x, "y": x.sum(0, keepdim=True)}


def test_fp16_trains_with_a_grad_scaler_whose_state_resumes(tmp_path):
    t = toy_trainer(tmp_path, fp16=True)
    t.fit(Pairs(), progress=False)
    assert t.scaler.is_enabled()
    t.scaler.update(new_scale=1024.0)  # as if fp16 gradients had overflowed a few times
    t.save()
    _, meta = state(tmp_path)
    assert meta["scaler"]["scale"] == 1024.0
    fresh = toy_trainer(tmp_path, fp16=True)
    assert fresh.scaler.get_scale() != 1024.0
    assert fresh.resume() and fresh.scaler.get_scale() == 1024.0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["speed"]["fp16"] and not metrics["speed"]["bf16"]


def test_bf16_on_a_cpu_without_native_bf16_warns_and_names_the_fix(tmp_path, monkeypatch):
    import pwn_lib.trainer

    monkeypatch.setattr(pwn_lib.trainer, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bf16.*--fp32"):
        toy_trainer(tmp_path, bf16=True)
    monkeypatch.setattr(pwn_lib.trainer, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy_trainer(tmp_path / "native", bf16=True)
        toy_trainer(tmp_path / "fp32")


def test_bf16_and_fp16_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        toy_trainer(tmp_path, fp16=True, bf16=True)


def test_the_students_frozen_teacher_is_not_part_of_the_trained_module():
    from pwn_lib.config import DistillLoss, TrainConfig
    from pwn_lib.losses import student_loss
    from pwn_lib.student import build_student
    from pwn_lib.trainer import Trainer
    from pwn_lib.wavenet import build_teacher

    teacher = build_teacher("tiny", log_mel_mean=-5.0, log_mel_std=2.0).requires_grad_(False)
    student = build_student("tiny", log_mel_mean=-5.0, log_mel_std=2.0)
    t = Trainer(student, student_loss(teacher, DistillLoss()), TrainConfig(), None, model_config={}, kind="student")
    assert {id(p) for p in t.objective.parameters()} == {id(p) for p in student.parameters()}

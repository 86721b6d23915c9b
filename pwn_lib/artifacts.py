"""Shipped artifacts: ``model.safetensors`` + ``config.json`` + ``metrics.json``, written atomically.

Every file goes through a temporary sibling, ``fsync`` and ``os.replace`` (then its folder is fsynced), so a crash,
a power cut or a full disk never leaves a half-written checkpoint or ratings file behind, nor a temporary one.

A training checkpoint is several files (the artifact and the resume state), and a process killed between
two of them must not leave a mix of two steps. :func:`commit_checkpoint` therefore writes all of them into
a fresh directory ``ckpt-<step>-<n>``, renames it into place, and only then swaps the one-line pointer file
``LATEST`` (atomically, with ``os.replace``); the checkpoint before it is kept, so a damaged one can be stepped over
(:func:`resume_candidates`), and older ones are deleted after the swap. Whatever moment a SIGKILL hits, ``LATEST``
names a complete checkpoint (notebook 08). A training run holds :func:`lock_run` on its folder for its whole life,
and temporary files of dead runs are swept away (:func:`sweep_stale`).

Loading refuses, with a :class:`CheckpointError` naming the file and key, what would load wrong or hang: a
``LATEST`` naming anything but a ``ckpt-*`` folder of its own run, cut or corrupt JSON, a model config out of
range (:func:`pwn_lib.config.check_model_config`) or larger than the machine's memory allows or than its weights
hold (estimated from the config before any model is built), and NaN or infinite weights.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
POINTER, CHECKPOINT_PREFIX, LOCK = "LATEST", "ckpt-", ".lock"
# The temporary names this module writes, each ending in the writer's pid: a checkpoint being written
# (.ckpt-tmp-<pid>), a file being replaced (.<name>.tmp-<pid>) and an artifact file being linked (.<name>.link-<pid>).
TEMPORARY = re.compile(r"^\.(?:ckpt-tmp|.+\.tmp|.+\.link)-(\d+)$")
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that would load wrong or not at all; the message names the file, the key and what to do."""


class RunLocked(RuntimeError):
    """Another live process is training into the same folder; the message names the folder and its pid."""


def fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries (names created, renamed or deleted in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary sibling, fsync and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically write a flat dict of tensors as safetensors (contiguous CPU copies)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(cpu, str(tmp)))


def save_artifact(directory: Path, state: dict[str, torch.Tensor], config: dict, metrics: dict) -> Path:
    """Ship a model: ``model.safetensors`` + ``config.json`` + ``metrics.json`` in ``directory``."""
    directory = Path(directory)
    write_tensors(directory / WEIGHTS, state)
    write_json(directory / CONFIG, config)
    write_json(directory / METRICS, metrics)
    return directory


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint that ``directory/LATEST`` names, or None when there is no pointer.

    LATEST may only name a ``ckpt-*`` folder directly inside ``directory`` (no path, no link out of it)."""
    directory = Path(directory)
    pointer = directory / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(errors="replace").strip()
    target = directory / name
    if (
        Path(name).name != name
        or not name.startswith(CHECKPOINT_PREFIX)
        or target.resolve().parent != directory.resolve()
    ):
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a {CHECKPOINT_PREFIX}* folder inside {directory}; LATEST may "
            "only name a checkpoint of its own run. Delete LATEST to load the run's flat files, or write the name "
            f"of one of its {CHECKPOINT_PREFIX}* folders into it"
        )
    if not target.is_dir():
        raise FileNotFoundError(
            f"{pointer} names {target.name}, which does not exist; the run directory was edited "
            "by hand; delete LATEST to start from the flat files"
        )
    return target


def checkpoints(directory: Path) -> list[Path]:
    """The ``ckpt-<step>-<n>`` folders in ``directory``, newest (highest step, then n) first."""
    found = []
    for path in Path(directory).iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir():
            found.append(((int(match[1]), int(match[2])), path))
    return [path for _, path in sorted(found, reverse=True)]


def resume_candidates(directory: Path) -> list[Path]:
    """The checkpoints a run may resume from, in order: the one ``LATEST`` names, then the older ones, newest
    first (a kill or a disk error may have damaged the latest); empty without ``LATEST``."""
    latest = latest_checkpoint(directory)
    if latest is None:
        return []
    older = checkpoints(directory)
    return [latest, *older[older.index(latest) + 1 :]] if latest in older else [latest]


def point_to(directory: Path, checkpoint: Path) -> None:
    """Make ``LATEST`` name ``checkpoint`` (atomically) and publish its artifact files in ``directory``."""
    _atomic(Path(directory) / POINTER, lambda t: t.write_text(Path(checkpoint).name + "\n"))
    publish(checkpoint, directory)


def commit_checkpoint(directory: Path, step: int, write: Callable[[Path], None]) -> Path:
    """Write a multi-file checkpoint with ``write(fresh_dir)``, then make it the one ``LATEST`` names.

    Order: write into ``.ckpt-tmp-<pid>`` and fsync it, rename it to ``ckpt-<step>-<n>``, swap ``LATEST`` with
    ``os.replace``, delete every checkpoint directory but this one and the one ``LATEST`` named before, then
    hard-link the artifact's three files into ``directory`` itself for the tools that read a flat checkpoint.
    A kill before the swap leaves the previous checkpoint current; a kill after it leaves the new one current.
    A failed write (a full disk) removes its temporary directory and re-raises. Returns the new checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sweep_stale(directory)
    tmp = directory / f".{CHECKPOINT_PREFIX}tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        write(tmp)
        for folder in (*(p for p in tmp.rglob("*") if p.is_dir()), tmp):
            fsync(folder)
        final = next(
            directory / f"{CHECKPOINT_PREFIX}{step:08d}-{n}"
            for n in itertools.count()
            if not (directory / f"{CHECKPOINT_PREFIX}{step:08d}-{n}").exists()
        )
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync(directory)
    previous = None
    with contextlib.suppress(CheckpointError, FileNotFoundError):  # a LATEST edited by hand is replaced
        previous = latest_checkpoint(directory)
    _atomic(directory / POINTER, lambda t: t.write_text(final.name + "\n"))
    for old in checkpoints(directory):
        if old not in (final, previous):
            shutil.rmtree(old, ignore_errors=True)
    publish(final, directory)
    return final


def publish(checkpoint: Path, directory: Path) -> None:
    """Hard-link (or copy) a checkpoint's artifact files into ``directory``, each replaced atomically; files
    already linked to the checkpoint are left as they are (a resume republishes its checkpoint)."""
    for name in (WEIGHTS, CONFIG, METRICS):
        source, target, tmp = checkpoint / name, directory / name, directory / f".{name}.link-{os.getpid()}"
        if not source.is_file() or (target.is_file() and os.path.samefile(source, target)):
            continue
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(source, tmp)
            except OSError:  # another file system, or one without hard links
                shutil.copy2(source, tmp)
                fsync(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    fsync(directory)


def _alive(pid: int) -> bool:
    """Whether another process with this pid runs (this process's own leftovers count as dead)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(directory: Path) -> list[str]:
    """Delete the temporary files and folders (:data:`TEMPORARY`) that runs killed mid-write left in ``directory``;
    those of live processes are kept. Returns the names deleted."""
    swept = []
    for entry in Path(directory).iterdir():
        match = TEMPORARY.match(entry.name)
        if match is None or _alive(int(match[1])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        swept.append(entry.name)
    return swept


@contextlib.contextmanager
def lock_run(directory: Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run folder (``fcntl.flock`` on ``directory/.lock``, which records the holder's
    pid) while the ``with`` block runs; raise :class:`RunLocked` at once if another process holds it. The lock
    dies with its process, so a killed run never leaves its folder locked. Stale temporary files are swept first.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(
                f"{directory} is in use by another training run (pid {holder}, lock file {path}); wait for it to "
                "end or stop it, or train into another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        sweep_stale(directory)
        yield directory
    finally:
        os.close(fd)


def load_artifact(
    directory: Path, check: Callable[[Any, Path, Path], None] | None = None
) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read what :func:`save_artifact` wrote (in a training run, the checkpoint ``LATEST`` names); a clear
    error says which file is missing or wrong and why (:class:`CheckpointError`).

    ``check(model_config, config_path, weights_path)``, when given, runs on the range-checked model config before
    the weights are read: the models pass :func:`pwn_lib.sizes.check_fits` (memory and weights bounds)."""
    directory = latest_checkpoint(directory) or Path(directory)
    missing = [name for name in (WEIGHTS, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a pwn_lib checkpoint: missing {missing}. Train one with "
            "`python -m pwn_lib.train teacher|student --out DIR` or point at data/checkpoints/<name>."
        )
    config = read_json(directory / CONFIG)
    metrics = read_json(directory / METRICS) if (directory / METRICS).is_file() else {}
    model = _checked_model_config(config, directory / CONFIG)
    if model is not None and check is not None:
        check(model, directory / CONFIG, directory / WEIGHTS)
    return read_weights(directory / WEIGHTS), config, metrics


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(
            f"{path}: not valid JSON ({err}); the file is cut or corrupt. Restore it from the run's other "
            "checkpoint or a backup, or point at data/checkpoints/<name>"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not an object; restore the file")
    return data


def _checked_model_config(config: dict, path: Path) -> Any:
    """The teacher's or student's model config of ``config.json`` (None for other kinds), range-checked."""
    from pwn_lib.config import StudentConfig, WaveNetConfig, check_model_config, from_dict

    cls = {"teacher": WaveNetConfig, "student": StudentConfig}.get(config.get("kind"))
    if cls is None:
        return None
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: 'model' is missing or not an object; restore the file")
    try:
        model = from_dict(cls, config["model"], "model")
        check_model_config(model, where="model")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}. Fix the value, or restore the file") from None
    return model


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights that do not fit the model their config describes: missing or extra tensors, other shapes,
    or integers where the model holds floating-point values (half precision is accepted and widened)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = {
        k: (list(state[k].shape), list(v.shape))
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    }
    kinds = sorted(
        k for k, v in expected.items() if k in state and state[k].is_floating_point() != v.is_floating_point()
    )
    if missing or extra or shapes or kinds:
        found = {
            "missing": missing[:3],
            "extra": extra[:3],
            "shape (stored, config)": dict(list(shapes.items())[:3]),
            "dtype": kinds[:3],
        }
        raise CheckpointError(
            f"{path}: the weights do not fit the model its config.json describes "
            f"({', '.join(f'{name} {value}' for name, value in found.items() if value)}); "
            "the weights and the config do not belong together: restore the pair saved together"
        )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights, refused when unreadable or when any floating-point tensor holds NaN or infinity."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); restore it") from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:3]}; the training run diverged "
            "before it was saved. Load an earlier checkpoint, or train again with a lower learning rate"
        )
    return state


def read_config(directory: Path) -> dict:
    """A checkpoint's ``config.json`` alone, without its weights (in a run folder, the checkpoint LATEST names)."""
    path = (latest_checkpoint(directory) or Path(directory)) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing, so {directory} is not a pwn_lib checkpoint; point at data/checkpoints/<name>"
        )
    return read_json(path)


def checkpoint_config(kind: str, model: Any, audio: Any, train: Any | None = None, **extra: Any) -> dict:
    """The ``config.json`` of a checkpoint: its kind, model config, AudioConfig and (if trained) TrainConfig."""
    from pwn_lib.config import to_dict

    config = {"kind": kind, "model": to_dict(model), "audio": to_dict(audio), **extra}
    if train is not None:
        config["train"] = to_dict(train)
    return config


def config_section(config: dict, name: str, directory: Path) -> dict:
    """``config[name]`` of the checkpoint in ``directory``; a clear error when its config.json lacks the section."""
    if name not in config:
        raise KeyError(
            f"{Path(directory) / CONFIG} has no {name!r} section (it has {sorted(config)}); it was not written by "
            "this version of pwn_lib: retrain it, or add the section as save_artifact writes it"
        )
    return config[name]


class Checkpointed:
    """``from_checkpoint`` and ``save`` for a model class built from one config dataclass (teacher, student).

    Subclasses set ``checkpoint_kind`` (the ``kind`` in config.json) and ``config_class``; the model keeps its
    config in ``self.cfg`` and, once loaded, its AudioConfig in ``self.audio``.
    """

    checkpoint_kind: str
    config_class: type

    @classmethod
    def from_checkpoint(cls, directory: Path, device: torch.device | str = "cpu") -> Any:
        """A shipped or trained model (its EMA weights) in eval mode; ``.audio`` is its AudioConfig."""
        from pwn_lib.config import AudioConfig, from_dict

        state, config, _ = load_artifact(directory, check=getattr(cls, "check_fits", None))
        where = Path(directory) / CONFIG
        if config.get("kind") != cls.checkpoint_kind:
            raise CheckpointError(
                f"{where}: kind {config.get('kind')!r}, but a {cls.checkpoint_kind} checkpoint is needed here; "
                f"point at a {cls.checkpoint_kind} checkpoint (e.g. data/checkpoints/{cls.checkpoint_kind}_course)"
            )
        model = cls(from_dict(cls.config_class, config_section(config, "model", directory), f"{where}: model"))
        check_state(state, model.state_dict(), Path(directory) / WEIGHTS)
        model.load_state_dict(state)
        model.audio = from_dict(AudioConfig, config_section(config, "audio", directory), f"{where}: audio")
        return model.to(device).eval()

    def save(self, directory: Path, metrics: dict | None = None, audio: Any | None = None) -> Path:
        """Write the model as a checkpoint that :meth:`from_checkpoint` reads."""
        from pwn_lib.config import AUDIO_PRESETS

        audio = audio or getattr(self, "audio", AUDIO_PRESETS["course"])
        return save_artifact(
            directory, self.state_dict(), checkpoint_config(self.checkpoint_kind, self.cfg, audio), metrics or {}
        )

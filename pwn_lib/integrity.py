"""Shipped data checked against the hashes its manifest records, every time it is read, cheaply.

The embedded corpus (``data/corpus/manifest.json``) and a feature cache (its ``manifest.json``) record the
SHA-256 of every file. :func:`require_intact` compares the files with them when they are loaded: the size on
every call (where the manifest records it), the full SHA-256 once per version of a file. A file's digest is
remembered in ``SCRATCH_DIR/verified_sha256.json`` under its resolved path, with its size and modification
time; a file whose size or modification time changed is hashed again. So a corpus load pays one ``stat`` per
file, and only the first load after a change reads the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pwn_lib import config

HASH_CACHE = "verified_sha256.json"
SHOWN = 5  # problems listed in an error message; the rest are counted


class IntegrityError(ValueError):
    """Shipped data that differs from its manifest; the message names the files, the manifest and the fix."""


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_file() -> Path:
    return config.SCRATCH_DIR / HASH_CACHE


def _read_cache() -> dict[str, dict]:
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):  # no cache yet, or a damaged one: every file is hashed again
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(cache: dict[str, dict]) -> None:
    """Keep the digests of files that still exist; a cache that cannot be written only costs hashing again."""
    from pwn_lib.artifacts import write_json

    kept = {path: entry for path, entry in cache.items() if os.path.exists(path)}
    try:
        write_json(_cache_file(), kept)
    except OSError:
        pass


def mismatches(root: Path, expected: dict[str, dict], cached: bool = True) -> dict[str, str]:
    """What is wrong with each file ``root / name`` against ``expected[name]`` (``"sha256"``, optional ``"bytes"``).

    Returns ``{name: reason}``, empty when every file matches. ``cached=False`` hashes every file again.
    """
    cache = _read_cache() if cached else {}
    problems, changed = {}, False
    for name, entry in expected.items():
        path = Path(root) / name
        try:
            stat = path.stat()
        except OSError:
            problems[name] = "missing"
            continue
        if entry.get("bytes") is not None and stat.st_size != entry["bytes"]:
            problems[name] = f"{stat.st_size} bytes, the manifest records {entry['bytes']}"
            continue
        key, version = str(path.resolve()), {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        known = cache.get(key)
        if not known or {k: known.get(k) for k in version} != version:
            cache[key], changed = {**version, "sha256": sha256(path)}, True
        if cache[key]["sha256"] != entry["sha256"]:
            problems[name] = "its SHA-256 differs from the manifest's (the file was changed)"
    if cached and changed:
        _write_cache(cache)
    return problems


def require_intact(root: Path, expected: dict[str, dict], manifest: Path, fix: str) -> None:
    """Raise :class:`IntegrityError` naming the files under ``root`` that differ from ``manifest``, and ``fix``."""
    problems = mismatches(root, expected)
    if problems:
        shown = [f"{name}: {reason}" for name, reason in list(problems.items())[:SHOWN]]
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise IntegrityError(
            f"{len(problems)} file(s) under {root} do not match {manifest}: " + "; ".join(shown) + f"{more}. {fix}"
        )


__all__ = ["HASH_CACHE", "IntegrityError", "mismatches", "require_intact", "sha256"]

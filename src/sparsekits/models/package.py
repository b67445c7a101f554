"""Model packages: one zip file that carries a model folder to another machine (an offline site
has no other way in), and the installed models that ``--model NAME`` finds.

```
FILE.zip/package.json             format version, sparsekits version, method, fingerprint,
                                  and the SHA-256 of every other member
FILE.zip/<path>                   the model folder's files at their paths in it
$SPARSEKITS_HOME/models/<NAME>/   an installed package: those files and its package.json
```

``export_model`` writes a package, ``install_model`` checks one (its format version, each
member's name and SHA-256) and unpacks it whole or not at all, ``installed_models`` lists what is
installed and ``resolve_model`` turns ``--model``'s text into a folder: a path that exists wins,
else an installed model of that name.

The model modules (``bundle``, which imports torch) load inside the functions that need them,
so that listing models and resolving a name stay instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sparsekits import __version__
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_folder, atomic_path, is_temporary, remove_stale_temporaries

if TYPE_CHECKING:
    from sparsekits.plan import Plan

# The layout of a package and of its package.json. Raise it when a change means an older
# sparsekits would misread a package; it reads the formats in READABLE_FORMATS.
PACKAGE_FORMAT = 1
READABLE_FORMATS = (1,)
MANIFEST = "package.json"

# Where installed models live: $SPARSEKITS_HOME/models/NAME (one place says so).
HOME_VARIABLE = "SPARSEKITS_HOME"
DEFAULT_HOME = "~/.sparsekits"
MODELS_FOLDER = "models"

# An installed model's name is a plain folder name: no separator, no "..", not hidden (the
# temporaries of an install are hidden names in the same folder).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20  # files are hashed and copied a MiB at a time: weights can be gigabytes


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    method: str
    sparsekits_version: str  # the version that exported the package
    size_bytes: int


def sparsekits_home() -> Path:
    """``$SPARSEKITS_HOME``, else ``~/.sparsekits``."""
    return Path(os.environ.get(HOME_VARIABLE) or DEFAULT_HOME).expanduser()


def models_root() -> Path:
    return sparsekits_home() / MODELS_FOLDER


# --- export -------------------------------------------------------------------------------


def export_model(model: str | Path, out: str | Path) -> dict:
    """Write the model folder ``model`` as the package ``out`` (atomically); return its
    package.json. A folder that is not a model is refused (InputError)."""
    from sparsekits.models.bundle import read_plan

    model, out = Path(model), Path(out)
    plan = read_plan(model)  # refuses what is not a model folder, before anything is written
    if out.is_dir():
        raise InputError(out, "is a folder; give a file name such as model.zip")
    names = _model_files(model, out)
    manifest = {
        "format": PACKAGE_FORMAT,
        "sparsekits_version": __version__,
        "method": plan.method,
        "fingerprint": _fingerprint(model, plan),
        "files": {},
    }
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            manifest["files"][name] = _add_file(archive, model / name, name)
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _model_files(model: Path, out: Path) -> list[str]:
    """The model folder's files as package member names (POSIX paths), sorted. Left out: the
    temporaries of a write in progress, the package being written, and an installed model's own
    package.json (the new package gets a new one)."""
    skip = {out.resolve(), (model / MANIFEST).resolve()}
    return sorted(
        path.relative_to(model).as_posix()
        for path in model.rglob("*")
        if path.is_file() and not is_temporary(path) and path.resolve() not in skip
    )


def _fingerprint(model: Path, plan: Plan) -> str | None:
    """The fingerprint that predict records for this model with all its folds (``NAME.json``),
    so that a report can be traced to a package; None when a stage has no fold (such a model
    cannot predict, and a fingerprint of part of it would match no report)."""
    from sparsekits.models.bundle import available_folds, model_fingerprint

    folds = {role: available_folds(model, plan, role) for role in plan.roles}
    if not all(folds.values()):
        return None
    return model_fingerprint(model, plan, folds)


def _add_file(archive: zipfile.ZipFile, path: Path, name: str) -> str:
    """Copy ``path`` into ``archive`` as ``name``, hashing it on the way (one read); its SHA-256."""
    info = zipfile.ZipInfo.from_file(path, name)  # keeps the file's date
    info.compress_type = zipfile.ZIP_DEFLATED
    digest = hashlib.sha256()
    with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as target:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
            target.write(chunk)
    return digest.hexdigest()


# --- install ------------------------------------------------------------------------------


def install_model(package: str | Path, name: str | None = None, force: bool = False) -> Path:
    """Check the package ``package`` and unpack it into ``models_root()/NAME`` (default name: the
    file's stem), whole or not at all; return that folder. Refused (InputError, nothing written):
    a format this sparsekits cannot read, a member whose name leads out of the folder or whose
    SHA-256 differs from package.json's, files that are not a model, an existing NAME without
    ``force``."""
    package = Path(package)
    name = _install_name(package, name)
    target = models_root() / name
    if target.exists() and not force:
        raise InputError(target, "is already installed; give --force to replace it")
    with _open_package(package) as archive:
        manifest = read_manifest(archive, package)
        _check_members(archive, manifest, package)
        remove_stale_temporaries(models_root())  # a killed install's half-written folder
        with atomic_folder(target) as folder:
            for member, expected in manifest["files"].items():
                _extract(archive, member, folder, expected, package)
            (folder / MANIFEST).write_bytes(archive.read(MANIFEST))
            _check_model(folder, manifest, package)
    return target


def _install_name(package: Path, name: str | None) -> str:
    name = package.stem if name is None else name
    if not _NAME.match(name):
        raise InputError(name, "is not a model name: letters, digits and . _ + - (give --name)")
    return name


def _open_package(package: Path) -> zipfile.ZipFile:
    if not package.is_file():
        raise InputError(package, "no such file")
    try:
        return zipfile.ZipFile(package)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(package, f"not a zip file ({error})") from error


def read_manifest(archive: zipfile.ZipFile, package: Path) -> dict:
    """The package's package.json, checked: a format this sparsekits reads and one SHA-256 per
    file. A newer format says which sparsekits wrote it: upgrading is the remedy."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError as error:
        raise InputError(package, f"not a sparsekits model package (no {MANIFEST})") from error
    except (ValueError, zipfile.BadZipFile) as error:
        raise InputError(package, f"its {MANIFEST} cannot be read ({error})") from error
    if not isinstance(manifest, dict):
        raise InputError(package, f"its {MANIFEST} is not an object")
    version = manifest.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(package, f"its {MANIFEST} has no package format version")
    if version > PACKAGE_FORMAT:
        writer = manifest.get("sparsekits_version", "a newer version")
        raise InputError(
            package,
            f"package format {version} is newer than this sparsekits {__version__} reads "
            f"(format {PACKAGE_FORMAT}); it was written by sparsekits {writer}: upgrade sparsekits",
        )
    if version not in READABLE_FORMATS:
        readable = ", ".join(map(str, READABLE_FORMATS))
        problem = f"package format {version} is not one this sparsekits reads ({readable})"
        raise InputError(package, problem)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(digest, str) and _SHA256.match(digest) for digest in files.values()
    ):
        raise InputError(package, f"its {MANIFEST} has no SHA-256 for each file")
    return manifest


def _check_members(archive: zipfile.ZipFile, manifest: dict, package: Path) -> None:
    """Every member's name stays inside the folder (zip-slip), none is there twice, and the
    members are exactly the files package.json vouches for."""
    names = archive.namelist()
    for name in [*names, *manifest["files"]]:
        if not _safe_member(name):
            raise InputError(
                package, f"member {name!r} would be written outside the model folder; refused"
            )
    files = [name for name in names if not name.endswith("/") and name != MANIFEST]
    if len(set(names)) != len(names):
        raise InputError(package, "a member name is there twice; refused")
    unlisted = sorted(set(files) - set(manifest["files"]))
    if unlisted:
        raise InputError(package, f"member {unlisted[0]!r} has no checksum in {MANIFEST}")
    missing = sorted(set(manifest["files"]) - set(files))
    if missing:
        raise InputError(package, f"{MANIFEST} lists {missing[0]!r}, which the zip lacks")


def _safe_member(name: str) -> bool:
    """A relative POSIX path without ``..``: not absolute (``/x``, ``C:x``), no backslash (a
    separator on Windows), nothing that climbs out of the folder it is unpacked into."""
    path = PurePosixPath(name)
    return bool(
        name
        and "\\" not in name
        and not path.is_absolute()
        and not re.match(r"^[A-Za-z]:", name)
        and ".." not in path.parts
    )


def _extract(
    archive: zipfile.ZipFile, member: str, folder: Path, expected: str, package: Path
) -> None:
    """Unpack ``member`` into ``folder``, hashing it on the way; InputError when its SHA-256 is
    not package.json's (a changed or damaged file)."""
    target = folder / member
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with archive.open(member) as source, target.open("wb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError) as error:
        raise InputError(package, f"member {member!r} cannot be read ({error})") from error
    if digest.hexdigest() != expected:
        raise InputError(
            package, f"member {member!r}: SHA-256 differs from {MANIFEST}'s (changed or damaged)"
        )


def _check_model(folder: Path, manifest: dict, package: Path) -> None:
    """The unpacked files are a model folder of the method package.json names."""
    from sparsekits.models.bundle import read_plan

    try:
        plan = read_plan(folder)
    except InputError as error:
        raise InputError(package, f"holds no model folder ({error.problem})") from error
    if plan.method != manifest.get("method"):
        problem = f"holds a {plan.method} model, but its {MANIFEST} says {manifest.get('method')}"
        raise InputError(package, problem)


# --- installed models -----------------------------------------------------------------------


def _installed_folders() -> Iterator[Path]:
    root = models_root()
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))


def installed_models() -> list[InstalledModel]:
    """The models under ``models_root()``, by name."""
    return [_installed(folder) for folder in _installed_folders()]


def _installed(folder: Path) -> InstalledModel:
    """What package.json says of an installed model ("unknown" where it cannot be read: a folder
    put there by hand is listed, not refused)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return InstalledModel(
        name=folder.name,
        path=folder,
        method=str(manifest.get("method", "unknown")),
        sparsekits_version=str(manifest.get("sparsekits_version", "unknown")),
        size_bytes=size,
    )


def listing(models: list[InstalledModel]) -> list[str]:
    """``model list``'s lines: a header and one aligned row per model."""
    rows = [("NAME", "METHOD", "SPARSEKITS", "SIZE")]
    rows += [(m.name, m.method, m.sparsekits_version, human_size(m.size_bytes)) for m in models]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return [
        "  ".join([*(text.ljust(width) for text, width in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]


def human_size(size: int) -> str:
    """Bytes in decimal units (as disks and downloads count them)."""
    if size < 1000:
        return f"{size} B"
    scaled, unit = size / 1000, "KB"
    for larger in ("MB", "GB"):
        if scaled < 1000:
            break
        scaled, unit = scaled / 1000, larger
    return f"{scaled:.1f} {unit}"


def resolve_model(text: str | Path) -> Path:
    """``--model``'s folder: a path that exists wins, else the installed model of that name;
    else InputError, one line that lists what is installed."""
    path = Path(text)
    if path.exists():
        return path
    installed = models_root() / str(text)
    if _NAME.match(str(text)) and installed.is_dir():
        return installed
    names = ", ".join(folder.name for folder in _installed_folders()) or "none"
    raise InputError(
        text,
        f"no such model folder, nor an installed model of that name (installed in "
        f"{models_root()}: {names})",
    )

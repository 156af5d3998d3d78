"""Image sources: `docker save` tarballs (read without a Docker daemon), references, and the
cache of converted images.

The image ID comes from the tarball's manifest (the config digest), so distribution can skip a
node that already holds exactly that image, whatever its tags say.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import tarfile
from dataclasses import dataclass

from .errors import SpecError

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class TarballImage:
    path: str
    image_id: str  # "sha256:<hex>"
    repo_tags: tuple[str, ...]
    compressed: bool
    size: int


def check_tarball(path: str) -> None:
    """Cheap validation at spec time: the file exists and looks like a `docker save` archive."""
    if not os.path.isfile(path):
        raise SpecError("image", f"tarball not found: {path}",
                        "check the path, or create it with `docker save IMAGE -o FILE.tar`")
    if not os.access(path, os.R_OK):
        raise SpecError("image", f"tarball not readable: {path}", "fix its permissions")
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
    if compressed:
        _check_gzip_head(path)
    else:
        read_tarball(path)


def _check_gzip_head(path: str) -> None:
    """A .tar.gz is validated by its first member only: reading the whole stream is slow."""
    try:
        with gzip.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            first = tar.next()
    except (OSError, EOFError, tarfile.TarError):
        raise SpecError("image", f"{path} is not a valid gzip-compressed tar archive",
                        "re-create it with `docker save IMAGE | gzip > FILE.tar.gz`") from None
    if first is None or not _looks_like_docker_save(first.name):
        raise SpecError("image", f"{path} is a tar.gz but not a `docker save` archive",
                        "create it with `docker save IMAGE | gzip > FILE.tar.gz`")


def _looks_like_docker_save(member: str) -> bool:
    top = member.lstrip("./").split("/", 1)[0]
    return top in ("blobs", "index.json", "manifest.json", "oci-layout", "repositories") or (
        len(top) >= 64 and all(c in "0123456789abcdef" for c in top[:64])
    )


def read_tarball(path: str) -> TarballImage:
    """Image ID and tags from a tarball's manifest.json (streams .tar.gz; seeks in .tar).

    Every member is read up to the manifest, so a truncated file or one missing a layer the
    manifest names fails here, before any node is touched. Read once per process while the
    file stays the same (spec validation and preflight share the result).
    """
    st = os.stat(path)
    return _read_tarball(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_tarball(path: str, _size: int, _mtime: int) -> TarballImage:
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
    fix = "re-create it with `docker save IMAGE -o FILE.tar`"
    try:
        if compressed:
            with gzip.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                manifest, names = _find_manifest(tar)
        else:
            with tarfile.open(path, mode="r:") as tar:
                manifest, names = _find_manifest(tar)
    except (OSError, EOFError, tarfile.TarError, json.JSONDecodeError) as exc:
        why = str(exc) or type(exc).__name__
        what = "truncated" if isinstance(exc, EOFError) or "end of data" in why else "corrupt"
        raise SpecError("image", f"{path} is {what}: reading it as a `docker save` archive "
                        f"failed ({why})", fix) from None
    if manifest is None:
        raise SpecError("image", f"{path} has no manifest.json: it is truncated, or not a "
                        "`docker save` archive", fix)
    if not isinstance(manifest, list) or len(manifest) != 1 or "Config" not in manifest[0]:
        raise SpecError("image", f"{path} must hold exactly one image",
                        "save one image per tarball: `docker save IMAGE -o FILE.tar`")
    entry = manifest[0]
    absent = [m for m in [entry["Config"], *(entry.get("Layers") or [])] if m not in names]
    if absent:
        raise SpecError("image", f"{path} is incomplete: its manifest names {absent[0]}, which "
                        "the archive does not hold", fix)
    digest = os.path.basename(entry["Config"]).removesuffix(".json")
    return TarballImage(
        path=os.path.abspath(path),
        image_id=f"sha256:{digest}",
        repo_tags=tuple(entry.get("RepoTags") or ()),
        compressed=compressed,
        size=os.path.getsize(path),
    )


def _find_manifest(tar: tarfile.TarFile) -> tuple[object | None, set[str]]:
    """The parsed manifest.json, and the names of every member up to and including it."""
    names: set[str] = set()
    for member in tar:
        name = member.name.removeprefix("./")
        names.add(name)
        if name == "manifest.json":
            fh = tar.extractfile(member)
            if fh is None:
                return None, names
            manifest = json.loads(fh.read())
            names.update(m.name.removeprefix("./") for m in tar)  # the rest, e.g. OCI blobs
            return manifest, names
    return None, names


def default_cache_dir() -> str:
    """Where converted images (.sqsh, .sif) are kept, by image ID: the user's cache, which a
    cluster's shared home makes visible on every node (--image-cache chooses another)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "slurmserve", "images")

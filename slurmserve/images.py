"""Docker image sources: `docker save` tarballs (read without a Docker daemon) and references.

The image ID comes from the tarball's manifest (the config digest), so distribution can skip a
node that already holds exactly that image, whatever its tags say.
"""

from __future__ import annotations

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
    """Image ID and tags from a tarball's manifest.json (streams .tar.gz; seeks in .tar)."""
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
    try:
        if compressed:
            with gzip.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                manifest = _find_manifest(tar)
        else:
            with tarfile.open(path, mode="r:") as tar:
                manifest = _find_manifest(tar)
    except (OSError, EOFError, tarfile.TarError, json.JSONDecodeError):
        raise SpecError("image", f"{path} is not a readable `docker save` archive",
                        "re-create it with `docker save IMAGE -o FILE.tar`") from None
    if manifest is None:
        raise SpecError("image", f"{path} has no manifest.json, so it is not a `docker save` "
                        "archive", "create it with `docker save IMAGE -o FILE.tar`")
    if not isinstance(manifest, list) or len(manifest) != 1 or "Config" not in manifest[0]:
        raise SpecError("image", f"{path} must hold exactly one image",
                        "save one image per tarball: `docker save IMAGE -o FILE.tar`")
    entry = manifest[0]
    digest = os.path.basename(entry["Config"]).removesuffix(".json")
    return TarballImage(
        path=os.path.abspath(path),
        image_id=f"sha256:{digest}",
        repo_tags=tuple(entry.get("RepoTags") or ()),
        compressed=compressed,
        size=os.path.getsize(path),
    )


def _find_manifest(tar: tarfile.TarFile) -> object | None:
    for member in tar:
        if member.name.lstrip("./") == "manifest.json":
            fh = tar.extractfile(member)
            return None if fh is None else json.loads(fh.read())
    return None

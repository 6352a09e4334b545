"""Files: the one place for atomic writes, the cache folder, sha256 checks and verified downloads.

The lowest layer with ``device.py`` (no torch, no other cnnkit module): checkpoints, run directories,
plots, datasets and downloaded weights all write through :func:`atomic_write`, so a crash, a full
disk or a Ctrl-C never leaves a half-written file where a good one was, and written files get the
mode the umask gives (the temporary is created 0600).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import urllib.request
from collections.abc import Callable
from pathlib import Path

#: the environment variable naming cnnkit's cache folder (default ``~/.cache/cnnkit``)
CACHE_VARIABLE = "CNNKIT_CACHE"


def cache_dir(kind: str = "") -> Path:
    """``$CNNKIT_CACHE/KIND`` or ``~/.cache/cnnkit/KIND``: where downloads are kept."""
    root = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "cnnkit"
    return Path(root) / kind if kind else Path(root)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` keeps what it held."""
    path = Path(path)
    # The name is drawn here and the file created inside the try, so that a Ctrl-C the moment it
    # exists still removes it: with tempfile.mkstemp, a KeyboardInterrupt between its return and
    # the try left the file behind (the kill test caught one in a metrics write). 128 random bits:
    # a name taken by another writer is not a case to handle (mkstemp draws about 41 and retries).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(16)}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, actual: str | None = None) -> None:
    """Raise ``ValueError`` unless the file's sha256 (or ``actual``) starts with ``expected`` (a full
    digest or a prefix, as torchvision's file names carry)."""
    actual = actual or sha256_file(path)
    if not actual.startswith(expected.lower()):
        raise ValueError(
            f"{path}: sha256 is {actual}, expected {expected}; the file is corrupt or not the one asked for"
        )


def _urlopen(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:  # noqa: S310
        while chunk := response.read(1 << 20):
            out.write(chunk)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    digest: Callable[[Path], str] = sha256_file,
    fetch: Callable[[str, Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``, kept only if ``digest(file)`` matches ``sha256``.

    ``digest`` defaults to the file's own sha256 (Fashion-MNIST's digests are of the uncompressed
    bytes, so it passes another); ``fetch(url, path)`` replaces the HTTP client (tests)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        try:
            (fetch or _urlopen)(url, tmp)
        except OSError as exc:
            raise OSError(f"{url}: download failed ({exc})") from None
        verify_sha256(url, sha256, digest(tmp))

    return atomic_write(dest, write)

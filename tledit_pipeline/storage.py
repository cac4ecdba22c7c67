"""Where bytes live: a local path, or an object-store URL (s3://, gs://, az://, hf://...) through fsspec.

The pipeline's guarantees carry over to object stores by three rules kept here, in one place:
- A write is one object under its final key, sent in one PUT. A store has no rename, but a PUT is atomic:
  readers see the old object or the new one, never part of one. So files are built on the local disk
  first and uploaded whole (`put_file`).
- Nothing comes from a listing cache: a long-lived process (the daemon's sensor) must see new and changed
  objects, so fsspec's listings cache is off. A read that spans several requests is pinned to the object
  it started on (s3fs sends If-Match with the ETag), so an object replaced mid-read fails, never mixes.
- A store's failures a user can fix (no such bucket, access denied, an endpoint that does not answer, an
  object gone between listing and reading, a missing fsspec package) become one StorageError line naming
  the URL and the problem.

Credentials come from each store's standard chain (for S3: AWS_* variables including AWS_ENDPOINT_URL for
S3-compatible servers, profiles, instance roles). Nothing here reads, prints or stores them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from tledit_pipeline.errors import TleditError

LOCAL_PROTOCOLS = ("file", "local")
SINGLE_PUT_LIMIT = 5 * 2**30  # S3's largest single PUT; s3fs uploads anything smaller in one request
BLOCK = 8 * 2**20  # bytes per ranged GET when streaming an object
GLOB_CHARS = "*?["
BUCKET_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")  # a URL's first component is a bucket


class StorageError(TleditError):
    """An object store refused or could not serve a request; the message names the URL and the problem."""


def is_url(value: object) -> bool:
    """An object-store URL (not a local path, not a file:// URL)."""
    text = str(value)
    return "://" in text and text.split("://", 1)[0].lower() not in LOCAL_PROTOCOLS


@dataclass(frozen=True)
class RemotePath:
    """An object, or a prefix ("folder"), in an object store: the few Path methods the pipeline uses.

    Deliberately not os.PathLike: a library handed one must go through this module, never the local disk.
    """

    url: str  # protocol://bucket/key, no trailing slash

    def __post_init__(self) -> None:
        protocol, rest = self.url.split("://", 1)
        object.__setattr__(self, "url", f"{protocol.lower()}://{rest.strip('/')}")

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, part: str) -> "RemotePath":
        return RemotePath(f"{self.url}/{str(part).strip('/')}")

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def fs(self):
        return filesystem(self.protocol, self.url)

    @property
    def path(self) -> str:
        """The path as the filesystem takes it (no protocol)."""
        return self.fs._strip_protocol(self.url)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "RemotePath":
        head = self.url.rsplit("/", 1)[0]
        return RemotePath(head) if "://" in head and head.split("://", 1)[1] else self

    @property
    def bucket(self) -> str:
        """The bucket or container: the first component after the protocol."""
        return self.url.split("://", 1)[1].split("/", 1)[0]

    def absolute(self) -> "RemotePath":
        return self

    def expanduser(self) -> "RemotePath":
        return self

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a key's prefixes exist once an object is under them."""

    def exists(self) -> bool:
        with errors(self.url):
            return self.fs.exists(self.path)

    def is_file(self) -> bool:
        with errors(self.url):
            return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        with errors(self.url):
            return self.fs.isdir(self.path)

    def stat(self) -> SimpleNamespace:
        """st_size and st_mtime_ns as os.stat gives them, plus the object's etag (None if the store has none)."""
        info = self.info()
        return SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime_ns=_mtime_ns(info), etag=_etag(info))

    def info(self) -> dict[str, Any]:
        with errors(self.url):
            return self.fs.info(self.path)

    def open(self, mode: str = "rb", **kwargs: Any) -> Any:
        if "r" not in mode:
            raise ValueError("RemotePath opens for reading only; writes go through put_file (one PUT)")
        with errors(self.url):
            fh = self.fs.open(self.path, mode, **kwargs)
        return _Guarded(fh, self.url) if "b" in mode else fh

    def read_bytes(self) -> bytes:
        with errors(self.url):
            return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def unlink(self, missing_ok: bool = False) -> None:
        with errors(self.url):
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                if not missing_ok:
                    raise


Location = Path | RemotePath


def location(value: str | os.PathLike | RemotePath) -> Location:
    """A local Path for paths and file:// URLs, a RemotePath for object-store URLs."""
    if isinstance(value, (Path, RemotePath)):
        return value if isinstance(value, RemotePath) else value.expanduser().absolute()
    text = os.fspath(value)
    if "://" not in text:
        return Path(text).expanduser().absolute()
    protocol = text.split("://", 1)[0].lower()
    if protocol in LOCAL_PROTOCOLS:
        import fsspec

        return Path(fsspec.core.url_to_fs(text)[1]).absolute()
    filesystem(protocol.lower(), text)  # an unknown protocol or a missing package is an error now, by name
    return RemotePath(text)


def filesystem(protocol: str, url: str = ""):
    """The fsspec filesystem of a protocol: default credentials chain, no listings cache.

    fsspec keeps one instance per process and arguments (and a new one after a fork).
    """
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise StorageError(f"{url or protocol + '://'}: unknown storage protocol {protocol!r}") from None
    except ImportError:
        package = {
            "s3": "s3fs",
            "s3a": "s3fs",
            "gs": "gcsfs",
            "gcs": "gcsfs",
            "az": "adlfs",
            "abfs": "adlfs",
            "abfss": "adlfs",
        }.get(protocol)
        hint = f"pip install {package}" if package else "install the fsspec package for it"
        raise StorageError(
            f"{url or protocol + '://'}: the {protocol}:// protocol needs a package that is not installed ({hint})"
        ) from None
    return cls(use_listings_cache=False)


def _etag(info: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "content_md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


def _mtime_ns(info: dict[str, Any]) -> int:
    for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return int(value.timestamp() * 1e9)
        try:
            return int(float(value) * 1e9)
        except (TypeError, ValueError):
            continue
    return 0


# ---------------------------------------------------------------- errors


def _endpoint(url: str) -> str:
    if url.startswith(("s3://", "s3a://")):
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the S3 endpoint"
    return "the storage endpoint"


def _problem(exc: BaseException, url: str) -> str | None:
    """A user-fixable store failure as a short phrase, or None when it is not one (a bug stays a bug)."""
    try:
        import botocore.exceptions as bx
    except ImportError:  # no S3 support installed
        bx = None
    text = str(exc).splitlines()[0] if str(exc) else ""
    if bx is not None and isinstance(exc, bx.NoCredentialsError):
        return "no credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or an instance role)"
    if bx is not None and isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return f"cannot connect to {_endpoint(url)} (is it running and reachable? check AWS_ENDPOINT_URL)"
    if bx is not None and isinstance(exc, bx.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return f"the store refused the request ({code or text})"
    if isinstance(exc, FileNotFoundError):
        if "bucket" in text.lower() or "container" in text.lower():
            return "no such bucket"
        return "no such object (was it removed or renamed after it was listed?)"
    if isinstance(exc, PermissionError):
        detail = f": {text}" if text and text != url and text.lower().strip(" .") != "access denied" else ""
        return f"access denied{detail} (check the credentials and the bucket's policy)"
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in (
        "ClientConnectorError",
        "ServerDisconnectedError",
    ):
        return f"cannot connect to {_endpoint(url)} (is it running and reachable? check AWS_ENDPOINT_URL)"
    if isinstance(exc, OSError):
        low = text.lower()
        if "precondition" in low or "etag" in low:
            return "the object changed while it was read; run again"
        return text or "the store could not serve the request"
    return None


@contextmanager
def errors(url: str) -> Iterator[None]:
    """Turns a store's user-fixable failures into one StorageError line naming the URL."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 (_problem decides; anything it does not know is re-raised as is)
        problem = _problem(exc, url)
        if problem is None:
            raise
        raise StorageError(f"{url}: {problem}") from None


def check_bucket(where: RemotePath) -> None:
    """A clear error when the bucket itself is missing or closed to us (listings just come back empty)."""
    if where.protocol not in BUCKET_STORES:
        return
    root = RemotePath(f"{where.protocol}://{where.bucket}")
    with errors(where.url):
        where.fs.ls(root.path, detail=False)


# ---------------------------------------------------------------- reading


def open_read(loc: Location, sequential: bool = False) -> IO[bytes]:
    """A binary file object for reads: ranged GETs of BLOCK bytes on a store (read ahead unless `sequential`,
    where the caller reads BLOCK at a time anyway)."""
    if isinstance(loc, RemotePath):
        return loc.open("rb", block_size=BLOCK, cache_type="none" if sequential else "readahead")
    return open(loc, "rb")


class _Guarded:
    """A store file object whose read errors become StorageError lines (it is read long after opening)."""

    def __init__(self, fh: IO[bytes], url: str):
        self._fh, self._url = fh, url

    def read(self, n: int = -1) -> bytes:
        with errors(self._url):
            return self._fh.read(n)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        with errors(self._url):
            return self._fh.seek(offset, whence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> "_Guarded":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


def fetch(loc: RemotePath, target: Path) -> str:
    """Copy one object to a local file (streamed, pinned to one version of it); returns its SHA-256."""
    h = hashlib.sha256()
    with open_read(loc, sequential=True) as src, open(target, "wb") as out:
        etag = _etag(getattr(src, "details", {}) or {})
        size = 0
        for block in iter(lambda: src.read(BLOCK), b""):
            h.update(block)
            out.write(block)
            size += len(block)
    digest = h.hexdigest()
    _remember_digest(loc, size, etag, digest)
    return digest


@contextmanager
def local_copy(loc: Location) -> Iterator[tuple[Path, str | None]]:
    """(a local path of the file, its SHA-256 when it was computed on the way): a store's object is fetched
    to a temporary file first (one read ahead of parsing) and removed after; a local file is itself."""
    if not isinstance(loc, RemotePath):
        yield Path(loc), None
        return
    fd, tmp = tempfile.mkstemp(prefix=".tledit-fetch-", suffix="-" + loc.name[-60:])
    os.close(fd)
    try:
        digest = fetch(loc, Path(tmp))
        yield Path(tmp), digest
    finally:
        Path(tmp).unlink(missing_ok=True)


def sha256(loc: Location) -> str:
    """SHA-256 of a file's or object's content, read in blocks (it may be larger than memory).

    A store's object is hashed once per version: the digest is remembered under its URL, size and ETag.
    """
    if isinstance(loc, RemotePath):
        st = loc.stat()
        known = _known_digest(loc, st.st_size, st.etag)
        if known:
            return known
        h = hashlib.sha256()
        with open_read(loc, sequential=True) as src:
            etag = _etag(getattr(src, "details", {}) or {})
            size = 0
            for block in iter(lambda: src.read(BLOCK), b""):
                h.update(block)
                size += len(block)
        _remember_digest(loc, size, etag, h.hexdigest())
        return h.hexdigest()
    with open(loc, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def stamp(loc: Location) -> list:
    """A cheap change hint (never a data version): size and mtime locally, size and ETag on a store."""
    st = loc.stat()
    return [st.st_size, getattr(st, "etag", None) or st.st_mtime_ns]


def _digest_file(loc: RemotePath, size: int, etag: str | None) -> Path | None:
    if not etag:
        return None
    key = hashlib.sha256(f"{loc.url}\0{size}\0{etag}".encode()).hexdigest()[:40]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tledit" / "digests"
    return base / key


def _known_digest(loc: RemotePath, size: int, etag: str | None) -> str | None:
    path = _digest_file(loc, size, etag)
    try:
        text = path.read_text().strip() if path else ""
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def _remember_digest(loc: RemotePath, size: int, etag: str | None, digest: str) -> None:
    """An ETag names one version of an object, so its content hash never needs computing twice."""
    path = _digest_file(loc, size, etag)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, path)
    except OSError:  # a cache only: an unwritable cache costs a re-hash, nothing else
        pass


# ---------------------------------------------------------------- listing


def list_files(loc: Location) -> list[tuple[Location, dict[str, Any]]]:
    """The files directly in a folder, or matching a glob, with their listing details (store objects only)."""
    if not isinstance(loc, RemotePath):
        raise TypeError("list_files lists a store; use pathlib for local folders")
    fs = loc.fs
    with errors(loc.url):
        if any(ch in loc.path for ch in GLOB_CHARS):
            found = fs.glob(loc.path, detail=True)
        else:
            found = {e["name"]: e for e in fs.ls(loc.path, detail=True)}
    return [(RemotePath(fs.unstrip_protocol(name)), info) for name, info in sorted(found.items()) if info.get("type") == "file"]


def existing(loc: Location, names: list[str]) -> set[str]:
    """Which of `names` (paths under the folder `loc`) exist: one listing on a store, not a request per name."""
    if not isinstance(loc, RemotePath):
        return {n for n in names if (Path(loc) / n).exists()}
    fs = loc.fs
    with errors(loc.url):
        try:
            found = fs.find(loc.path)
        except FileNotFoundError:
            return set()
    base = loc.path.rstrip("/") + "/"
    present = {f[len(base) :] for f in found if f.startswith(base)}
    return {n for n in names if n in present}


# ---------------------------------------------------------------- writing


def put_file(local: Path, target: RemotePath) -> None:
    """Upload a finished local file as one object under its final key, in one PUT (up to 5 GiB on S3)."""
    extra: dict[str, Any] = {}
    if target.protocol in ("s3", "s3a"):
        extra["chunksize"] = SINGLE_PUT_LIMIT  # s3fs sends anything below 2 x chunksize (capped at 5 GiB) in one PUT
    with errors(target.url):
        target.fs.put_file(str(local), target.path, **extra)


def spool_file(name: str) -> Path:
    """A fresh local temporary file for building an object before its one PUT (the caller removes it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def copy_to_local(loc: RemotePath, target: Path) -> Path:
    """Download an object to `target`, replacing it atomically (readers of the old copy are undisturbed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fetch(loc, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- what stays on this machine


def local_dir(home: Location) -> Path:
    """What must stay on this machine for a data directory: the Dagster home, converted models, the sample.

    The data directory itself when it is local. For a store: $XDG_STATE_HOME/tledit/<name of the URL>
    (default ~/.local/state/tledit/...), one folder per data directory URL.
    """
    if not isinstance(home, RemotePath):
        return Path(home)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    slug = re.sub(r"[^a-z0-9]+", "-", home.url.lower()).strip("-")[:60]
    return base / "tledit" / f"{slug}-{hashlib.sha256(home.url.encode()).hexdigest()[:8]}"


def rmtree(loc: Location) -> None:
    """Remove a folder or prefix and everything under it (scratch lakes of the bench and tests)."""
    if isinstance(loc, RemotePath):
        with errors(loc.url):
            if loc.fs.exists(loc.path):
                loc.fs.rm(loc.path, recursive=True)
    else:
        shutil.rmtree(loc, ignore_errors=True)

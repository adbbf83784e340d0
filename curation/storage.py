"""Local and S3 paths behind one interface (pyarrow filesystems), plus input expansion.

Every path in the pipeline is a string: a local path or an ``s3://bucket/key`` URI. The S3 endpoint
comes from :class:`StorageOptions` (config) or the standard ``AWS_ENDPOINT_URL`` variable, so a
MinIO/moto/Ceph endpoint works the same as AWS.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import logging
import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from curation.errors import ClusterPathError, CurationError

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("", "file", "s3")


class StorageError(CurationError):
    """A path that cannot be used: unsupported scheme, missing input, unreadable listing."""


@dataclass(frozen=True)
class StorageOptions:
    s3_endpoint_url: str | None = None  # e.g. http://127.0.0.1:5000; default: $AWS_ENDPOINT_URL
    s3_region: str | None = None  # default: $AWS_DEFAULT_REGION or us-east-1
    s3_anonymous: bool = False  # public buckets such as s3://commoncrawl without credentials
    # local paths are on a filesystem every executor mounts at the same place (NFS, Lustre, one machine);
    # without it a non-local master refuses local paths (file:// URIs declare one path shared)
    shared_local_paths: bool = False

    def resolved(self) -> StorageOptions:
        """Fill unset fields from the environment (done on the driver, then shipped to executors)."""
        return StorageOptions(
            s3_endpoint_url=self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
            s3_region=self.s3_region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            s3_anonymous=self.s3_anonymous,
            shared_local_paths=self.shared_local_paths,
        )


_FS_CACHE: dict[tuple, pafs.FileSystem] = {}


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def _scheme(uri: str) -> str:
    if "://" not in uri:
        return ""
    return uri.split("://", 1)[0].lower()


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or s3:// URI."""
    scheme = _scheme(uri)
    if scheme in ("s3", "s3a"):
        opts = (options or StorageOptions()).resolved()
        key = ("s3", opts)
        fs = _FS_CACHE.get(key)
        if fs is None:
            kwargs: dict = {"region": opts.s3_region, "anonymous": opts.s3_anonymous}
            if opts.s3_endpoint_url:
                parsed = urlparse(opts.s3_endpoint_url)
                kwargs["endpoint_override"] = parsed.netloc or parsed.path
                kwargs["scheme"] = parsed.scheme or "https"
            fs = pafs.S3FileSystem(**kwargs)
            _FS_CACHE[key] = fs
        return fs, uri.split("://", 1)[1]
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    raise StorageError(f"unsupported path scheme {scheme!r} in {uri!r}; use a local path or s3://bucket/key")


class PathEscapeError(CurationError, ValueError):
    """A path part that would leave the folder it is joined to (absolute, or with a ``..`` segment)."""


def is_local(uri: str) -> bool:
    return _scheme(uri) in ("", "file")


def absolute(uri: str) -> str:
    """A local path made absolute against this process's working folder (file:// URIs keep their
    scheme); object-store URIs unchanged. Done on the driver before anything is shipped to executors,
    whose working folders differ."""
    if _scheme(uri) == "file":
        return "file://" + os.path.abspath(uri[len("file://") :])
    if _scheme(uri) == "":
        return os.path.abspath(uri)
    return uri


def check_shared(uri: str, master: str | None, options: StorageOptions | None, what: str = "path") -> None:
    """Refuse a plain local path when executors may run on other machines (a non-local master) and the
    config does not declare local paths shared; ``file://`` URIs declare themselves."""
    if master is None or master.startswith("local") or _scheme(uri) != "":
        return
    if options is not None and options.shared_local_paths:
        return
    raise ClusterPathError(
        f"{what} {uri!r} is a local path but the Spark master is {master!r}: executors on other machines "
        "cannot see it. Use s3://bucket/..., or a folder every node mounts at the same place and set "
        "[storage] shared_local_paths = true (or write it as file:///...)"
    )


def join(base: str, *parts: str) -> str:
    """``base``/part/...: every path the stages build under a run root or stage folder goes through here,
    so no part (a shard, stage or file name) can point outside ``base``. Paths a user wrote relative to a
    file of theirs (MODELS.toml values, paths-file lines) may climb out: :func:`relative_to`."""
    for part in parts:
        if part.startswith(("/", "\\")) or is_s3(part) or ".." in part.replace("\\", "/").split("/"):
            raise PathEscapeError(f"path part {part!r} would leave {base!r}")
    return relative_to(base, *parts)


def relative_to(base: str, *parts: str) -> str:
    """A path the user wrote relative to ``base`` (``..`` allowed, as in any config file)."""
    if is_s3(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, *parts))
    return os.path.join(base, *parts)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def _to_uri(uri_like: str, path: str) -> str:
    """Turn a filesystem path back into the caller's URI style."""
    if is_s3(uri_like):
        return "s3://" + path
    return path


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def list_files(uri: str, options: StorageOptions | None = None, recursive: bool = True) -> list[str]:
    """Files under a directory/prefix, sorted; hidden names (. or _) are skipped."""
    fs, path = filesystem(uri, options)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(path) :].lstrip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        out.append(_to_uri(uri, info.path))
    return sorted(out)


def file_version(uri: str, options: StorageOptions | None = None) -> tuple[int, int]:
    """(size, modification time in ns) of a file: what a cache of its parsed content is keyed by.
    StorageError when it is missing."""
    fs, path = filesystem(uri, options)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise StorageError(f"{uri} is not a file")
    return int(info.size or 0), int(info.mtime_ns or 0)


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    with fs.open_input_stream(path, compression=None) as f:  # bytes as stored, never auto-gunzipped
        return f.read()


def open_input(uri: str, options: StorageOptions | None = None):
    """A seekable binary file object (pyarrow RandomAccessFile for S3, a real file locally)."""
    fs, path = filesystem(uri, options)
    if isinstance(fs, pafs.LocalFileSystem):
        return open(path, "rb")
    return fs.open_input_file(path)


def write_bytes_atomic(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write under a temporary name in the same folder, then rename onto the final name."""
    fs, path = filesystem(uri, options)
    parent = posixpath.dirname(path) if is_s3(uri) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    tmp = temp_name(path)
    with fs.open_output_stream(tmp, compression=None) as f:  # bytes as given: a .gz name is not gzipped again
        f.write(data)
    fs.move(tmp, path)


def write_bytes_if_changed(uri: str, data: bytes, options: StorageOptions | None = None) -> bool:
    """write_bytes_atomic unless the file already holds exactly ``data``; returns whether it wrote."""
    fs, path = filesystem(uri, options)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File and info.size == len(data) and read_bytes(uri, options) == data:
        return False
    write_bytes_atomic(uri, data, options)
    return True


def temp_name(path: str) -> str:
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".tmp-{uuid.uuid4().hex[:12]}-{tail}")


def delete(uri: str, options: StorageOptions | None = None) -> None:
    fs, path = filesystem(uri, options)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def _has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _glob(pattern: str, options: StorageOptions | None) -> list[str]:
    # list from the deepest folder without wildcards, then match the rest
    prefix_parts = []
    parts = pattern.split("/")
    for p in parts:
        if _has_glob(p):
            break
        prefix_parts.append(p)
    base = "/".join(prefix_parts) or "."
    fs, path = filesystem(base, options)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    _, pat_path = filesystem(pattern, options) if is_s3(pattern) else (None, os.path.abspath(pattern))
    out = [_to_uri(pattern, i.path) for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pat_path)]
    return sorted(out)


PATHS_FILE_SUFFIXES = (".paths", ".paths.gz", ".paths.txt")


def _read_paths_file(uri: str, options: StorageOptions | None, base: str | None) -> list[str]:
    raw = read_bytes(uri, options)
    if uri.endswith(".gz"):
        raw = gzip.decompress(raw)
    if base is None:
        base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    base = absolute(base)
    out = []
    for line in io.StringIO(raw.decode("utf-8", errors="replace")):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "://" in line or line.startswith("/"):
            out.append(line)
        else:
            out.append(relative_to(base, line))
    return out


def expand_inputs(inputs: list[str], options: StorageOptions | None = None, paths_base: str | None = None) -> list[str]:
    """Expand files, folders, globs and paths files (like Common Crawl's ``wat.paths.gz``) into a
    sorted, de-duplicated list of crawl files. Unknown or missing inputs raise StorageError naming
    them, before any work starts."""
    files: list[str] = []
    missing: list[str] = []
    for item in inputs:
        scheme = _scheme(item)
        if scheme not in SUPPORTED_SCHEMES and scheme != "s3a":
            raise StorageError(f"unsupported input {item!r}: use a local path, a glob or s3://bucket/key")
        if _has_glob(item):
            matched = _glob(item, options)
            if not matched:
                missing.append(item)
            files.extend(matched)
        elif item.endswith(PATHS_FILE_SUFFIXES):
            if not exists(item, options):
                missing.append(item)
                continue
            files.extend(_read_paths_file(item, options, paths_base))
        elif is_dir(item, options):
            found = list_files(item, options)
            if not found:
                log.warning("input folder %s holds no files", item)
            files.extend(found)
        elif exists(item, options):
            files.append(absolute(item))
        else:
            missing.append(item)
    if missing:
        raise StorageError(f"input not found: {', '.join(missing)}")
    return sorted(dict.fromkeys(files))

"""The files of a data source: a folder, or a .tar, .tar.gz, .tgz or .zip read in memory.

Every source becomes one list of (path inside the source, reader) pairs, with posix paths and
operating-system clutter left out; archives are never extracted to disk.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from tinynet.errors import UserError

Reader = Callable[[], bytes]
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file
CLUTTER = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # what macOS and Windows leave in folders and zips


def list_files(path: Path) -> list[tuple[str, Reader | None]]:
    """Every file under a folder or inside an archive, sorted, as (relative name, reader); folders
    come as (name, None), so that an empty class folder is seen too. Hidden files and folders and
    CLUTTER are left out."""
    if path.is_dir():
        entries = _folder_entries(path)
    elif zipfile.is_zipfile(path):
        entries = _zip_entries(path)
    else:
        entries = _tar_entries(path)
    entries = [(_without_dot_slash(name), read) for name, read in entries]
    return sorted((name, read) for name, read in entries if name and not is_clutter(name))


def _without_dot_slash(name: str) -> str:
    """'./train/cat/1.png' (as `tar -C folder .` writes names) to 'train/cat/1.png'."""
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def is_clutter(name: str) -> bool:
    """Hidden files and folders (.DS_Store, macOS's ._ twins, .git) and CLUTTER, anywhere in a path."""
    return any(part.startswith(".") or part in CLUTTER for part in name.split("/") if part not in ("", "."))


def _folder_entries(root: Path) -> list[tuple[str, Reader | None]]:
    """A folder walked with symbolic links followed, each real folder once (a link to a parent
    would otherwise loop forever)."""
    entries: list[tuple[str, Reader | None]] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        if prefix:
            entries.append((prefix.rstrip("/"), None))
        entries += [(prefix + name, _file_reader(Path(folder, name))) for name in files]
    return entries


def _file_reader(path: Path) -> Reader:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError:  # a dangling link or an unreadable file is an unreadable image, counted as such
            return b""
    return read


def _tar_entries(path: Path) -> list[tuple[str, Reader | None]]:
    """Members of a tarball, read once in archive order from the archive decompressed in one go:
    tarfile reads a gzip stream in 512-byte pieces, which is far slower for many small files."""
    try:
        archive_bytes = path.read_bytes()
        if archive_bytes.startswith(GZIP_MAGIC):
            archive_bytes = gzip.decompress(archive_bytes)
        with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as archive:
            members = archive.getmembers()
            targets = {}
            for member in members:
                _check_inside(path, member.name)
                if member.issym():
                    targets[member.name] = _link_target(path, posixpath.dirname(member.name), member.linkname)
                elif member.islnk():
                    targets[member.name] = _link_target(path, "", member.linkname)
            files = {m.name: _member_bytes(archive, archive_bytes, m) for m in members if m.isfile()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path} is neither a folder nor a readable .tar, .tar.gz, .tgz or .zip "
                        f"({reason.rstrip(':')})") from None
    files.update({link: files[target] for link, target in targets.items() if target in files})  # links to files
    folders = [m.name.rstrip("/") for m in members if m.isdir()]
    return [(name, None) for name in folders] + [(name, lambda data=data: data) for name, data in files.items()]


def _link_target(path: Path, folder: str, target: str) -> str:
    """The member a link inside the archive points to; refused if it points outside."""
    resolved = posixpath.normpath(posixpath.join(folder, target))
    _check_inside(path, resolved if not target.startswith("/") else target)
    return resolved


def _member_bytes(archive: tarfile.TarFile, archive_bytes: bytes, member: tarfile.TarInfo) -> bytes:
    """A file's bytes, sliced from the archive in memory (faster than extractfile()); a sparse
    file's bytes are not stored in one piece, so tarfile reassembles them."""
    if member.issparse():
        return archive.extractfile(member).read()
    return archive_bytes[member.offset_data:member.offset_data + member.size]


def _zip_entries(path: Path) -> list[tuple[str, Reader | None]]:
    """Members of a zip file, each read from the archive when its reader is called."""
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"{path} is not a readable .zip ({error})") from None
    for info in infos:
        _check_inside(path, info.filename)

    def reader(info: zipfile.ZipInfo) -> Reader:
        def read() -> bytes:
            try:
                return archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
                return b""  # a damaged member is an unreadable image, counted as such
        return read

    return [(info.filename.rstrip("/"), None if info.is_dir() else reader(info)) for info in infos]


def _check_inside(path: Path, name: str) -> None:
    """Refuse an archive with a member that would land outside it if extracted: nothing is
    extracted here, but such a member is never an honest data set."""
    name = name.replace("\\", "/")
    if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{path}: member {name!r} points outside the archive; refusing to read it")

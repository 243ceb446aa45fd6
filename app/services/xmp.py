"""XMP metadata of library photos (caption, concept names, people, regions), written by exiftool.

What is written, so that digiKam, darktable, Lightroom, PhotoPrism and Immich read it
(``docs/library.md`` has the table of which application reads which field):

* ``dc:description`` (``x-default``): the caption, names written without their ``<...>``
  brackets ("bo is asleep on the sofa"), the way a person reads it in another application.
* ``dc:subject``: the concept names, as flat keywords.
* ``lr:hierarchicalSubject``: ``RePIC|<name>`` for each concept. That ``RePIC|`` branch is how a
  later write knows which keywords it made: they are replaced, every other keyword is kept.
* ``Iptc4xmpExt:PersonInImage``: the concepts that are people (:func:`concept_kind`).
* ``mwg-rs:RegionInfo``: one MWG region per concept box, ``Type`` ``Face`` for a person,
  ``Pet`` for an animal, none for a thing; ``Area`` normalised and centre-based, as MWG
  requires, in the frame of the *stored* pixels (MWG 2.0 §5.9: regions apply to the stored
  image, so a file whose EXIF ``Orientation`` rotates it gets its boxes rotated back:
  :func:`stored_box`). A box that is the whole photo (retrieval matched the whole image) says
  nothing about where the concept is and is not written as a region. Regions we wrote carry
  ``Description`` "RePIC"; regions of other tools are kept.

exiftool (Debian's ``libimage-exiftool-perl``) does the writing: one process in ``-stay_open``
mode per export, driven through its argument file on stdin (never a shell); tags go in as a
JSON file (``-json=``), so captions with newlines, quotes or braces need no escaping; exiftool
only ever sees paths this module made (links and files with plain names in a temporary
folder), so a photo's own name, however odd, never reaches its argument file. The stored
original is never modified: a sidecar is a new file, an embedded copy is written by ``-o`` to a
new file next to the export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.errors import InvalidInput, ServiceUnavailable, UpstreamFailed
from app.ml.prompt import format_name

log = logging.getLogger(__name__)

EXIFTOOL_MISSING = "exiftool is not installed: apt install libimage-exiftool-perl"
#: The ``lr:hierarchicalSubject`` branch of our keywords, and the mark of our regions.
HIERARCHY_ROOT = "RePIC"
REGION_MARK = "RePIC"
#: Seconds one exiftool command may take (a read or a write of one photo takes milliseconds).
COMMAND_TIMEOUT_S = 60.0

#: Words of a concept's category that make it a person or an animal (lower case, whole words:
#: "little girl" is a person, "girlfriend's mug" is not). The category is the free text the
#: owner gave the concept ("dog", "woman", ...), the one field a concept has for what it is.
PERSON_WORDS = frozenset({
    "person", "people", "human", "man", "men", "woman", "women", "boy", "girl", "child",
    "children", "kid", "kids", "baby", "toddler", "teen", "teenager", "adult", "lady", "gentleman",
    "guy", "son", "daughter", "mother", "father", "mom", "mum", "dad", "wife", "husband",
    "brother", "sister", "grandmother", "grandfather", "grandma", "grandpa", "grandson",
    "granddaughter", "aunt", "uncle", "cousin", "nephew", "niece", "friend",
})
ANIMAL_WORDS = frozenset({
    "animal", "pet", "dog", "puppy", "cat", "kitten", "horse", "pony", "rabbit", "bunny",
    "hamster", "pig", "bird", "parrot", "budgie", "cow", "sheep", "goat", "duck", "chicken",
    "turtle", "tortoise", "fish", "lizard", "snake", "ferret",
})


class XmpMode(StrEnum):
    """Where the metadata goes: a sidecar file beside the photo, or inside a copy of it."""

    SIDECAR = "sidecar"
    EMBEDDED = "embedded"


class SidecarNaming(StrEnum):
    """How a sidecar is named: ``IMG_1.jpg.xmp`` (darktable, digiKam's default, read by
    Immich and PhotoPrism) or ``IMG_1.xmp`` (Lightroom, Capture One)."""

    APPENDED = "appended"
    REPLACED = "replaced"


class ConceptKind(StrEnum):
    PERSON = "person"
    ANIMAL = "animal"
    THING = "thing"


class ExifToolMissing(ServiceUnavailable):
    def __init__(self, detail: str = EXIFTOOL_MISSING) -> None:
        super().__init__(detail)


class ExifToolFailed(UpstreamFailed):
    """exiftool died, hung, or answered something that is not what was asked."""


def concept_kind(category: str) -> ConceptKind:
    """What a concept is, from the words of its category.

    >>> concept_kind("little girl"), concept_kind("Dog"), concept_kind("coffee mug")
    (<ConceptKind.PERSON: 'person'>, <ConceptKind.ANIMAL: 'animal'>, <ConceptKind.THING: 'thing'>)
    """
    words = set(re.findall(r"[a-z]+", category.lower()))
    if words & PERSON_WORDS:
        return ConceptKind.PERSON
    if words & ANIMAL_WORDS:
        return ConceptKind.ANIMAL
    return ConceptKind.THING


def sidecar_name(filename: str, naming: SidecarNaming) -> str:
    """The sidecar's file name for the photo ``filename``.

    >>> sidecar_name("IMG_1.jpg", SidecarNaming.APPENDED), sidecar_name("IMG_1.jpg", "replaced")
    ('IMG_1.jpg.xmp', 'IMG_1.xmp')
    """
    if naming == SidecarNaming.REPLACED:
        stem, dot, _ = filename.rpartition(".")
        return f"{stem if dot and stem else filename}.xmp"
    return f"{filename}.xmp"


def plain_caption(text: str, names: Iterable[str]) -> str:
    """The caption as another application shows it: ``<name>`` of each known concept written
    as ``name`` (other angle brackets are the model's text and stay).

    >>> plain_caption("<bo> sleeps next to <anya> <3", ["bo", "anya"])
    'bo sleeps next to anya <3'
    """
    for name in sorted(set(names), key=len, reverse=True):
        text = text.replace(format_name(name), name)
    return text


@dataclass(frozen=True)
class XmpRegion:
    """A concept's box, ``(x0, y0, x1, y1)`` in the pixels of the upright photo."""

    name: str
    kind: ConceptKind
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class XmpConcept:
    name: str
    kind: ConceptKind = ConceptKind.THING
    #: ``(x0, y0, x1, y1)`` in the upright photo's pixels; None when not localised.
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class PhotoMetadata:
    """What is written for one photo; ``width``/``height`` are the upright photo's (the frame
    its boxes are in)."""

    caption: str
    width: int
    height: int
    concepts: tuple[XmpConcept, ...] = ()

    @property
    def keywords(self) -> list[str]:
        return list(dict.fromkeys(c.name for c in self.concepts))

    @property
    def people(self) -> list[str]:
        return list(dict.fromkeys(c.name for c in self.concepts if c.kind == ConceptKind.PERSON))

    @property
    def regions(self) -> list[XmpRegion]:
        """One region per concept box that is not the whole photo (nor empty)."""
        out: list[XmpRegion] = []
        whole = (0, 0, self.width, self.height)
        for concept in self.concepts:
            if concept.box is None:
                continue
            x0, y0, x1, y1 = _clamped(concept.box, self.width, self.height)
            if x1 <= x0 or y1 <= y0 or (x0, y0, x1, y1) == whole:
                continue
            out.append(XmpRegion(concept.name, concept.kind, (x0, y0, x1, y1)))
        return out


def _clamped(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return (
        min(max(x0, 0), width),
        min(max(y0, 0), height),
        min(max(x1, 0), width),
        min(max(y1, 0), height),
    )


def stored_dimensions(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The stored pixels' size of an upright ``width`` x ``height`` photo whose file has EXIF
    ``orientation`` (5 to 8 turn it by a quarter)."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def stored_box(
    box: tuple[int, int, int, int], width: int, height: int, orientation: int
) -> tuple[int, int, int, int]:
    """``box`` of the upright ``width`` x ``height`` photo in the file's stored pixels, which a
    viewer turns upright by EXIF ``orientation`` (the inverse of Pillow's ``exif_transpose``).

    >>> stored_box((10, 0, 30, 20), 100, 50, 1), stored_box((10, 0, 30, 20), 100, 50, 6)
    ((10, 0, 30, 20), (0, 70, 20, 90))
    """
    x0, y0, x1, y1 = box
    w, h = width, height

    def back(u: int, v: int) -> tuple[int, int]:
        # (u, v) upright -> (x, y) stored, for each EXIF orientation.
        match orientation:
            case 2:
                return w - u, v
            case 3:
                return w - u, h - v
            case 4:
                return u, h - v
            case 5:
                return v, u
            case 6:
                return v, w - u
            case 7:
                return h - v, w - u
            case 8:
                return h - v, u
            case _:
                return u, v

    (ax, ay), (bx, by) = back(x0, y0), back(x1, y1)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def _as_list(value: Any) -> list[Any]:
    """exiftool writes a one-item list as the item itself."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _merged(existing: Iterable[Any], drop: set[str], ours: Iterable[str]) -> list[str]:
    kept = [str(v) for v in existing if str(v) not in drop]
    return list(dict.fromkeys([*kept, *ours]))


def xmp_tags(
    meta: PhotoMetadata, existing: Mapping[str, Any], orientation: int = 1
) -> dict[str, Any]:
    """The tags to write (exiftool's JSON names) for ``meta`` over what the file already has.

    ``existing`` is exiftool's ``-j -struct`` reading of ``Subject``, ``HierarchicalSubject``,
    ``PersonInImage`` and ``RegionInfo``. Keywords, people and regions of other tools are kept;
    what an earlier write of ours made (the ``RePIC|`` keywords, regions marked ``RePIC``) is
    replaced, so a re-captioned photo loses the names its new caption no longer has. A tag
    whose value is None is to be deleted.
    """
    prefix = f"{HIERARCHY_ROOT}|"
    hierarchical = [str(v) for v in _as_list(existing.get("HierarchicalSubject"))]
    ours_before = {v[len(prefix):] for v in hierarchical if v.startswith(prefix)}
    names = meta.keywords
    tags: dict[str, Any] = {
        "XMP-dc:Subject": _merged(_as_list(existing.get("Subject")), ours_before, names),
        "XMP-lr:HierarchicalSubject": _merged(
            hierarchical, {prefix + n for n in ours_before}, (prefix + n for n in names)
        ),
        "XMP-iptcExt:PersonInImage": _merged(
            _as_list(existing.get("PersonInImage")), ours_before, meta.people
        ),
    }
    caption = plain_caption(meta.caption, names).strip()
    if caption:
        tags["XMP-dc:Description"] = caption

    info = existing.get("RegionInfo")
    theirs = [
        r
        for r in _as_list(info.get("RegionList") if isinstance(info, Mapping) else None)
        if isinstance(r, Mapping) and r.get("Description") != REGION_MARK
    ]
    taken = {str(r.get("Name", "")) for r in theirs}
    stored_w, stored_h = stored_dimensions(meta.width, meta.height, orientation)
    regions: list[dict[str, Any]] = [dict(r) for r in theirs]
    for region in meta.regions:
        if region.name in taken:
            continue  # the owner's own region of that name (digiKam, Lightroom) is better
        x0, y0, x1, y1 = stored_box(region.box, meta.width, meta.height, orientation)
        entry: dict[str, Any] = {
            "Name": region.name,
            "Description": REGION_MARK,
            "Area": {
                "X": round((x0 + x1) / 2 / stored_w, 6),
                "Y": round((y0 + y1) / 2 / stored_h, 6),
                "W": round((x1 - x0) / stored_w, 6),
                "H": round((y1 - y0) / stored_h, 6),
                "Unit": "normalized",
            },
        }
        if region.kind == ConceptKind.PERSON:
            entry["Type"] = "Face"
        elif region.kind == ConceptKind.ANIMAL:
            entry["Type"] = "Pet"
        regions.append(entry)
    if regions:
        tags["XMP-mwg-rs:RegionInfo"] = {
            "AppliedToDimensions": {"W": stored_w, "H": stored_h, "Unit": "pixel"},
            "RegionList": regions,
        }
    elif isinstance(info, Mapping):
        tags["XMP-mwg-rs:RegionInfo"] = None  # only our regions were there: remove them
    return tags


#: What :meth:`XmpWriter.read` asks exiftool for.
READ_TAGS = (
    "-XMP-dc:Subject",
    "-XMP-lr:HierarchicalSubject",
    "-XMP-iptcExt:PersonInImage",
    "-XMP-mwg-rs:RegionInfo",
    "-Orientation#",
)


def _orientation(value: Any) -> int:
    """EXIF orientation as exiftool's ``-Orientation#`` reads it; 1 when absent or odd."""
    try:
        found = int(value)
    except (TypeError, ValueError):
        return 1
    return found if 1 <= found <= 8 else 1


def find_exiftool(configured: str = "exiftool") -> str:
    """The exiftool executable (a name on ``PATH`` or a path), or :class:`ExifToolMissing`."""
    found = shutil.which(configured)
    if found is None:
        raise ExifToolMissing()
    return found


def exiftool_available(configured: str = "exiftool") -> bool:
    return shutil.which(configured) is not None


class ExifTool:
    """One exiftool process in ``-stay_open`` mode: :meth:`run` sends one command's arguments
    through its argument file (stdin) and returns its stdout and stderr.

    Each argument is one line of that file, so none may hold a newline; callers pass only
    options and paths they made. Both pipes are read together until each command's markers
    arrive, so a chatty stderr can never block exiftool while we wait on stdout.
    """

    def __init__(self, executable: str, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.executable = executable
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._count = 0

    def __enter__(self) -> ExifTool:
        self._process = subprocess.Popen(
            [self.executable, "-stay_open", "True", "-@", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None and process.poll() is None:
                process.stdin.write(b"-stay_open\nFalse\n")
                process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            # A broken pipe or a hung process: it must not outlive the export.
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    def run(self, args: Sequence[str]) -> tuple[str, str]:
        process = self._process
        if process is None or process.stdin is None or process.poll() is not None:
            raise ExifToolFailed("exiftool is not running")
        if any("\n" in a or "\r" in a for a in args):
            raise ValueError("an exiftool argument may not hold a line break")
        self._count += 1
        ready, done = f"{{ready{self._count}}}", f"{{done{self._count}}}"
        lines = [*args, "-echo4", done, f"-execute{self._count}"]
        try:
            process.stdin.write("".join(f"{line}\n" for line in lines).encode())
            process.stdin.flush()
        except OSError as exc:  # exiftool died (broken pipe)
            raise ExifToolFailed(f"exiftool stopped: {exc}") from exc
        out, err = self._read_until(process, ready, done)
        return out, err

    def _read_until(
        self, process: subprocess.Popen[bytes], ready: str, done: str
    ) -> tuple[str, str]:
        assert process.stdout is not None and process.stderr is not None
        buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
        markers = {
            process.stdout.fileno(): f"{ready}\n".encode(),
            process.stderr.fileno(): f"{done}\n".encode(),
        }
        deadline = time.monotonic() + self.timeout_s
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while not all(buffers[fd].endswith(markers[fd]) for fd in buffers):
                left = deadline - time.monotonic()
                if left <= 0:
                    process.kill()
                    raise ExifToolFailed(f"exiftool did not answer within {self.timeout_s:g} s")
                for key, _ in selector.select(timeout=left):
                    chunk = os.read(int(key.fd), 65536)
                    if not chunk:
                        raise ExifToolFailed("exiftool stopped before it answered")
                    buffers[int(key.fd)] += chunk
        out, err = (
            bytes(buffers[fd])[: -len(markers[fd])].decode("utf-8", "replace") for fd in buffers
        )
        return out, err


@dataclass
class Written:
    """One photo written: ``photo`` (the exported image file) and ``sidecar`` (None when the
    metadata is embedded); ``note`` says why a requested embedding became a sidecar."""

    photo: Path
    sidecar: Path | None
    mode: XmpMode
    note: str = ""


@dataclass
class XmpWriter:
    """Writes :class:`PhotoMetadata` with one exiftool process; use as a context manager.

    Files are made in ``workdir`` (a temporary folder of its own when not given), under plain
    names; callers move or stream them to where they belong.
    """

    executable: str
    workdir: Path | None = None
    _tool: ExifTool | None = field(default=None, init=False, repr=False)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, init=False)
    _count: int = field(default=0, init=False)

    def __enter__(self) -> XmpWriter:
        if self.workdir is None:
            self.workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(
                prefix="repic-xmp-")))
        self._tool = self._stack.enter_context(ExifTool(self.executable))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._tool = None

    @property
    def tool(self) -> ExifTool:
        if self._tool is None:
            raise RuntimeError("XmpWriter is used outside its with block")
        return self._tool

    def _slot(self, source: Path, suffix: str) -> tuple[Path, Path]:
        """A plain-named link to ``source`` and a fresh output path, both in the work folder."""
        assert self.workdir is not None
        self._count += 1
        n = self._count
        ext = source.suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", source.suffix) else ""
        link = self.workdir / f"in{n}{ext}"
        os.symlink(source.resolve(), link)
        return link, self.workdir / f"out{n}{suffix or ext}"

    def read(self, path: Path) -> dict[str, Any]:
        """What ``path`` holds of the fields we write (and its EXIF orientation)."""
        link, _ = self._slot(path, ".unused")
        try:
            out, err = self.tool.run(["-j", "-struct", *READ_TAGS, str(link)])
        finally:
            link.unlink()
        try:
            found = json.loads(out) if out.strip() else [{}]
        except json.JSONDecodeError as exc:
            raise ExifToolFailed(f"exiftool answered no JSON: {err.strip() or out[:200]}") from exc
        return dict(found[0]) if found else {}

    def _write(
        self, base: Path, out_suffix: str, meta: PhotoMetadata, photo: Path
    ) -> tuple[Path, str]:
        """Write ``meta`` over ``base``'s metadata into a new file; (the file, exiftool's
        complaint when it wrote none). The regions are turned by ``photo``'s orientation: a
        sidecar written before may not repeat it."""
        existing = self.read(base)
        found = existing if base == photo else self.read(photo)
        orientation = _orientation(found.get("Orientation"))
        tags = xmp_tags(meta, existing, orientation)
        # exiftool's JSON import cannot delete a tag (an empty value is written as one):
        # a tag to remove is an argument of its own, after the import.
        deleted = [f"-{name}=" for name, value in tags.items() if value is None]
        kept = {name: value for name, value in tags.items() if value is not None}
        link, out = self._slot(base, out_suffix)
        meta_file = out.with_name(out.name + ".json")
        meta_file.write_text(
            json.dumps([{"SourceFile": "*", **kept}], ensure_ascii=False), encoding="utf-8"
        )
        try:
            # -q: no "1 image files created" (errors still come on stderr); -m: minor
            # warnings of a camera's odd metadata do not stop the write.
            _, err = self.tool.run(
                ["-q", "-m", f"-json={meta_file}", *deleted, "-o", str(out), str(link)]
            )
        finally:
            link.unlink()
            meta_file.unlink()
        return out, ("" if out.exists() else (err.strip() or "exiftool wrote no file"))

    def sidecar(self, photo: Path, meta: PhotoMetadata, existing: Path | None = None) -> Path:
        """A new ``.xmp`` file with ``meta`` over the photo's own metadata, or over the
        ``existing`` sidecar (whose other tools' fields are kept)."""
        out, problem = self._write(existing or photo, ".xmp", meta, photo)
        if problem:
            raise ExifToolFailed(f"exiftool could not write a sidecar: {problem}")
        return out

    def embedded(self, photo: Path, meta: PhotoMetadata) -> Written:
        """A copy of ``photo`` with ``meta`` inside; a format exiftool cannot write (WebP with
        exiftool before 12.58) gets a sidecar instead, and the note says so."""
        out, problem = self._write(photo, "", meta, photo)
        if not problem:
            return Written(out, None, XmpMode.EMBEDDED)
        log.info("embedding XMP failed (%s); writing a sidecar instead", problem)
        return Written(
            photo, self.sidecar(photo, meta), XmpMode.SIDECAR,
            note=f"metadata in a sidecar: exiftool cannot write into this file ({problem})",
        )


def replace_file(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically (a copy in ``target``'s folder, then a rename),
    so a reader of ``target`` sees the old file or the new one, never half of one."""
    temp = target.with_name(f".{target.name}.repic-tmp")
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def check_mode(mode: str, naming: str) -> tuple[XmpMode, SidecarNaming]:
    """Parse the user's choice, with a message that lists what is allowed."""
    try:
        return XmpMode(mode), SidecarNaming(naming)
    except ValueError:
        raise InvalidInput(
            f"xmp must be one of {', '.join(XmpMode)} and sidecar naming one of "
            f"{', '.join(SidecarNaming)}"
        ) from None


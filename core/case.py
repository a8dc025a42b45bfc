"""The case: what the technician decided about one evidence image, kept beside it (never in it).

A case holds the chosen metadata generation, the per-VDI extent maps as edited by hand, the
undo/redo history of those edits, and an append-only audit log of every edit and export. It is a
small JSON document (`"format": "srsalvage-case"`, `"version": 1`) saved atomically
(`core.output.atomic_write_bytes`) after each change, and reloaded when the image is opened again.

Edits are commands: each one turns into a `Patch` (the slice of the map it replaced, before and
after), so undo and redo are exact and the history stays small even for a VDI of 100k extents.

A damaged case file never stops the work: it is moved aside (`CASE.damaged-<time>`), a one-line
message says so, and a fresh case starts — but only a file that says it is a srsalvage case (or
sits at the default `IMAGE.srsalvage-case.json`): any other file named by `--case` is refused
(UnsafeError, exit 3), never moved or replaced.

A case is bound to its evidence by identity, not by path: the size, a sha256 over sampled
sectors (`evidence_identity`) and, once the analysis ran, the PV and VG ids. Evidence that is
not the one the case was made on is refused (`CaseMismatch`) with a choice: open it read-only
without the case, or start a new case (the old one is kept aside). No UI imports here.

The audit log is tamper evident: each entry carries `hash`, the sha256 of the previous entry's
hash and this entry's canonical JSON (`chain_hash`); `verify_chain` finds the first entry that
does not fit.

Beside this module: core/case_audit.py (evidence identity, the audit hash chain),
core/case_maps.py (Extent, Patch, EditedMap, CaseError), core/case_paths.py (where the file lives).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

# names kept importable from core.case (the identity, edit model and paths live beside it)
from core.case_audit import (GENESIS, IDENTITY_SAMPLES, canonical, chain_hash,  # noqa: F401
                             evidence_identity, verify_chain)
from core.case_maps import CaseError, EditedMap, Extent, Patch, _manual  # noqa: F401
from core.case_paths import (CASE_FORMAT, CASE_SUFFIX, _refuse_foreign, _writable_dir,  # noqa: F401
                             check_case_path, default_case_path)
from core.errors import UnsafeError
from core.output import atomic_write_bytes

CASE_VERSION = 1
MAX_CASE_BYTES = 256 << 20  # a case file is small; anything bigger is not one of ours
MAX_HISTORY = 10_000        # undo depth kept in the file (oldest dropped first)
SOURCES = ("metadata", "vhd-match", "adjacency", "manual", "gap")


class CaseMismatch(UnsafeError):
    """The case file was made on other evidence (the message names both ways on)."""


MAX_IMAGE_BYTES = 1 << 62      # a case's `image.bytes` beyond this is not a disk size


class Case:
    """Chosen generation, edited extent maps with undo/redo, append-only audit log, autosave."""

    def __init__(self, path: str | None, image_path: str = "", image_bytes: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.image_path = image_path
        self.image_bytes = image_bytes
        self.generation: dict[str, Any] | None = None   # {"vg": name, "seqno": n}
        self.maps: dict[str, EditedMap] = {}
        self.undo_stack: list[Patch] = []
        self.redo_stack: list[Patch] = []
        self.audit: list[dict[str, Any]] = []
        self.identity: dict[str, Any] | None = None      # evidence_identity() of the evidence
        self.lvm_identity: list[dict[str, Any]] | None = None  # [{"vg", "id", "pvs"}]
        self.created = clock()
        self._clock = clock
        self.listeners: list[Callable[[Case], None]] = []

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": CASE_FORMAT,
            "version": CASE_VERSION,
            "image": {"path": self.image_path, "bytes": self.image_bytes,
                      "identity": self.identity, "lvm": self.lvm_identity},
            "created": self.created,
            "generation": self.generation,
            "maps": {k: m.to_json() for k, m in self.maps.items()},
            "undo": [p.to_json() for p in self.undo_stack[-MAX_HISTORY:]],
            "redo": [p.to_json() for p in self.redo_stack[-MAX_HISTORY:]],
            "audit": self.audit,
        }

    def save(self) -> None:
        """Atomic write of the whole case (no-op for an in-memory case)."""
        if not self.path:
            return
        data = json.dumps(self.to_json(), indent=1).encode()
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            raise CaseError(f"cannot save case file {self.path}: {exc.strerror}") from None

    @classmethod
    def from_json(cls, doc: Any, path: str | None = None) -> "Case":
        if not isinstance(doc, dict) or doc.get("format") != CASE_FORMAT:
            raise CaseError("not a srsalvage case file")
        version = doc.get("version")
        if not isinstance(version, int) or version < 1:
            raise CaseError(f"bad case version {version!r}")
        if version > CASE_VERSION:
            raise CaseError(f"case version {version} is newer than this srsalvage ({CASE_VERSION})")
        image = doc.get("image") or {}
        if not isinstance(image, dict):
            raise CaseError("bad image entry")
        nbytes = image.get("bytes", 0) or 0
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes <= MAX_IMAGE_BYTES:
            raise CaseError(f"case-image-bytes: image size {repr(nbytes)[:40]} is not a disk size")
        case = cls(path, str(image.get("path", "")), nbytes)
        created = doc.get("created", case.created)
        if isinstance(created, bool) or not isinstance(created, (int, float)) \
                or not math.isfinite(created) or not 0 <= created < 1e11:
            raise CaseError(f"case-created: creation time {repr(created)[:40]} is not a time")
        case.created = float(created)
        identity = image.get("identity")
        if identity is not None and not isinstance(identity, dict):
            raise CaseError("bad evidence identity")
        case.identity = identity
        lvm_ids = image.get("lvm")
        if lvm_ids is not None and not isinstance(lvm_ids, list):
            raise CaseError("bad LVM identity")
        case.lvm_identity = lvm_ids
        gen = doc.get("generation")
        if gen is not None and not isinstance(gen, dict):
            raise CaseError("bad generation entry")
        case.generation = gen
        maps = doc.get("maps", {})
        if not isinstance(maps, dict):
            raise CaseError("bad maps entry")
        for key, m in maps.items():
            vm = EditedMap.from_json(m)
            vm.key = str(key)
            case.maps[str(key)] = vm
        for name in ("undo", "redo"):
            items = doc.get(name, [])
            if not isinstance(items, list):
                raise CaseError(f"bad {name} entry")
            getattr(case, f"{name}_stack").extend(Patch.from_json(p) for p in items)
        audit = doc.get("audit", [])
        if not isinstance(audit, list) or not all(isinstance(a, dict) for a in audit):
            raise CaseError("bad audit log")
        case.audit = audit
        return case

    @classmethod
    def load(cls, path: str) -> "Case":
        """Load a case file; CaseError (one line) when it is unreadable or damaged."""
        try:
            size = os.path.getsize(path)
            if size > MAX_CASE_BYTES:
                raise CaseError(f"{path}: {size} bytes, too large for a case file")
            with open(path, "rb") as f:
                raw = f.read(MAX_CASE_BYTES + 1)
        except OSError as exc:
            raise CaseError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CaseError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
        except RecursionError:
            raise CaseError(f"{path}: nested too deeply") from None
        try:
            return cls.from_json(doc, path)
        except CaseError as exc:
            raise CaseError(f"{path}: {exc}") from None
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CaseError(f"{path}: damaged ({type(exc).__name__}: {str(exc)[:80]})") from None

    @classmethod
    def open(cls, image_path: str, case_path: str | None = None, image_bytes: int = 0,
             clock: Callable[[], float] = time.time, identity: dict[str, Any] | None = None,
             new_case: bool = False, log_open: bool = True) -> tuple["Case", str | None]:
        """The case for an image: loaded when its file exists, else new.

        Returns (case, message): message is a one-line note for the technician when the file was
        damaged (it is moved aside and a fresh case starts) or belongs to an image of another size.
        `identity` (evidence_identity) binds the case to the evidence: a case made on other
        evidence raises CaseMismatch, unless `new_case` (the old file is then kept aside).
        A file named by `case_path` that is not a srsalvage case raises UnsafeError: it is never
        moved or replaced.
        """
        path = case_path or default_case_path(image_path)
        moved = None
        if case_path is None and not os.path.exists(path) and not _writable_dir(path):
            # evidence on a read-only mount (the usual case in the field): keep the case here
            fallback = os.path.abspath(os.path.basename(image_path) + CASE_SUFFIX)
            if fallback != path and _writable_dir(fallback):
                moved = f"the image's folder is read-only: case file kept as {fallback}"
                path = fallback
        check_case_path(path, image_path)
        stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime(clock()))

        def fresh() -> "Case":
            case = cls(path, os.path.abspath(image_path), image_bytes, clock=clock)
            case.identity = identity
            return case

        if not os.path.exists(path) and not os.path.islink(path):
            return fresh(), moved
        if case_path is not None:
            _refuse_foreign(path)
        try:
            case = cls.load(path)
        except CaseError as exc:
            aside = f"{path}.damaged-{stamp}"
            try:
                os.replace(path, aside)
                note = f"case file damaged ({exc}); kept as {aside}, starting a fresh case"
            except OSError:
                note = f"case file damaged ({exc}); starting a fresh case"
            case = fresh()
            try:
                case.log("case-reset", detail=str(exc))
            except CaseError as save_exc:
                note += f"; {save_exc}"
            return case, note
        case._clock = clock
        note = None
        mismatch = case.identity_mismatch(identity, image_bytes)

        def start_over(aside: str, why: str, said: str) -> tuple["Case", str]:
            """The old case moved to `aside` (never deleted), a fresh one in its place."""
            try:
                os.replace(path, aside)
            except OSError as exc:
                raise CaseError(f"cannot move {path} aside: {exc.strerror}") from None
            started = fresh()
            started.log("case-new", detail=f"previous case kept as {aside}{why}")
            return started, f"new case started; {said} is kept as {aside}"

        if new_case and not mismatch:
            # a new case on request (e.g. the old one's VG ids are another SR's): kept aside
            return start_over(f"{path}.previous-{stamp}", "", "the previous one")
        if mismatch:
            if not new_case:
                raise CaseMismatch(
                    f"case file {path} was made on other evidence ({mismatch}): open it "
                    f"read-only without the case (--no-case) or start a new case (--new-case; "
                    f"the old case is kept as {path}.other-evidence-<time>)")
            return start_over(f"{path}.other-evidence-{stamp}", f": {mismatch}",
                              "the case for the other evidence")
        if image_bytes and case.image_bytes and case.image_bytes != image_bytes:
            note = (f"case file {path} was made for an image of {case.image_bytes} bytes, "
                    f"this one has {image_bytes}")
        case.image_path = os.path.abspath(image_path)
        case.image_bytes = image_bytes or case.image_bytes
        if identity is not None and case.identity is None:
            case.identity = identity   # a case from before identities: bound from now on
        if log_open:
            try:
                case.log("case-open")
            except CaseError as exc:
                note = str(exc)
        return case, note

    def identity_mismatch(self, identity: dict[str, Any] | None, image_bytes: int = 0) -> str:
        """Why `identity` is not the evidence this case was made on ("" when it is, or when
        the case has no identity to compare)."""
        mine = self.identity
        if not identity or not mine:
            return ""
        if mine.get("bytes") != identity.get("bytes"):
            return f"size {mine.get('bytes')} bytes, this evidence {identity.get('bytes')}"
        if mine.get("scheme") == identity.get("scheme") \
                and mine.get("sample_sha256") != identity.get("sample_sha256"):
            return (f"sampled-sector sha256 {str(mine.get('sample_sha256'))[:16]}…, this evidence "
                    f"{str(identity.get('sample_sha256'))[:16]}…")
        return ""

    def bind_lvm(self, vgs: list[dict[str, Any]]) -> str:
        """Record the VG and PV ids the analysis found ([{"vg", "id", "pvs"}]); "" when they fit
        the case, else why not (the ids of a case made on other evidence differ)."""
        vgs = [{"vg": str(v.get("vg")), "id": str(v.get("id")),
                "pvs": sorted(str(p) for p in v.get("pvs", []))} for v in vgs]
        if not vgs:
            return ""
        if self.lvm_identity:
            known = {v.get("id") for v in self.lvm_identity if isinstance(v, dict)}
            found = {v["id"] for v in vgs}
            if known and not known & found:
                return (f"VG id(s) {', '.join(sorted(map(str, known)))} in the case, "
                        f"{', '.join(sorted(found))} on this evidence")
            return ""
        self.lvm_identity = vgs
        self.log("evidence-identity", detail="VG and PV ids recorded",
                 lvm=vgs, identity=self.identity)
        return ""

    # -- audit log ------------------------------------------------------------------------------
    def log(self, action: str, vdi: str | None = None, detail: str = "", **extra: Any) -> dict:
        """Append one entry to the audit log (never rewritten) and save."""
        entry: dict[str, Any] = {"time": round(self._clock(), 3), "action": action}
        if vdi is not None:
            entry["vdi"] = vdi
        if detail:
            entry["detail"] = detail
        entry.update(extra)
        # round-trip through JSON so the hash covers exactly what is saved and reloaded
        entry = json.loads(json.dumps(entry, default=str))
        prev = self.audit[-1].get("hash", GENESIS) if self.audit else GENESIS
        entry["prev"] = prev if isinstance(prev, str) else GENESIS
        entry["hash"] = chain_hash(entry["prev"], entry)
        self.audit.append(entry)
        self._changed()
        return entry

    def _changed(self) -> None:
        self.save()
        for listener in list(self.listeners):
            listener(self)

    # -- generation -----------------------------------------------------------------------------
    def choose_generation(self, vg: str, seqno: int) -> None:
        if self.generation == {"vg": vg, "seqno": seqno}:
            return
        self.generation = {"vg": vg, "seqno": int(seqno)}
        self.log("choose-generation", detail=f"seqno {seqno} of {vg}", vg=vg, seqno=int(seqno))

    # -- maps -----------------------------------------------------------------------------------
    def has_map(self, key: str) -> bool:
        return key in self.maps

    def ensure_map(self, key: str, extents: Iterable[Extent], origin: str = "") -> EditedMap:
        """The case's map for `key`, initialised from `extents` (the engine's) the first time."""
        if key not in self.maps:
            self.maps[key] = EditedMap(key, list(extents), origin)
        return self.maps[key]

    def reset_map(self, key: str, extents: Iterable[Extent], origin: str) -> None:
        """Replace the whole map (e.g. from a fresh reconstruction) as one undoable edit."""
        new = list(extents)
        old = self.maps[key].extents if key in self.maps else []
        if key not in self.maps:
            self.maps[key] = EditedMap(key, [], origin)
        self.maps[key].origin = origin
        self._apply(Patch(key, 0, list(old), new, "reset", f"map from {origin}"))

    def map_of(self, key: str) -> EditedMap:
        try:
            return self.maps[key]
        except KeyError:
            raise CaseError(f"no map for {key} in the case") from None

    # -- edits (each one is a patch; all undoable) -----------------------------------------------
    def _apply(self, patch: Patch, record: bool = True) -> Patch:
        ext = self.maps[patch.vdi].extents
        end = patch.start + len(patch.before)
        if ext[patch.start:end] != patch.before:
            raise CaseError(f"{patch.vdi}: map changed under the edit at LE {patch.start}")
        ext[patch.start:end] = patch.after
        if record:
            self.undo_stack.append(patch)
            del self.undo_stack[:-MAX_HISTORY]
            self.redo_stack.clear()
            self.log(patch.action, vdi=patch.vdi, detail=patch.detail)
        return patch

    def _pe_holders(self, key: str) -> dict[int, str]:
        """PE -> the other VDI whose edited map places it (issue 10: one PE, one place)."""
        out: dict[int, str] = {}
        for other, m in self.maps.items():
            if other != key:
                for e in m.extents:
                    if e.pe is not None:
                        out.setdefault(e.pe, other)
        return out

    def _check_unique(self, key: str, new: list[Extent]) -> None:
        """No edit may place one PE twice: not at two LEs of this VDI, not in another VDI's
        map of this case."""
        held = self._pe_holders(key)
        seen: dict[int, int] = {}
        for le, e in enumerate(new):
            if e.pe is None:
                continue
            if e.pe in seen:
                raise CaseError(f"{key}: PE {e.pe} would be LE {seen[e.pe]} and LE {le}")
            if e.pe in held:
                raise CaseError(f"{key}: PE {e.pe} is already placed in {held[e.pe]}'s map")
            seen[e.pe] = le

    def _edit(self, key: str, new: list[Extent], action: str, detail: str) -> Patch | None:
        old = self.map_of(key).extents
        # the smallest slice that differs: history stays small on huge maps
        lo = 0
        while lo < len(old) and lo < len(new) and old[lo] == new[lo]:
            lo += 1
        ho, hn = len(old), len(new)
        while ho > lo and hn > lo and old[ho - 1] == new[hn - 1]:
            ho -= 1
            hn -= 1
        if lo == ho and lo == hn:
            return None
        return self._apply(Patch(key, lo, list(old[lo:ho]), list(new[lo:hn]), action, detail))

    def _check_le(self, key: str, le: int, allow_end: bool = False) -> list[Extent]:
        ext = self.map_of(key).extents
        limit = len(ext) + (1 if allow_end else 0)
        if not 0 <= le < limit:
            raise CaseError(f"{key}: LE {le} out of range (0..{len(ext) - 1})")
        return ext

    def swap(self, key: str, a: int, b: int) -> Patch | None:
        """Exchange the PEs of LE a and LE b."""
        ext = self._check_le(key, a)
        self._check_le(key, b)
        new = list(ext)
        new[a], new[b] = _manual(ext[b]), _manual(ext[a])
        return self._edit(key, new, "swap", f"LE {a} <-> LE {b}")

    def move(self, key: str, le: int, delta: int) -> Patch | None:
        """Move the extent at `le` one place up (delta -1) or down (+1): a swap with its neighbour."""
        ext = self._check_le(key, le)
        other = le + delta
        if not 0 <= other < len(ext):
            return None
        new = list(ext)
        new[le], new[other] = _manual(ext[other]), _manual(ext[le])
        return self._edit(key, new, "move", f"LE {le} -> LE {other}")

    def set_pe(self, key: str, le: int, pe: int | None) -> Patch | None:
        ext = self._check_le(key, le)
        if pe is not None and pe < 0:
            raise CaseError(f"bad PE {pe}")
        new = list(ext)
        new[le] = Extent(pe, 1.0, "manual")
        return self._edit(key, new, "set-pe", f"LE {le} = PE {pe}")

    def insert_gap(self, key: str, le: int) -> Patch | None:
        """An unknown extent before `le`; the following extents move one LE further."""
        ext = self._check_le(key, le, allow_end=True)
        new = list(ext)
        new.insert(le, Extent(None, 0.0, "gap"))
        return self._edit(key, new, "insert-gap", f"gap at LE {le}")

    def delete(self, key: str, le: int) -> Patch | None:
        """Remove the extent at `le`; the following extents move one LE back."""
        ext = self._check_le(key, le)
        new = list(ext)
        del new[le]
        return self._edit(key, new, "delete", f"LE {le} (PE {ext[le].pe}) removed")

    def accept(self, key: str, suggestions: Sequence[Extent | None], le: int | None = None,
               min_confidence: float = 0.0) -> Patch | None:
        """Take the engine's suggestion for one LE, or for every LE whose suggestion is at least
        `min_confidence` sure."""
        ext = self.map_of(key).extents
        new = list(ext)
        les = [le] if le is not None else range(len(suggestions))
        taken = 0
        for i in les:
            if i is None or not 0 <= i < len(suggestions):
                continue
            s = suggestions[i]
            if s is None or s.pe is None or s.confidence < min_confidence:
                continue
            if s.pe in self._pe_holders(key):
                continue    # a suggestion whose PE another VDI's map places is left
            while len(new) <= i:
                new.append(Extent(None, 0.0, "gap"))
            if new[i] != s:
                new[i] = s
                taken += 1
        # the accepted map may not place one PE twice (issue 10): a suggestion whose PE is
        # still at another LE once every suggestion is taken is left as it was
        for _ in range(len(new) + 1):
            seen: dict[int, int] = {}
            clash = None
            for j, e in enumerate(new):
                if e.pe is None:
                    continue
                if e.pe in seen:
                    clash = j if j < len(ext) and new[j] != ext[j] else seen[e.pe]
                    break
                seen[e.pe] = j
            if clash is None:
                break
            if le is not None:
                raise CaseError(f"{key}: PE {new[clash].pe} is already placed at another LE")
            if clash < len(ext) and new[clash] != ext[clash]:
                new[clash] = ext[clash]
                taken -= 1
            else:
                raise CaseError(f"{key}: accepting would place PE {new[clash].pe} twice")
        what = f"LE {le}" if le is not None else f"{taken} extents with confidence >= {min_confidence:g}"
        return self._edit(key, new, "accept", f"engine suggestion for {what}")

    # -- undo / redo ----------------------------------------------------------------------------
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def undo(self) -> Patch | None:
        if not self.undo_stack:
            return None
        p = self.undo_stack.pop()
        self._apply(Patch(p.vdi, p.start, p.after, p.before, p.action, p.detail), record=False)
        self.redo_stack.append(p)
        self.log("undo", vdi=p.vdi, detail=f"{p.action}: {p.detail}")
        return p

    def redo(self) -> Patch | None:
        if not self.redo_stack:
            return None
        p = self.redo_stack.pop()
        self._apply(p, record=False)
        self.undo_stack.append(p)
        self.log("redo", vdi=p.vdi, detail=f"{p.action}: {p.detail}")
        return p

    # -- exports --------------------------------------------------------------------------------
    def log_export(self, vdi: str, path: str, fmt: str, size: int, sha256: str,
                   forced: bool = False, **extra: Any) -> dict:
        """An export: where, what, its digest, and (extra) the generation or map it was made
        from, the PEs read and every virtual range it could not trust."""
        return self.log("export", vdi=vdi, detail=f"{fmt} -> {path}", path=path, format=fmt,
                        bytes=size, sha256=sha256, forced=forced, **extra)


@dataclass
class CaseSummary:
    """Counts for a status line."""

    maps: int = 0
    edits: int = 0
    exports: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(case: Case) -> CaseSummary:
    return CaseSummary(len(case.maps), len(case.undo_stack),
                       sum(1 for a in case.audit if a.get("action") == "export"))

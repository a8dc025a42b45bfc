"""The recovery report: what the evidence is, what was found, what was decided and delivered.

`build_report(ev, case, analysis)` gathers one JSON-able document from the evidence's identity,
the LVM analysis (partitions, VGs, generations) and the case (chosen generation, per-VDI maps
with confidence, every manual edit, every export with its sha256 and untrusted ranges, every
carve, the whole audit trail). The audit trail's hash chain (core.case.verify_chain) is checked
and said: `audit_chain_ok` true or false, and where it breaks.

`render_html(doc)` writes it as one self-contained HTML page, readable printed (print CSS, no
script, no external resource). Every string from the evidence or the case is hostile: control
characters become visible escapes and the rest is HTML-escaped (issue 11: escaped for the
target). No UI imports here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import re
import threading
from typing import Any, Iterable

from core.case import Case, verify_chain
from core.progress import ProgressFn, Ticker
from core.sr import SrReport

EDIT_ACTIONS = ("swap", "move", "set-pe", "insert-gap", "delete", "accept", "reset", "undo",
                "redo", "fix")
REPORT_FORMAT = "srsalvage-report"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: Any) -> str:
    """A string with control and bidi characters shown as escapes (never interpreted)."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", s)


def esc(text: Any) -> str:
    """For HTML: visible() then html.escape (quotes too: safe inside attributes)."""
    return html.escape(visible("" if text is None else text), quote=True)


def full_sha256(ev, cancel: threading.Event | None = None, progress: ProgressFn | None = None,
                chunk: int = 8 << 20) -> str:
    """The whole evidence's sha256 (one sequential read; unreadable sectors count as zeros and
    are listed by the Evidence)."""
    h = hashlib.sha256()
    ticker = Ticker(max(1, ev.size), "sha256 of the evidence", progress, cancel)
    pos = 0
    while pos < ev.size:
        n = min(chunk, ev.size - pos)
        data = ev.read(pos, n)
        h.update(data + bytes(n - len(data)))
        pos += n
        ticker.tick(pos)
    ticker.done()
    return h.hexdigest()


def _time(t: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return visible(t)


def build_report(ev, case: Case, analysis: SrReport | None = None, evidence_sha256: str | None = None,
                 case_note: str | None = None) -> dict[str, Any]:
    """The report as one JSON-able document."""
    ok, broken_at, why = verify_chain(case.audit)
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": 1,
        "generated": _time(_dt.datetime.now(_dt.timezone.utc).timestamp()),
        "evidence": {"path": ev.path, "bytes": ev.size,
                     "sample_sha256": (case.identity or {}).get("sample_sha256"),
                     "identity_scheme": (case.identity or {}).get("scheme"),
                     "sha256": evidence_sha256,
                     "unreadable": [list(r) for r in getattr(ev, "unreadable", [])]},
        "case": {"path": case.path, "created": _time(case.created), "note": case_note,
                 "generation": case.generation, "lvm_identity": case.lvm_identity},
        "audit_chain_ok": ok,
        "audit_chain": {"ok": ok, "broken_at": broken_at, "detail": why,
                        "entries": len(case.audit)},
    }
    doc["found"] = _found(analysis, case)
    doc["vdis"] = _vdis(case, analysis)
    doc["exports"] = [_export(a, i) for i, a in enumerate(case.audit)
                      if isinstance(a, dict) and a.get("action") == "export"]
    doc["carves"] = [dict(a, index=i) for i, a in enumerate(case.audit)
                     if isinstance(a, dict) and a.get("action") == "carve"]
    doc["audit"] = [dict(a, index=i) for i, a in enumerate(case.audit)]
    return doc


def _found(analysis: SrReport | None, case: Case) -> dict[str, Any]:
    if analysis is None:
        return {"partitions": [], "volume_groups": [], "note": "no analysis"}
    used = {a.get("generation") for a in case.audit if isinstance(a, dict)
            and a.get("action") == "export" and a.get("generation") is not None}
    if case.generation:
        used.add(case.generation.get("seqno"))
    parts = [{"index": p.index, "scheme": p.scheme, "offset": p.offset, "bytes": p.bytes,
              "type": p.type, "name": p.name} for p in analysis.partitions]
    vgs = []
    for vg in analysis.volume_groups:
        gens = vg.generations
        cur = vg.current
        vgs.append({
            "name": vg.name, "id": vg.id,
            "pvs": [{"name": p.name, "id": p.id, "offset": p.offset, "pe_count": p.pe_count}
                    for p in vg.pvs],
            "generations": len(gens),
            "newest": gens[0].seqno if gens else None,
            "current": cur.seqno if cur is not None else None,
            "generations_used": sorted(s for s in used if isinstance(s, int)
                                       and any(g.seqno == s for g in gens)),
            "lvs": [{"name": lv.name, "label": analysis.label(vg, lv), "status": lv.status,
                     "map": lv.map_runs, "claimed_by": {str(k): v for k, v in
                                                       sorted(lv.claimed_by.items())}}
                    for lv in (gens[0].lvs.values() if gens else [])],
        })
    return {"partitions": parts, "volume_groups": vgs,
            "findings": [{"kind": f.kind, "severity": f.severity, "message": f.message}
                         for f in analysis.findings[:200]]}


def _labels(analysis: SrReport | None) -> dict[str, str]:
    """LV name -> the VDI's name label, from the first generation (newest first) that has one."""
    out: dict[str, str] = {}
    for vg in analysis.volume_groups if analysis is not None else ():
        for gen in vg.generations:
            for lv in gen.lvs.values():
                label = analysis.label(vg, lv)
                if label and lv.name not in out:
                    out[lv.name] = label
    return out


def _vdis(case: Case, analysis: SrReport | None) -> list[dict[str, Any]]:
    labels = _labels(analysis)
    keys = list(case.maps)
    for a in case.audit:
        k = a.get("vdi") if isinstance(a, dict) else None
        if isinstance(k, str) and k not in keys:
            keys.append(k)
    out = []
    for key in keys:
        m = case.maps.get(key)
        extents = [{"le": le, "pe": e.pe, "confidence": e.confidence, "source": e.source}
                   for le, e in enumerate(m.extents)] if m else []
        edits = [dict(a, index=i) for i, a in enumerate(case.audit)
                 if isinstance(a, dict) and a.get("vdi") == key and a.get("action") in EDIT_ACTIONS]
        exports = [_export(a, i) for i, a in enumerate(case.audit)
                   if isinstance(a, dict) and a.get("vdi") == key and a.get("action") == "export"]
        out.append({"key": key, "label": labels.get(key, ""), "origin": m.origin if m else "",
                    "extents": extents, "edits": edits, "exports": exports,
                    "manual_extents": sum(1 for e in extents if e["source"] == "manual"),
                    "lowest_confidence": min((e["confidence"] for e in extents), default=None)})
    return out


def _export(a: dict, index: int) -> dict[str, Any]:
    return {"index": index, "vdi": a.get("vdi"), "path": a.get("path"), "format": a.get("format"),
            "bytes": a.get("bytes"), "sha256": a.get("sha256"), "forced": a.get("forced"),
            "generation": a.get("generation"), "map": a.get("map"), "via": a.get("via"),
            "time": a.get("time"), "untrusted": a.get("untrusted") or [],
            "unrepaired": a.get("unrepaired") or [], "hash": a.get("hash")}


# -- HTML -----------------------------------------------------------------------------------------
CSS = """
body { font: 11pt/1.4 -apple-system, "DejaVu Sans", Arial, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 18pt; margin-bottom: 0; } h2 { font-size: 14pt; border-bottom: 2px solid #333;
margin-top: 1.6em; } h3 { font-size: 12pt; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; width: 100%; }
th, td { border: 1px solid #999; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #e8e8e8; } code, .mono { font-family: "DejaVu Sans Mono", monospace;
font-size: 9.5pt; word-break: break-all; }
.ok { color: #0a6b0a; font-weight: bold; } .bad { color: #b00000; font-weight: bold; }
.warn { background: #fff3cd; } .broken { background: #f8d7da; }
.banner { padding: .6em 1em; border: 2px solid; margin: 1em 0; }
.banner.ok { border-color: #0a6b0a; } .banner.bad { border-color: #b00000; }
@media print { body { margin: 0; font-size: 9.5pt; } h2 { page-break-after: avoid; }
  tr { page-break-inside: avoid; } .noprint { display: none; } a { color: inherit; } }
"""


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], row_class=None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers) if any(headers) else ""
    body = []
    for i, row in enumerate(rows):
        cls = row_class(i) if row_class else ""
        body.append(f"<tr{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>"
                    + "".join(f"<td>{c if isinstance(c, _Raw) else esc(c)}</td>" for c in row)
                    + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML (built here from escaped parts only)."""


def _mono(text: Any) -> _Raw:
    return _Raw(f"<code>{esc(text)}</code>")


def _ranges_html(ranges: list[dict]) -> _Raw:
    if not ranges:
        return _Raw('<span class="ok">none</span>')
    lines = []
    for r in ranges[:50]:
        ev = r.get("evidence_offset")
        lines.append(esc(f"virtual {r.get('virtual_start', 0):#x}-{r.get('virtual_end', 0):#x} "
                         f"{r.get('trust')}" + (f" (evidence {ev:#x})" if isinstance(ev, int) else "")
                         + (f": {r.get('note')}" if r.get("note") else "")))
    if len(ranges) > 50:
        lines.append(esc(f"... {len(ranges) - 50} more (see the JSON report)"))
    return _Raw('<span class="bad">' + "<br>".join(lines) + "</span>")


def render_html(doc: dict[str, Any]) -> str:
    ev, case, chain = doc["evidence"], doc["case"], doc["audit_chain"]
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>srsalvage recovery report — {esc(ev['path'])}</title><style>{CSS}</style>"
           f"</head><body>"]
    out.append(f"<h1>Recovery report</h1><p>{esc(ev['path'])} — generated {esc(doc['generated'])} "
               f"by srsalvage. The evidence was opened read-only.</p>")
    cls = "ok" if chain["ok"] else "bad"
    out.append(f'<div class="banner {cls}" id="chain"><span class="{cls}">Audit trail: '
               + ("hash chain intact" if chain["ok"] else "HASH CHAIN BROKEN")
               + f"</span> — {esc(chain['detail'])}</div>")
    out.append("<h2>Evidence</h2>")
    out.append(_table(("", ""), [
        ("path", _mono(ev["path"])), ("size", f"{ev['bytes']} bytes"),
        ("sha256 (whole evidence)", _mono(ev["sha256"] or "not computed (report --hash)")),
        ("sampled-sector sha256", _mono(f"{ev['sample_sha256']} ({ev['identity_scheme']})")),
        ("unreadable ranges", len(ev["unreadable"])),
        ("case file", _mono(case["path"] or "(none)")), ("case created", case["created"]),
        ("chosen generation", esc(case["generation"]) if case["generation"] else "—"),
    ]))
    if case.get("note"):
        out.append(f'<p class="warn">{esc(case["note"])}</p>')
    found = doc["found"]
    out.append("<h2>What was found</h2><h3>Partitions</h3>")
    out.append(_table(("#", "scheme", "offset", "bytes", "type", "name"),
                      [(p["index"], p["scheme"], p["offset"], p["bytes"], p["type"], p["name"])
                       for p in found.get("partitions", [])]))
    for vg in found.get("volume_groups", []):
        out.append(f"<h3>Volume group {esc(vg['name'])}</h3>")
        out.append(_table(("", ""), [
            ("VG id", _mono(vg["id"])),
            ("PVs", _Raw("<br>".join(esc(f"{p['name']} {p['id']} at {p['offset']}, "
                                         f"{p['pe_count']} PEs") for p in vg["pvs"]))),
            ("metadata generations", f"{vg['generations']} (newest seqno {vg['newest']}, LVM "
                                     f"would use {vg['current']})"),
            ("generations used", ", ".join(map(str, vg["generations_used"])) or "—"),
        ]))
        out.append(_table(("LV (newest generation)", "name label", "status", "map [LE, PE, n]"),
                          [(_mono(lv["name"]), lv["label"], lv["status"], _mono(lv["map"]))
                           for lv in vg["lvs"]]))
    out.append("<h2>VDIs: maps, edits, exports</h2>")
    for v in doc["vdis"]:
        out.append(f"<h3 id=\"vdi-{esc(v['key'])}\">{esc(v['key'])}"
                   + (f" “{esc(v['label'])}”" if v["label"] else "") + "</h3>")
        if v["extents"]:
            out.append(f"<p>map from {esc(v['origin'] or '?')}; {len(v['extents'])} extents, "
                       f"{v['manual_extents']} placed by hand, lowest confidence "
                       f"{esc(v['lowest_confidence'])}</p>")
            out.append(_table(("LE", "PE", "confidence", "source"),
                              [(e["le"], "—" if e["pe"] is None else e["pe"],
                                f"{e['confidence']:.2f}", e["source"]) for e in v["extents"]],
                              lambda i, ex=v["extents"]: "warn" if ex[i]["confidence"] < 0.75 else ""))
        if v["edits"]:
            out.append("<p>Edits (audit entries):</p>")
            out.append(_table(("#", "time", "action", "detail", "entry hash"),
                              [(e["index"], _time(e.get("time")), e.get("action"), e.get("detail"),
                                _mono((e.get("hash") or "")[:16])) for e in v["edits"]]))
        for x in v["exports"]:
            out.append(_export_html(x))
    out.append("<h2>Exports</h2>")
    out.append(_table(("#", "VDI", "format", "file", "bytes", "sha256", "from", "untrusted ranges"),
                      [(x["index"], _mono(x["vdi"]), x["format"], _mono(x["path"]), x["bytes"],
                        _mono(x["sha256"]), f"{x.get('map') or ''}"
                        + (" (forced)" if x.get("forced") else ""), _ranges_html(x["untrusted"]))
                       for x in doc["exports"]]) if doc["exports"] else "<p>No exports.</p>")
    out.append("<h2>Carving</h2>")
    if doc["carves"]:
        for c in doc["carves"]:
            out.append(f"<h3>#{c['index']}: {esc(c.get('detail'))}"
                       + (f" (inside {esc(c.get('vdi'))})" if c.get("vdi") else "") + "</h3>")
            files = c.get("files") or []
            out.append(_table(("file", "details"),
                              [(_mono(f.get("path")), ", ".join(f"{k} {visible(v)}" for k, v in f.items()
                                                                if k != "path"))
                               for f in files if isinstance(f, dict)]) if files else
                       "<p>nothing found</p>")
    else:
        out.append("<p>No carving recorded.</p>")
    out.append("<h2>Audit trail</h2><p>Each entry's hash is the sha256 of the previous entry's "
               "hash and this entry's content: an altered, removed or inserted entry breaks the "
               "chain from there on.</p>")
    broken = chain.get("broken_at")
    out.append(_table(("#", "time", "action", "VDI", "detail", "via", "prev", "hash"),
                      [(a["index"], _time(a.get("time")), a.get("action"), a.get("vdi") or "",
                        a.get("detail") or "", a.get("via") or "workstation",
                        _mono((a.get("prev") or "")[:16]), _mono((a.get("hash") or "")[:16]))
                       for a in doc["audit"]],
                      lambda i: "broken" if broken is not None and i >= broken else ""))
    out.append("</body></html>\n")
    return "".join(out)


def _export_html(x: dict) -> str:
    return (f"<p>Export #{x['index']}: {esc(x['format'])} → <code>{esc(x['path'])}</code>, "
            f"{esc(x['bytes'])} bytes, sha256 <code>{esc(x['sha256'])}</code>, from "
            f"{esc(x.get('map') or '?')}{' (forced)' if x.get('forced') else ''}; untrusted: "
            f"{_ranges_html(x['untrusted'])}</p>")

"""HTML building blocks of ``report.html``: escaped text, sections, lists, tables and embedded PNGs.

Every function escapes what it is given; numbers are right-aligned, text and yes/no left-aligned.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence


def esc(value: object) -> str:
    return html.escape(str(value))


def prose(text: str) -> str:
    """Escaped text with `command` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def section(title: str, content: str) -> str:
    return f'<h2 id="{esc(title.lower().replace(" ", "-"))}">{esc(title)}</h2>{content}'


def bullets(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{prose(item)}</li>" for item in items) + "</ul>" if items else ""


def missing(what: str) -> str:
    return f'<p class="muted">{esc(what)}</p>'


def image(png: bytes | None, alt: str, absent: str) -> str:
    if png is None:
        return missing(absent)
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def cell(value: object) -> str:
    """Numbers right-aligned; text, yes/no and lists left-aligned; everything escaped, never cut."""
    if isinstance(value, bool) or value is None:
        return f"<td>{'—' if value is None else 'yes' if value else 'no'}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>' if abs(value) >= 10_000 else f'<td class="n">{value}</td>'
    if isinstance(value, float):
        value += 0.0  # -0.0 (a loss of -log(1.0)) reads 0.000
        if value.is_integer() and abs(value) >= 2:  # a count JSON keeps as a float (20 images a class)
            return f'<td class="n">{int(value):,}</td>'
        text = f"{value:.3f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3g}"
        return f'<td class="n">{text}</td>'
    if isinstance(value, list | tuple) and all(not isinstance(v, Mapping | list) for v in value):
        value = ", ".join(map(str, value))
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"<td>{esc(text)}</td>"


def table(rows: Sequence[Sequence[object]], header: Sequence[str] = ()) -> str:
    if not rows:
        return ""
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(map(cell, row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def records(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def record_table(records: Sequence[Mapping[str, object]]) -> str:
    header = list(dict.fromkeys(k for record in records for k in record))
    return table([[record.get(h) for h in header] for record in records], header)


def flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def scalars_and_records(data: Mapping[str, object], skip: Sequence[str] = ()) -> str:
    """Scalars as one key/value table, then each list of records, however deep (``selection.json``'s
    ``trials.candidates``), as a titled table."""
    flat = flatten({k: v for k, v in data.items() if k not in skip})
    out = table([(key, value) for key, value in flat.items() if not records(value)])
    for key, rows in flat.items():
        if records(rows):
            out += (
                f"<h3>{esc(key.replace('_', ' ').replace('.', ': '))} ({len(rows)})</h3>{record_table(rows)}"
            )
    return out

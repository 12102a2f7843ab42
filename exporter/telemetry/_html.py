"""Shared pieces of the status pages: layout, stylesheet, escaping, times and the sparkline.

Every page is self-contained: one stylesheet inline (allowed by its hash in the
Content-Security-Policy), no script, no external asset, so it works in an air-gapped network
and under ``default-src 'none'``. Auto-refresh is a ``<meta http-equiv="refresh">`` that the
``?refresh=0`` link leaves out (pausing it).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STYLESHEET",
    "age",
    "badge",
    "cell",
    "duration",
    "esc",
    "iso",
    "moment",
    "page",
    "sparkline",
    "table",
    "utc",
    "when",
]

STYLESHEET = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;
--head:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--down:#cf222e;--unknown:#6e7781;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#8d96a0;
--line:#30363d;--head:#161b22;--ok:#3fb950;--warn:#d29922;--down:#f85149;--unknown:#8b949e;
--link:#4493f8}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:80rem;padding:.75rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--link)}
h1{font-size:1.3rem;margin:.2rem 0}h1 a{color:inherit;text-decoration:none}
h2{font-size:1.1rem;margin:1.4rem 0 .4rem}h3{font-size:1rem;margin:1rem 0 .3rem}
nav,.meta{color:var(--muted);font-size:.9rem}nav a{margin-right:.7rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600;white-space:nowrap}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.check td:first-child{padding-left:1.4rem;color:var(--muted)}
.badge{display:inline-block;border-radius:.6rem;padding:0 .5rem;font-size:.8rem;
font-weight:600;color:#fff;background:var(--unknown)}
.s-ok{background:var(--ok)}.s-degraded{background:var(--warn)}.s-down,.s-failed{background:var(--down)}
.endpoint,.age,.detail{color:var(--muted);font-size:.85rem}
.endpoint,.detail,code,pre{overflow-wrap:anywhere}
pre{background:var(--head);border:1px solid var(--line);padding:.6rem;overflow-x:auto;
font-size:.8rem;white-space:pre-wrap}
svg.spark{width:8rem;height:1.6rem;display:block}
.spark polyline{fill:none;stroke:var(--link);stroke-width:1.5}
.spark circle{fill:var(--down)}.over{color:var(--down);font-weight:600}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.4rem 0}
dt{color:var(--muted)}dd{margin:0}
time,code.nowrap{white-space:nowrap}
@media (max-width:40rem){body{padding:.4rem;font-size:14px}
table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid var(--line);
padding:.35rem 0}table.stack td{display:inline-block;border:0;padding:.1rem .5rem .1rem 0;
text-align:left}table.stack td:first-child{display:block}table.stack td:empty{display:none}
table.stack td[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}
tr.check td:first-child{padding-left:.8rem}.hide-narrow{display:none}}
""".strip()

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()

#: No script, no frame, no form, nothing loaded from anywhere: only the one hashed stylesheet.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_SPARK_WIDTH, _SPARK_HEIGHT = 120.0, 24.0


def esc(value: object) -> str:
    """Return ``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def utc(stamp: float) -> str:
    """Return a Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(stamp: float) -> str:
    """Return a Unix time as an ISO 8601 UTC string with milliseconds (``<time datetime>``)."""
    moment = dt.datetime.fromtimestamp(stamp, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def age(seconds: float) -> str:
    """Return a duration as a short age: ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``4 d 3 h``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def duration(seconds: float | None) -> str:
    """Return a latency: ``0.8 ms``, ``312 ms``, ``2.05 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


# Many rows share a timestamp (the checks of one probe run) and few badges exist: both are
# cached, which keeps a 10-deployment page at a few milliseconds.
@functools.lru_cache(maxsize=4096)
def moment(stamp: float | None) -> str:
    """Return a ``<time>`` element with the absolute UTC time, or ``-``."""
    return "-" if stamp is None else f'<time datetime="{iso(stamp)}">{utc(stamp)}</time>'


def when(stamp: float | None, now: float) -> str:
    """Return a ``<time>`` with the absolute UTC time and the age, or ``-``."""
    if stamp is None:
        return "-"
    return f'{moment(stamp)} <span class="age">({age(now - stamp)} ago)</span>'


@functools.lru_cache(maxsize=256)
def badge(text: str, kind: str | None = None) -> str:
    """Return a status badge coloured by ``kind`` (default: the text); the word is always shown."""
    return f'<span class="badge s-{esc(kind or text)}">{esc(text)}</span>'


def sparkline(points: Sequence[Mapping[str, Any]]) -> str:
    """Return an inline SVG of latencies (oldest left); cycles where it was down get a dot."""
    if not points:
        return '<span class="age">no cycle yet</span>'
    values = [float(p["latency_seconds"]) for p in points]
    top = max(values) or 1.0
    # A 2-unit margin all round, so the dots of the first and last cycles are not clipped.
    step = (_SPARK_WIDTH - 4) / max(len(values) - 1, 1)
    xy = [
        (2 + i * step, _SPARK_HEIGHT - 2 - (v / top) * (_SPARK_HEIGHT - 4))
        for i, v in enumerate(values)
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>'
        for (x, y), p in zip(xy, points, strict=True)
        if not p["up"]
    )
    label = (
        f"probe latency over the last {len(values)} cycles: min {duration(min(values))}, "
        f"max {duration(top)}, last {duration(values[-1])}"
    )
    return (
        f'<svg class="spark" viewBox="0 0 {_SPARK_WIDTH:g} {_SPARK_HEIGHT:g}" role="img" '
        f'aria-label="{esc(label)}"><title>{esc(label)}</title>'
        f'<polyline points="{line}"/>{dots}</svg>'
    )


def table(head: Sequence[str], rows: Iterable[str], css: str) -> str:
    """Return a table in its scroll box (``rows`` are ``<tr>`` HTML; ``head`` plain text)."""
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    # "stack": on a phone each row becomes a block of labelled cells instead of a wide line.
    return (
        f'<div class="scroll"><table class="stack {css}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def cell(content: str, css: str = "", label: str = "") -> str:
    """Return a cell; ``label`` names it when a phone shows the row as a block."""
    attrs = (f' class="{css}"' if css else "") + (f' data-label="{label}"' if label else "")
    return f"<td{attrs}>{content}</td>"


def _nav(links: Iterable[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="{esc(h)}">{esc(t)}</a>' for h, t in links) + "</nav>"


def page(
    title: str,
    body: str,
    *,
    version: str,
    generated_at: float,
    refresh: int | None = None,
    path: str = "/",
) -> str:
    """Return a whole HTML document around ``body`` (already HTML).

    Args:
        title: The document title (plain text).
        body: The page's main content (HTML).
        version: The exporter version shown in the header.
        generated_at: When the data was read (shown as UTC).
        refresh: Seconds between automatic reloads; 0 shows a paused page with a resume
            link; ``None`` for a page that never changes (no control at all).
        path: The page's own path, for the pause and resume links.
    """
    head_refresh = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    if refresh is None:
        control = ""
    elif refresh:
        control = (
            f' · auto-refresh every {refresh} s · <a id="refresh-toggle" '
            f'href="{esc(path)}?refresh=0">pause</a>'
        )
    else:
        control = f' · auto-refresh paused · <a id="refresh-toggle" href="{esc(path)}">resume</a>'
    nav = _nav(
        (
            ("/", "Status"),
            ("/probes", "Probe cycles"),
            ("/drills", "Drills"),
            ("/metrics", "Metrics"),
            (f"/api/v1{'/status' if path == '/' else path}", "JSON"),
        )
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f'{head_refresh}<link rel="icon" href="data:,"><title>{esc(title)}</title>'
        f"<style>{STYLESHEET}</style></head><body><header>"
        f'<h1><a href="/">ingest-exporter</a> <span class="age">{esc(version)}</span></h1>'
        f'{nav}<p class="meta">Generated {moment(generated_at)}{control}</p>'
        f"</header><main>{body}</main></body></html>"
    )

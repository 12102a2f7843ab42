r"""Markdown to HTML for the exporter's own reports (the drill report), nothing more.

The reports are written by this code base with a small subset: ``#``/``##`` headings, pipe
tables (header, ``|---|`` rule, rows; ``\|`` for a literal bar), fenced code blocks, plain
paragraphs, and inline ``code`` and ``**bold**``. Every piece of text is escaped first, so a
value inside a report (an error message, command output) can never become markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from exporter.telemetry._html import esc

__all__ = ["markdown_to_html"]

_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    """Escape ``text`` and turn its ``code`` and **bold** spans into elements."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(esc(text[last : match.start()]))
        code, bold = match.groups()
        out.append(
            f"<code>{esc(code)}</code>" if code is not None else f"<strong>{esc(bold)}</strong>"
        )
        last = match.end()
    out.append(esc(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    r"""Split a table row on bars that are not escaped as ``\|``."""
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _table(lines: list[str]) -> str:
    head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(lines[0]))
    rows = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(line)) + "</tr>"
        for line in lines[2:]
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _blocks(text: str) -> Iterator[str]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines)
            )
            yield f"<pre>{esc(chr(10).join(lines[i + 1 : end]))}</pre>"
            i = end + 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)  # the page has its own h1
            yield f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>"
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            yield _table(lines[i:end])
            i = end
        else:
            end = i + 1  # this line at least, whatever it starts with
            while (
                end < len(lines)
                and lines[end].strip()
                and not lines[end].startswith(("#", "|", "```"))
            ):
                end += 1
            yield f"<p>{'<br>'.join(_inline(x) for x in lines[i:end])}</p>"
            i = end


def markdown_to_html(text: str) -> str:
    """Return the HTML of a report written in the subset above."""
    return "".join(_blocks(text))

from __future__ import annotations

from exporter.telemetry._markdown import markdown_to_html


def test_headings_tables_code_and_paragraphs() -> None:
    """The report subset becomes headings, a table, a pre block and a paragraph."""
    text = (
        "# Failover drill `d-1`: **FAIL**\n\n"
        "| measure | value |\n|---|---|\n| RTO | 41.2 s |\n| a \\| b | `x` |\n\n"
        "## Injection\n\n`cmd --x`: exit code 1\n(0.5 s)\n\n"
        "```text\nline <1>\n```\n"
    )
    html = markdown_to_html(text)
    assert html.startswith("<h2>Failover drill <code>d-1</code>: <strong>FAIL</strong></h2>")
    assert "<thead><tr><th>measure</th><th>value</th></tr></thead>" in html
    assert "<tr><td>RTO</td><td>41.2 s</td></tr>" in html
    assert "<tr><td>a | b</td><td><code>x</code></td></tr>" in html
    assert "<h3>Injection</h3>" in html
    assert "<p><code>cmd --x</code>: exit code 1<br>(0.5 s)</p>" in html
    assert "<pre>line &lt;1&gt;</pre>" in html


def test_text_never_becomes_markup() -> None:
    """Markup inside any part of a report is escaped, a stray bar line is a paragraph."""
    html = markdown_to_html(
        "# <script>x</script>\n| <b>not a table</b>\nplain <img src=x>\n"
        "| h |\n|---|\n| <i>cell</i> |\n```\n<pre>\n"
    )
    assert "<script>" not in html
    assert "<b>" not in html
    assert "<img" not in html
    assert "<i>" not in html
    assert "&lt;script&gt;" in html
    assert "<p>| &lt;b&gt;not a table&lt;/b&gt;<br>plain &lt;img src=x&gt;</p>" in html
    assert html.endswith("<pre>&lt;pre&gt;</pre>")

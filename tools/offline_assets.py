"""Sphinx extension: the chapters' stored HTML outputs load nothing from a CDN.

matplotlib's ``FuncAnimation.to_jshtml`` (chapters 1 and 5) writes a ``<link>`` to Font Awesome 4.4 on
bootstrapcdn for its buttons' icons. The book's theme already serves Font Awesome itself
(``_static/scripts/fontawesome.js``, which turns every ``<i class="fa fa-play">`` into an inline SVG icon, old
icon names included), so the link only costs an offline reader a failed request. This extension removes such
links from the raw HTML outputs when the pages are written; the browser test checks that the buttons show their
icons with every request off the site blocked.
"""

from __future__ import annotations

import re

from docutils import nodes

CDN_STYLESHEET = re.compile(r'<link[^>]+href="https?://[^"]*font-awesome[^"]*"[^>]*>\s*', re.IGNORECASE)


def strip_cdn_links(html: str) -> str:
    """The HTML without <link> tags to a Font Awesome stylesheet on a CDN."""
    return CDN_STYLESHEET.sub("", html)


def _on_doctree_resolved(app, doctree, docname) -> None:
    for node in doctree.findall(nodes.raw):
        if "html" in node.get("format", "").split():
            text = node.astext()
            cleaned = strip_cdn_links(text)
            if cleaned != text:
                node.children = [nodes.Text(cleaned)]


def setup(app):
    app.connect("doctree-resolved", _on_doctree_resolved)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

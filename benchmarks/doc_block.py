"""Rewrites one generated block of a markdown document in place, between HTML-comment markers."""

from __future__ import annotations

from pathlib import Path


def replace_block(doc: Path, name: str, body: str) -> None:
    """Puts ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc`` (appending
    the markers if the document has none), leaving the hand-written text around them alone."""
    text = doc.read_text() if doc.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + "\n" + block + "\n"
    doc.write_text(text)

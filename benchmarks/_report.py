"""Writing a benchmark's results into its own section of a markdown file (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def write_section(path: str | Path, mark: str, title: str, body: str) -> None:
    """Replace the ``mark`` section of a markdown file (between HTML comments) or append it; written atomically."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"<!-- {mark}:start -->\n## {title}\n\n{body.rstrip()}\n<!-- {mark}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(mark)}:start -->.*?<!-- {re.escape(mark)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

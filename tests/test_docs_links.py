"""Every relative link, image path and anchor in README.md and docs/*.md resolves (GitHub's rules for
anchors)."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")


def pages() -> list:
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"),
                                                                recursive=True))


def prose_lines(text: str, keep_code: bool = False):
    """(line number, line) outside fenced code blocks; inline code spans blanked unless keep_code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line if keep_code else re.sub(r"`[^`]*`", "``", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of every script, digits and _
    return text.replace(" ", "-")


def anchors(path: str) -> set:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found, seen = set(), {}
    for _, line in prose_lines(text, keep_code=True):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def targets(path: str):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for number, line in prose_lines(text):
        for m in list(LINK.finditer(line)) + list(HTML_SRC.finditer(line)):
            yield number, m.group(1)


def broken(path: str) -> list:
    problems = []
    for number, target in targets(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        file_part, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        where = f"{os.path.relpath(path, REPO)}:{number}: {target}"
        if not os.path.exists(resolved):
            problems.append(f"{where} (no such file)")
        elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            problems.append(f"{where} (no such heading)")
    return problems


@pytest.mark.parametrize("path", pages(), ids=lambda p: os.path.relpath(p, REPO))
def test_links_resolve(path):
    assert broken(path) == []


def test_the_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "docs" / "page.md").write_text("# A page: the `x` flag\n\n## Twice\n\n## Twice\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n\n"
        "[ok](docs/page.md#a-page-the-x-flag) [ok](docs/page.md#twice-1) [ok](#top) ![ok](img.png)\n"
        "[ok](https://example.org/none) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[bad](docs/none.md) [bad](docs/page.md#twice-2) [bad](#nowhere) ![bad](docs/img.png)\n")
    found = broken(str(readme))
    assert [p.split(": ", 1)[1] for p in found] == [
        "docs/none.md (no such file)", "docs/page.md#twice-2 (no such heading)", "#nowhere (no such heading)",
        "docs/img.png (no such file)"]

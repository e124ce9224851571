"""The Markdown a reader opens renders as written: balanced code fences, relative links and anchors that resolve,
and a README that stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    p for p in ROOT.rglob("*.md") if not any(part.startswith(".") or part == "node_modules" for part in p.parts)
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in outside_code(page.read_text()):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def outside_code(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            lines.append(line)
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_are_balanced_and_alone_on_their_line(page: Path) -> None:
    fences = [ln for ln in page.read_text().splitlines() if "```" in ln]
    for line in fences:
        assert re.fullmatch(r"\s*```[\w+-]*\s*", line), f"{page.name}: text beside a fence: {line!r}"
    assert len(fences) % 2 == 0, f"{page.name}: {len(fences)} fences"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for line in outside_code(page.read_text()):
        for match in LINK.finditer(line):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL: not checked offline
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: {target} does not exist"
            if anchor and resolved.suffix == ".md":
                assert anchor in anchors(resolved), f"{page.name}: no heading #{anchor} in {resolved.name}"


def test_the_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "shared/data" not in text  # a reader's clone has no ../shared: examples name their own paths


def test_the_configuration_page_names_every_experiment() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [p.stem for p in sorted((ROOT / "conf" / "experiment").glob("*.yaml")) if f"`{p.stem}`" not in text]
    assert not missing, f"docs/configuration.md does not name: {missing}"


def _console_scripts() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_every_command_and_script_the_docs_name_exists() -> None:
    """A `perfedavg-…` command named anywhere in README/docs is a console script the package installs, and a
    `scripts/…` file named outside the record of older commands (results quote what produced them, and
    docs/reproducing.md translates those) is in the checkout."""
    scripts = _console_scripts()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for command in set(re.findall(r"\bperfedavg-[a-z][a-z-]*[a-z]\b", text)):
            assert command in scripts, f"{page.name} names {command}, which pyproject.toml does not install"
        if page.name == "results.md":
            continue
        current = text.split("### Commands quoted by older results")[0]
        for path in set(re.findall(r"\bscripts/[\w./-]+\.(?:py|sh)\b", current)):
            assert (ROOT / path).is_file(), f"{page.name} names {path}, which does not exist"

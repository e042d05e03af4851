"""The README is a front door: its tour runs, its links resolve, it stays short."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["y"].shape == namespace["x"].shape
    assert namespace["spikes"].shape == namespace["x"].shape


def test_readme_and_docs_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 300
    assert "/work/" not in README and "DESIGN.md" not in README
    for page in (ROOT / "docs").glob("*.md"):
        text = page.read_text()
        assert "/work/" not in text and "DESIGN.md" not in text, page.name

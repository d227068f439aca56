"""Presenting: slide tags follow the rules, every notebook builds to a reveal.js deck, and the student
version holds no solution (``tools/notebooks.py``, imported here from its file).

- the ``metadata.slideshow.slide_type`` stored in each notebook is what ``tag-slides`` gives, and
  re-tagging rewrites the file byte for byte (so tags cannot drift from the rules, and tagging
  changes nothing but that metadata); a small notebook pins each rule;
- each deck has one slide per ``slide``/``subslide`` cell (at least ``MIN_SLIDES``), its title
  slide shows the notebook's title, no slide is empty, every image output of a shown cell is in
  it, and the code of cells whose input the deck hides is absent;
- the student version of each notebook is valid nbformat, has no ``solution`` cell and no line of
  any solution, keeps every ``exercise`` and ``check`` cell, and is written without touching the
  source notebook;
- bad input (not a notebook, broken JSON, no title cell, a folder, --out onto the sources) is a
  one-line error with exit status 2.

Decks are built in memory from the committed notebooks (nothing is executed).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MIN_SLIDES = 8


def _load_tool():
    spec = importlib.util.spec_from_file_location("course_notebooks_tool", ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T = _load_tool()
by_name = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def stored_types(nb: dict) -> list:
    return [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in nb["cells"]]


def cell_text(cell: dict) -> str:
    """A cell's source and the text of its outputs."""
    parts = [T.source(cell)]
    for o in cell.get("outputs", []):
        for value in [o.get("text", ""), *(v for k, v in o.get("data", {}).items() if k.startswith("text/"))]:
            parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- slide tags

@by_name
def test_slide_tags_follow_the_rules(path):
    nb = T.read_notebook(path)
    expected = T.slide_types(nb)
    wrong = [(i, s, e) for i, (s, e) in enumerate(zip(stored_types(nb), expected)) if s != e]
    assert not wrong, (f"{path.name}: slide tags differ from the rules (cell, stored, rule): {wrong}; "
                       f"run `python tools/notebooks.py tag-slides {path.relative_to(ROOT)}`")
    assert T.dumps(T.tag_slides(nb)) == path.read_text(encoding="utf-8"), "re-tagging would rewrite the file"


def test_each_rule_on_a_small_notebook():
    image = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    printed = new_output("stream", text="a table\n")
    long_code = "\n".join(f"x{i} = {i}" for i in range(T.LONG_CODE + 1))
    cells = [
        (new_markdown_cell("# Title\n\ntext"), "slide"),
        (new_code_cell("import torch", outputs=[printed]), "skip"),                      # setup
        (new_markdown_cell("## 1. Section"), "slide"),
        (new_markdown_cell("More text."), "-"),
        (new_code_cell("y = 1\ny"), "fragment"),
        (new_code_cell("plt.imshow(y)", outputs=[image]), "subslide"),                   # figure
        (new_markdown_cell("What the figure shows."), "subslide"),                       # stands alone
        (new_markdown_cell("### Sub-topic"), "subslide"),
        (new_code_cell(long_code, outputs=[printed]), "subslide"),                       # long: result only
        (new_code_cell(long_code), "skip"),                                              # long, no output
        (new_code_cell(long_code, metadata={"tags": ["slides-keep"]}), "subslide"),
        (new_code_cell("z = 2", metadata={"tags": ["slides-skip"]}), "skip"),
        (new_markdown_cell(""), "skip"),
        (new_markdown_cell("**Exercise 1.** Do it."), "subslide"),
        (new_code_cell("def f():\n    raise NotImplementedError", metadata={"tags": ["exercise"]}), "-"),
        (new_code_cell("check(f, [])", metadata={"tags": ["check"]}, outputs=[printed]), "-"),
        (new_markdown_cell("## Summary"), "slide"),
        (new_markdown_cell("<details>```python\n```</details>", metadata={"tags": ["solution"]}), "subslide"),
        (new_code_cell("print(time.perf_counter())", outputs=[printed]), "skip"),        # closing line
    ]
    nb = new_notebook(cells=[c for c, _ in cells])
    assert T.slide_types(nb) == [t for _, t in cells]
    assert [T.hides_input(c, t) for c, t in cells] == [i in (5, 8) for i in range(len(cells))]
    tagged = T.tag_slides(nb)
    assert tagged["cells"][14]["metadata"]["tags"] == ["exercise"], "other metadata must be kept"
    assert T.tag_slides(tagged) == tagged and "slideshow" not in nb["cells"][0]["metadata"]


def test_tag_slides_command_writes_only_the_metadata(tmp_path, capsys):
    source = NOTEBOOKS[0]
    nb = T.read_notebook(source)
    for cell in nb["cells"]:
        cell["metadata"].pop("slideshow", None)
    copy = tmp_path / source.name
    copy.write_text(T.dumps(nb), encoding="utf-8")
    copy.chmod(0o640)
    assert T.main(["tag-slides", str(copy)]) == 0
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o640, "the file's permissions must be kept"
    assert T.main(["tag-slides", str(copy)]) == 0 and "unchanged" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [source.name], "a temporary file was left behind"


# ------------------------------------------------------------------------------------------ decks

class Deck(HTMLParser):
    """Collects reveal.js sections: the top-level ones (slides) and the innermost ones (what is shown)."""

    def __init__(self, html: str):
        super().__init__()
        self.stack: list[dict] = []
        self.slides: list[dict] = []
        self.leaves: list[dict] = []
        self.images = 0
        self.hidden = 0                     # depth inside <script>/<style>
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            section = {"children": 0, "text": "", "images": 0}
            if self.stack:
                self.stack[-1]["children"] += 1
            else:
                self.slides.append(section)
            self.stack.append(section)
        elif tag in ("script", "style"):
            self.hidden += 1
        elif tag == "img" and (dict(attrs).get("src") or "").startswith("data:image/"):
            self.images += 1
            if self.stack:
                self.stack[-1]["images"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            section = self.stack.pop()
            if not section["children"]:
                self.leaves.append(section)
        elif tag in ("script", "style"):
            self.hidden -= 1

    def handle_data(self, data):
        if self.stack and not self.hidden:
            self.stack[-1]["text"] += data


def plain(text: str) -> str:
    return " ".join(re.sub(r"[*_`]", "", text).split())


@by_name
def test_every_notebook_builds_to_a_deck(path, tmp_path):
    assert T.main(["slides", str(path), "--out", str(tmp_path)]) == 0
    html = (tmp_path / f"{path.stem}.slides.html").read_text(encoding="utf-8")
    deck = Deck(html)
    nb = T.read_notebook(path)
    types = stored_types(nb)
    assert len(deck.slides) == types.count("slide")
    assert len(deck.leaves) == types.count("slide") + types.count("subslide") >= MIN_SLIDES
    title = plain(T.source(nb["cells"][0]).splitlines()[0].removeprefix("# "))
    assert title in plain(deck.leaves[0]["text"]), f"the title slide does not show {title!r}"
    empty = [i for i, s in enumerate(deck.leaves) if not s["text"].strip() and not s["images"]]
    assert not empty, f"empty slides (0-based): {empty}"
    shown = [c for c, t in zip(nb["cells"], types) if t != "skip"]
    expected_images = sum(any(k.startswith("image/") for k in o.get("data", {}))
                          for c in shown for o in c.get("outputs", []))
    assert deck.images == expected_images
    for cell, t in zip(nb["cells"], types):
        if T.hides_input(cell, t):
            start = html.index(f'id="cell-id={cell["id"]}"')
            end = html.find('id="cell-id=', start + 1)
            assert "jp-InputArea" not in html[start:end], f"cell {cell['id']}: its code is on a slide"


# --------------------------------------------------------------------------------------- students

def solution_lines(nb: dict) -> set[str]:
    """The solution cell's lines (code and prose) that appear nowhere else in the notebook."""
    solutions = [c for c in nb["cells"] if "solution" in T.tags(c)]
    assert len(solutions) == 1, "expected one cell tagged 'solution'"
    elsewhere = {line.strip() for c in nb["cells"] if c not in solutions for line in T.source(c).splitlines()}
    lines = {line.strip() for line in T.source(solutions[0]).splitlines()}
    return {s for s in lines - elsewhere if len(s) >= 12 and not s.startswith(("```", "<details", "</details"))}


@by_name
def test_student_version_has_no_solutions(path):
    nb = T.read_notebook(path)
    student = T.student_version(nb)
    nbformat.validate(nbformat.from_dict(student))
    assert not [c for c in student["cells"] if "solution" in T.tags(c)]
    secret = solution_lines(nb)
    assert secret, "the solution cell holds nothing to look for"
    text = "\n".join(cell_text(c) for c in student["cells"])
    leaked = sorted(s for s in secret if s in text)
    assert not leaked, f"solution text in the student version: {leaked[:3]}"
    for tag in ("exercise", "check"):
        source_cells = [(c["id"], T.source(c)) for c in nb["cells"] if tag in T.tags(c)]
        student_cells = [(c["id"], T.source(c)) for c in student["cells"] if tag in T.tags(c)]
        assert source_cells and student_cells == source_cells, f"the {tag} cells must all be kept"
    assert all(not c["outputs"] for c in student["cells"] if T.tags(c) & {"exercise", "check"})
    kept = [c for c in nb["cells"] if not T.tags(c) & {"solution", "exercise", "check"}]
    assert [c for c in student["cells"] if c["id"] in {k["id"] for k in kept}] == kept


def test_student_command_leaves_the_sources_alone(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(NOTEBOOKS[1], src)
    before = (src / NOTEBOOKS[1].name).read_bytes()
    assert T.main(["student", str(src / NOTEBOOKS[1].name), "--out", str(tmp_path / "out")]) == 0
    assert (src / NOTEBOOKS[1].name).read_bytes() == before
    written = (tmp_path / "out" / NOTEBOOKS[1].name).read_text(encoding="utf-8")
    assert written == T.dumps(T.student_version(T.read_notebook(NOTEBOOKS[1])))


# -------------------------------------------------------------------------------------- bad input

def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "script.py").write_text("print(1)\n")
    (tmp / "broken.ipynb").write_text('{"cells": [')
    untitled = new_notebook(cells=[new_markdown_cell("Some text"), new_code_cell("1")])
    (tmp / "untitled.ipynb").write_text(T.dumps(untitled))
    shutil.copy(NOTEBOOKS[0], tmp)
    return {
        "not-a-notebook": ([str(tmp / "script.py")], "not a notebook"),
        "missing": ([str(tmp / "absent.ipynb")], "no such notebook"),
        "broken-json": ([str(tmp / "broken.ipynb")], "not a valid notebook"),
        "no-title": ([str(tmp / "untitled.ipynb")], "no title cell"),
        "folder": ([str(tmp)], "is a folder"),
        "out-onto-sources": ([str(tmp / NOTEBOOKS[0].name), "--out", str(tmp)], "would overwrite"),
    }


@pytest.mark.parametrize("command", ["tag-slides", "slides", "student"])
def test_bad_input_is_a_clear_error(command, tmp_path, capsys):
    for case, (args, message) in _bad_inputs(tmp_path).items():
        if case == "out-onto-sources" and command == "tag-slides":
            continue                                    # tag-slides has no --out
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        assert T.main([command, *args]) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (case, err)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before, case

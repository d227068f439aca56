#!/usr/bin/env python
"""Instructor tools for the course notebooks: slide tags, reveal.js decks, student versions.

    python tools/notebooks.py tag-slides [NB ...]            # after editing or re-executing a notebook
    python tools/notebooks.py slides [NB ...] [--out DIR]    # reveal.js decks, default build/slides/
    python tools/notebooks.py student [NB ...] [--out DIR]   # solutions stripped, default build/student/

Without NB arguments each command takes every ``notebooks/*.ipynb``. The instructor version is the
source notebooks themselves. The slide types are derived from the notebook, so re-running
``tag-slides`` after an edit or a new run gives the same tags (see ``slide_types`` for the rules).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LONG_CODE = 15                 # code cells with more lines than this are "long"
KEEP, SKIP = "slides-keep", "slides-skip"   # per-cell overrides of the rules
HIDE_INPUT = "slides-hide-input"            # set in memory by `slides` only, never written
EXERCISE_TAGS = {"exercise", "check"}


class NotebookError(Exception):
    """A path or notebook the tools cannot work on; the message says which and why."""


# ---------------------------------------------------------------------------- reading and writing

def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` as plain JSON (sources kept exactly as stored), validated."""
    if path.suffix != ".ipynb":
        raise NotebookError(f"{path}: not a notebook (expected a .ipynb file)")
    if not path.is_file():
        raise NotebookError(f"{path}: no such notebook")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        nbformat.validate(nbformat.from_dict(nb))
    except (ValueError, nbformat.ValidationError) as e:   # JSONDecodeError is a ValueError
        raise NotebookError(f"{path}: not a valid notebook: {str(e).splitlines()[0]}") from None
    if nb.get("nbformat") != 4:
        raise NotebookError(f"{path}: nbformat {nb.get('nbformat')}, expected 4")
    cells = nb["cells"]
    if not cells or cells[0]["cell_type"] != "markdown" or not source(cells[0]).startswith("# "):
        raise NotebookError(f"{path}: no title cell (the first cell must be Markdown starting with '# ')")
    return nb


def dumps(nb: dict) -> str:
    """Serialise as nbformat and JupyterLab do (indent 1, sorted keys, UTF-8, final newline).

    Plain ``json`` rather than ``nbformat.writes``: the latter re-splits multi-line sources and can
    drop a trailing empty line, which would show up in git diffs."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace,
    keeping the permissions of the file it replaces (a new file gets the umask's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------ slide rules

def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def has_image(cell: dict) -> bool:
    return any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))


def n_lines(cell: dict) -> int:
    return len(source(cell).strip("\n").splitlines())


def hides_input(cell: dict, slide_type: str) -> bool:
    """In a deck a code cell shows its output only when it draws a figure or is long (> 15 lines):
    the figure or result is what the slide is for, and long code does not fit on a slide."""
    return (cell["cell_type"] == "code" and slide_type != "skip" and bool(cell.get("outputs"))
            and (has_image(cell) or n_lines(cell) > LONG_CODE))


def _rule(cell: dict, index: int, setup: int | None, closing: int | None, keep: bool) -> str:
    """The slide type of one cell by the rules, before the stand-alone pass (see slide_types)."""
    src, kind = source(cell).strip(), cell["cell_type"]
    if not src and not cell.get("outputs"):
        return "skip"
    if kind == "markdown":
        if index == 0 or src.startswith("## "):
            return "slide"
        if src.startswith("### ") or src.startswith("**Exercise") or "solution" in tags(cell):
            return "subslide"
        return "-"
    if kind != "code":
        return "-" if keep else "skip"
    if index in (setup, closing) and not keep:
        return "skip"
    if tags(cell) & EXERCISE_TAGS:
        return "-"
    if has_image(cell):
        return "subslide"
    if n_lines(cell) > LONG_CODE:
        return "subslide" if cell.get("outputs") or keep else "skip"
    return "fragment"


def slide_types(nb: dict) -> list[str]:
    """``metadata.slideshow.slide_type`` of every cell, by these rules (first match wins):

    - tag ``slides-skip``: skip;
    - empty cell: skip;
    - Markdown: the title (first cell) and ``## `` headings start a slide; ``### `` headings,
      ``**Exercise`` paragraphs and the ``solution`` cell start a subslide; other Markdown continues
      the current slide ("-");
    - raw cells: skip;
    - code: the setup cell (first code cell) and the closing cell (the last cell, when it is code:
      the run-time line) are skipped; ``exercise`` and ``check`` cells continue the slide ("-");
      a cell with an image output starts a subslide (its code hidden in the deck); other long code
      (> 15 lines) starts a subslide showing only its output, or is skipped when it has none;
      short code is a fragment (code and output appear on the next click);
    - tag ``slides-keep``: the same rules without the skips (setup, closing, long code without
      output, raw), so the cell is shown;
    - stand-alone figures: a cell that would continue ("-" or fragment) the slide of a cell whose
      code is hidden (a figure or a long cell's result) starts a new subslide instead.
    """
    cells = nb["cells"]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    setup = code[0] if code else None
    closing = len(cells) - 1 if cells and cells[-1]["cell_type"] == "code" else None
    types = ["skip" if SKIP in tags(c) else _rule(c, i, setup, closing, KEEP in tags(c))
             for i, c in enumerate(cells)]
    previous = None                      # the last shown cell
    for i, cell in enumerate(cells):
        if types[i] == "skip":
            continue
        if previous is not None and types[i] in ("-", "fragment") and hides_input(*previous):
            types[i] = "subslide"
        previous = (cell, types[i])
    return types


def tag_slides(nb: dict) -> dict:
    """A copy of ``nb`` with every cell's ``metadata.slideshow.slide_type`` set by ``slide_types``;
    all other metadata is kept as it was."""
    nb = copy.deepcopy(nb)
    for cell, slide_type in zip(nb["cells"], slide_types(nb)):
        cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = slide_type
    return nb


# -------------------------------------------------------------------------------- decks, students

def deck_html(nb: dict, reveal_prefix: str | None = None) -> str:
    """The reveal.js deck of ``nb`` (as tagged), built with nbconvert's SlidesExporter. The code of
    cells that ``hides_input`` is removed (through an in-memory tag and TagRemovePreprocessor)."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if hides_input(cell, cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")):
            cell["metadata"]["tags"] = [*cell["metadata"].get("tags", []), HIDE_INPUT]
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT}
    config.SlidesExporter.reveal_scroll = True      # long slides scroll instead of being cut off
    if reveal_prefix:
        config.SlidesExporter.reveal_url_prefix = reveal_prefix
    html, _ = SlidesExporter(config=config).from_notebook_node(nbformat.reads(dumps(nb), as_version=4))
    return html


def student_version(nb: dict) -> dict:
    """A copy of ``nb`` for students: the ``solution`` cell replaced by a note that the solutions
    are withheld, and the outputs of ``exercise`` and ``check`` cells cleared (they show only
    "not attempted yet" from the instructor's run; a student's own run fills them). Every other
    output is kept, so the committed run's figures and tables can be read before running."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        if "solution" in tags(cell):
            note = {"cell_type": "markdown", "metadata": {}, "source":
                    "**Solutions** are not part of the student version of this notebook: "
                    "ask your instructor once you have tried the exercises."}
            if "id" in cell:
                note["id"] = f"{cell['id']}-withheld"[-64:]
            if "slideshow" in cell.get("metadata", {}):
                note["metadata"]["slideshow"] = cell["metadata"]["slideshow"]
            cells.append(note)
            continue
        if cell["cell_type"] == "code" and tags(cell) & EXERCISE_TAGS:
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    nbformat.validate(nbformat.from_dict(nb))
    return nb


# ---------------------------------------------------------------------------------------- commands

def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks named on the command line, or every notebooks/*.ipynb."""
    paths = [Path(n) for n in names] if names else sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        raise NotebookError(f"no notebooks found in {NOTEBOOKS}")
    for p in paths:
        if p.is_dir():
            raise NotebookError(f"{p}: is a folder; name the .ipynb files (or none for all)")
    return paths


def output_dir(out: str | None, default: str, sources: list[Path]) -> Path:
    """The output folder; refuses a folder holding any of the source notebooks."""
    folder = Path(out) if out else ROOT / default
    if any(folder.resolve() == p.resolve().parent for p in sources):
        raise NotebookError(f"--out {folder}: would overwrite the source notebooks; choose another folder")
    return folder


def cmd_tag_slides(args: argparse.Namespace) -> None:
    for path in notebook_paths(args.notebooks):
        nb = read_notebook(path)
        raw = path.read_text(encoding="utf-8")
        if dumps(nb) != raw:
            print(f"{path}: note: re-serialised in nbformat's layout (indent 1, sorted keys)", file=sys.stderr)
        text = dumps(tag_slides(nb))
        if text != raw:
            write_atomic(path, text)
        types = slide_types(nb)
        counts = ", ".join(f"{types.count(t)} {t}" for t in ("slide", "subslide", "fragment", "-", "skip"))
        print(f"{path}: {'tagged' if text != raw else 'unchanged'} ({counts})")


def cmd_slides(args: argparse.Namespace) -> None:
    paths = notebook_paths(args.notebooks)
    out = output_dir(args.out, "build/slides", paths)
    for path in paths:
        nb = read_notebook(path)
        stored = [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in nb["cells"]]
        if stored != slide_types(nb):
            print(f"{path}: warning: slide tags differ from the rules; run `tag-slides` first", file=sys.stderr)
        html = deck_html(nb, args.reveal_prefix)
        target = out / f"{path.stem}.slides.html"
        write_atomic(target, html)
        print(f"{target}: {html.count('<section')} <section> elements")


def cmd_student(args: argparse.Namespace) -> None:
    paths = notebook_paths(args.notebooks)
    out = output_dir(args.out, "build/student", paths)
    for path in paths:
        target = out / path.name
        write_atomic(target, dumps(student_version(read_notebook(path))))
        print(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/notebooks.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tag-slides", help="set metadata.slideshow.slide_type on every cell by the rules")
    p.add_argument("notebooks", nargs="*", metavar="NB")
    p.set_defaults(run=cmd_tag_slides)
    p = sub.add_parser("slides", help="build reveal.js decks (nbconvert --to slides)")
    p.add_argument("notebooks", nargs="*", metavar="NB")
    p.add_argument("--out", help="output folder (default: build/slides/)")
    p.add_argument("--reveal-prefix", help="URL or relative path of a reveal.js 4 copy "
                   "(default: nbconvert's, https://unpkg.com/reveal.js@4.0.2)")
    p.set_defaults(run=cmd_slides)
    p = sub.add_parser("student", help="write the student version (solutions stripped)")
    p.add_argument("notebooks", nargs="*", metavar="NB")
    p.add_argument("--out", help="output folder (default: build/student/)")
    p.set_defaults(run=cmd_student)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Download datasets: ``python -m course_lib.data camvid membrane ...`` (or ``all``)."""

from __future__ import annotations

import argparse
import sys

from ..runtime import data_root
from .download import fetch, load_manifest


def main(argv: list[str] | None = None) -> None:
    """Fetch each named dataset; a failure prints one line naming the dataset and what to do
    (no traceback), the others are still tried, and the exit status is 1."""
    manifest = load_manifest()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="+", help=f"datasets: {', '.join(manifest)} or 'all'")
    parser.add_argument("--root", default=None, help="data root (default: $COURSE_DATA_DIR or <repo>/data)")
    args = parser.parse_args(argv)
    names = list(manifest) if args.names == ["all"] else args.names
    for name in names:
        if name not in manifest:
            parser.error(f"unknown dataset {name!r}; choose from {', '.join(manifest)}")
    failed = []
    for name in names:
        try:
            folder = fetch(name, args.root or data_root(), manifest)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"{name}: FAILED: {e}", file=sys.stderr)
            failed.append(name)
        else:
            print(f"{name}: ready in {folder}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

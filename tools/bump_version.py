"""Set one package's version: `python tools/bump_version.py norm 0.2.0`.

A package's version lives in its pyproject.toml and its package __init__.py; this edits both together.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(pkg: str, version: str) -> None:
    directory = ROOT / "packages" / f"sgl-npu-{pkg}"
    if not directory.is_dir():
        sys.exit(f"no package {directory.name} under packages/")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        sys.exit(f"version must look like 1.2.3, got {version!r}")
    pyproject = directory / "pyproject.toml"
    inits = list((directory / "python").glob("*/__init__.py"))
    for path, pattern in [(pyproject, r'^version = "[^"]+"'), *[(p, r'^__version__ = "[^"]+"') for p in inits]]:
        text = path.read_text()
        new, count = re.subn(pattern, pattern.split(" =")[0].lstrip("^") + f' = "{version}"', text, flags=re.M)
        if count != 1:
            sys.exit(f"{path}: expected one version line, found {count}")
        path.write_text(new)
        print(f"{path.relative_to(ROOT)}: {version}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

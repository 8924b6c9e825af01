"""Render docs/api/<wheel>.md from the installed wheels' public functions and numpy-style docstrings."""

from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path

# Import name -> wheel name, for every wheel with a public op API.
WHEELS = {"sgl_npu_norm": "sgl-npu-norm", "sgl_npu_attention": "sgl-npu-attention", "deep_ep": "deep-ep-ascend"}


def render(module_name: str) -> str:
    module = importlib.import_module(module_name)
    lines = [f"# {WHEELS[module_name]} API", "", inspect.getdoc(module) or "", ""]
    for name in module.__all__:
        fn = getattr(module, name)
        lines += [f"## `{name}{inspect.signature(fn)}`", "", inspect.getdoc(fn) or "(undocumented)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/api"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for module_name, wheel in WHEELS.items():
        path = args.out / f"{wheel}.md"
        path.write_text(render(module_name))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

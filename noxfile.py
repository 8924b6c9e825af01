"""The one entry point: build, test, lint, bench and docs for every wheel under packages/.

nox -s build test              # wheels for every package into dist/, then every package's tests
nox -s "test(pkg='norm')"      # one package (its local dependencies are installed from dist/ too)
nox -s bench                   # builds, runs all benchmarks, writes docs/benchmarks/*.md|json|png
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
# virtualenv + pip: uv ignores the local CPU torch wheel and would fetch a multi-GB CUDA build.
nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["build", "test"]

ROOT = Path(__file__).parent
DIST = ROOT / "dist"
CONSTRAINTS = str(ROOT / "constraints.txt")

# Short name -> package directory, in build order (each package only depends on ones before it).
PACKAGES = {
    "core": "sgl-npu-core",
    "norm": "sgl-npu-norm",
    "attention": "sgl-npu-attention",
    "deep_ep": "deep-ep-ascend",
}
# Local packages each one needs at build and run time.
LOCAL_DEPS = {"core": [], "norm": ["core"], "attention": ["core"], "deep_ep": ["core"]}
BUILD_TOOLS = ["scikit-build-core>=0.10", "cmake>=3.18", "ninja", "torch"]
TEST_TOOLS = ["pytest", "numpy", "hypothesis", "triton", "matplotlib"]


def _chain(pkg: str) -> list[str]:
    """pkg's local dependencies, then pkg."""
    return [*LOCAL_DEPS[pkg], pkg]


def _wheel_name(pkg: str) -> str:
    return PACKAGES[pkg].replace("-", "_")


def _build_wheels(session: nox.Session, pkgs: list[str]) -> None:
    """Build each package's wheel into dist/ without build isolation, installing it before the next one
    (so `find_package(SglNpuCore)` sees the core wheel through its cmake.prefix entry point)."""
    session.install("-c", CONSTRAINTS, *BUILD_TOOLS)
    DIST.mkdir(exist_ok=True)
    for pkg in pkgs:
        for old in glob.glob(str(DIST / f"{_wheel_name(pkg)}-*.whl")):
            os.remove(old)
        session.run("pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(DIST), f"packages/{PACKAGES[pkg]}")
        _install_wheels(session, [pkg])


def _install_wheels(session: nox.Session, pkgs: list[str]) -> None:
    wheels = []
    for pkg in pkgs:
        found = sorted(glob.glob(str(DIST / f"{_wheel_name(pkg)}-*.whl")))
        if not found:
            session.error(f"no wheel for {pkg} in dist/: run `nox -s build` first")
        wheels.append(found[-1])
    session.install("--force-reinstall", "--no-deps", *wheels)


@nox.session(reuse_venv=True)
@nox.parametrize("pkg", list(PACKAGES), ids=list(PACKAGES))
def build(session: nox.Session, pkg: str) -> None:
    """Wheels of `pkg` and its local dependencies into dist/."""
    _build_wheels(session, _chain(pkg))


@nox.session(reuse_venv=True)
@nox.parametrize("pkg", list(PACKAGES), ids=list(PACKAGES))
def test(session: nox.Session, pkg: str) -> None:
    """Install the built wheels and run the package's tests (Triton ones under TRITON_INTERPRET=1)."""
    session.install("-c", CONSTRAINTS, "torch", *TEST_TOOLS)
    _install_wheels(session, _chain(pkg))
    tests = ROOT / "packages" / PACKAGES[pkg] / "tests"
    session.chdir(tests.parent)
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        str(tests),
        *session.posargs,
        env={"TRITON_INTERPRET": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )


@nox.session(reuse_venv=True)
def lint(session: nox.Session) -> None:
    """ruff (Python) and clang-format (C++) checks."""
    session.install("ruff", "clang-format")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = sorted(glob.glob("packages/*/csrc/**/*.[ch]*", recursive=True))
    session.run("clang-format", "--dry-run", "-Werror", *sources)


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """Build everything, run every package's benchmarks, write docs/benchmarks/ and print the reports."""
    _build_wheels(session, list(PACKAGES))
    session.install("-c", CONSTRAINTS, "matplotlib", "numpy")
    out = ROOT / "docs" / "benchmarks"
    for directory in PACKAGES.values():
        for script in sorted(glob.glob(f"packages/{directory}/benchmarks/bench_*.py")):
            session.run("python", script, "--out", str(out), *session.posargs)


@nox.session(reuse_venv=True)
def docs(session: nox.Session) -> None:
    """Render the API pages (docs/api/<wheel>.md) from the installed wheels' docstrings."""
    session.install("-c", CONSTRAINTS, "torch")
    _install_wheels(session, list(PACKAGES))
    session.run("python", "tools/render_api_docs.py", "--out", "docs/api")


@nox.session(venv_backend="none")
def clean(session: nox.Session) -> None:
    """Remove build outputs (dist/ and each package's build/)."""
    for path in [DIST, *ROOT.glob("packages/*/build")]:
        shutil.rmtree(path, ignore_errors=True)

"""The library's layering: ``denoiser`` never imports Prefect, the model store depends on
nothing above it, and the command line parses its options before torch, pandas or Prefect
load."""

import subprocess
import sys
from pathlib import Path

WALK = ("import importlib, pkgutil, sys, denoiser\n"
        "names = [m.name for m in pkgutil.walk_packages(denoiser.__path__, 'denoiser.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == {top!r}))")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_no_module_of_the_library_imports_prefect():
    count, imported = run(WALK.format(top="prefect")).split(" ", 1)
    files = [p for p in (Path(__file__).parent.parent / "denoiser").rglob("*.py") if p.name != "__init__.py"]
    assert int(count) == len(files)  # every module was walked, not a chosen few
    assert imported.strip() == "[]"


def test_the_model_store_depends_on_nothing_above_it():
    code = ("import sys, denoiser.checkpoint\n"
            "print(sorted(m for m in sys.modules if m.startswith('denoiser.')))")
    below = {"denoiser.checkpoint", "denoiser.files", "denoiser.model",
             "denoiser.recipe", "denoiser.noise_spec", "denoiser.choices"}  # plain names and configs
    assert set(eval(run(code))) <= below  # noqa: S307 - our own printed list


def test_the_command_line_parses_before_the_heavy_libraries_load():
    code = ("import sys, flows.cli\n"
            "flows.cli.build_parser().parse_args(['run', '--epochs', '2'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'prefect'}))")
    assert run(code).strip() == "[]"  # an argument error answers in ~0.2 s, not 2-4 s

"""The library's layering: ``denoiser`` never imports Prefect, each package imports only the
packages below it (the table), no module imports itself round a cycle, and the command line
parses its options before torch, pandas or Prefect load."""

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "denoiser"
#: The packages from the bottom up, and what each may import from the library. ``core`` is
#: the top level's own modules (choices, files, metrics, memory, out_tree, runs). The same
#: table is in docs/architecture.md.
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "noise": {"core", "data", "noise"},
    "models": {"core", "data", "noise", "models"},
    "checks": {"core", "data", "noise", "models", "checks"},
    "scans": {"core", "data", "noise", "models", "checks", "scans"},
    "training": {"core", "data", "noise", "models", "checks", "scans", "training"},
    "sharing": {"core", "data", "noise", "models", "checks", "scans", "training", "sharing"},
    "pipeline": {"core", "data", "noise", "models", "checks", "scans", "training", "sharing", "pipeline"},
    "folders": {"core", "data", "noise", "models", "checks", "scans", "training", "sharing", "pipeline", "folders"},
    "adapt": {"core", "data", "noise", "models", "checks", "scans", "training", "sharing", "pipeline", "folders",
              "adapt"},
    "evaluation": {"core", "data", "noise", "models", "checks", "scans", "training", "sharing", "pipeline",
                   "folders", "evaluation"},
}

WALK = ("import importlib, pkgutil, sys, denoiser\n"
        "names = [m.name for m in pkgutil.walk_packages(denoiser.__path__, 'denoiser.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == {top!r}))")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def package_of(module: str) -> str:
    """'denoiser.folders.shard' -> 'folders'; the top level's modules -> 'core'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (LIBRARY / parts[1]).is_dir() else "core"


def library_imports() -> dict[str, set[str]]:
    """Every library module and the library modules it imports (anywhere in it, functions too)."""
    found = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        rel = path.relative_to(LIBRARY.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "denoiser":
                for alias in node.names:  # `from denoiser.models import checkpoint` imports a module
                    sub = f"{node.module}.{alias.name}"
                    is_module = (LIBRARY.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                    imported.add(sub if is_module else node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.split(".")[0] == "denoiser"}
        found[name] = imported - {"denoiser", name}
    return found


def test_no_module_of_the_library_imports_prefect():
    count, imported = run(WALK.format(top="prefect")).split(" ", 1)
    files = [p for p in LIBRARY.rglob("*.py") if p.parent != LIBRARY or p.name != "__init__.py"]
    assert int(count) == len(files)  # every module and package was walked, not a chosen few
    assert imported.strip() == "[]"


def test_each_package_imports_only_the_packages_below_it():
    wrong = []
    for module, imported in library_imports().items():
        mine = package_of(module) if module != "denoiser" else None
        if mine is None:
            continue  # the public face lists names from every package
        for other in imported:
            if other != "denoiser" and package_of(other) not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {other} ({package_of(other)})")
    assert wrong == []
    assert set(ALLOWED) == {"core"} | {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").exists()}


def test_no_module_imports_itself_round_a_cycle():
    graph = {m: {i for i in imported if i in library_imports_cache} for m, imported in library_imports_cache.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                return path + [module, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [module])
                if cycle:
                    return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and module != "denoiser":
            assert visit(module, []) is None


library_imports_cache = library_imports()


def test_no_module_passes_300_lines():
    long = {str(p.relative_to(LIBRARY.parent)): n for p in LIBRARY.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_the_command_line_parses_before_the_heavy_libraries_load():
    code = ("import sys, flows.cli.main\n"
            "flows.cli.main.build_parser().parse_args(['run', '--epochs', '2'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'prefect'}))")
    assert run(code).strip() == "[]"  # an argument error answers in ~0.2 s, not 2-4 s

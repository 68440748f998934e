import subprocess
import sys
from inspect import ismodule

import v2serve


def test_import_stays_light():
    code = (
        "import v2serve, v2serve.cli, v2serve.http.app, sys; "
        "print([m for m in ('torch', 'onnxruntime', 'aiokafka', 'boto3') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_import_v2serve_imports_no_transport_and_no_prometheus():
    heavy = (
        "prometheus_client",
        "starlette",
        "uvicorn",
        "aiohttp",
        "fsspec",
        "torch",
        "onnxruntime",
        "aiokafka",
        "grpc",
    )
    code = f"import v2serve, sys; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_surface_is_exactly_all():
    public = {name for name, value in vars(v2serve).items() if not name.startswith("_") and not ismodule(value)}
    assert public == set(v2serve.__all__) - {"__version__"}


def test_protocol_package_imports_no_transport():
    code = (
        "import v2serve.protocol.codec, v2serve.protocol.response, v2serve.protocol.binary, sys; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'aiokafka', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_module_of_v2serve_imports_itself_back():
    """import-linter checks the layers; this checks the modules within them: no cycle of imports at all
    (imports under TYPE_CHECKING and inside functions included)."""
    import grimp

    graph = grimp.build_graph("v2serve")
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in graph.modules}
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(edges[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph.modules):
        visit(module)


def test_the_readme_layout_names_every_package_and_module_of_the_root():
    """The README's Layout is the map of v2serve/: every folder and every module at its root is on it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"([a-z_]+/|[a-z_]+\.py)", layout))
    package = root / "v2serve"
    present = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    present |= {p.name for p in package.glob("*.py") if not p.name.startswith("_")}
    assert present - named == set(), f"README Layout does not name {sorted(present - named)}"

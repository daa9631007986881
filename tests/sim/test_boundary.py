"""The simulator stays apart from serving code: it imports none, and none imports it."""

import ast
from pathlib import Path

import openbid

PACKAGE = Path(openbid.__file__).parent
# Besides itself: the one clock (the users' delays are market time) and the shared HTTP layer
# (the simulated DSPs serve on it; the users browse the exchange with its client).
ALLOWED_FROM_SIM = ("openbid.sim", "openbid.errors", "openbid.clock", "openbid.http")
# Code that runs the simulator on purpose: the command line and the demo wiring.
MAY_IMPORT_SIM = ("cli.py", "demo.py")


def _openbid_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "openbid" or name.startswith("openbid.")}


def test_sim_imports_no_serving_code():
    for path in (PACKAGE / "sim").rglob("*.py"):
        for name in _openbid_imports(path):
            assert name.startswith(ALLOWED_FROM_SIM), f"{path.name} imports {name}"


def test_serving_code_does_not_import_sim():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "sim" or str(relative) in MAY_IMPORT_SIM:
            continue
        imports = _openbid_imports(path)
        assert not any(name.startswith("openbid.sim") for name in imports), f"{relative}"

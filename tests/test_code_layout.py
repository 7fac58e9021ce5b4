"""The package's shape (STYLE.md, LAYOUT.md): short modules, rooms by concern on layers that import only downwards,
no import circles, a paragraph on every room, light command-line start-up, no sys.path edits anywhere."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400
# the rooms of ca2vdm/, bottom layer first: a module may import from its own room and the rooms before it
LAYERS = ["errors", "config", "runtime", "io", "encoders", "data", "models", "checkpoints", "sampling", "generation",
          "evaluation", "training", "serve", "cli"]


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted((ROOT / "ca2vdm").rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The ca2vdm modules a file imports (``from a.b import c`` counts a.b.c when that is a module, else a.b)."""
    modules, found = _modules(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ca2vdm"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ca2vdm")}
    return found


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "ca2vdm"


def test_no_library_module_over_400_lines():
    modules = sorted((ROOT / "ca2vdm").rglob("*.py"))
    assert len(modules) > 20, modules
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > LIMIT}
    assert long == {}, f"split these by concept: {long}"


def test_every_room_is_a_layer_and_imports_only_downwards():
    rooms = {_room(m) for m in _modules()} - {"ca2vdm"}
    assert rooms == set(LAYERS), f"a room without a layer (or a layer without a room): {rooms ^ set(LAYERS)}"
    upwards = [f"{module} imports {target}" for module, path in _modules().items() for target in _imports(path)
               if _room(module) != "ca2vdm" and LAYERS.index(_room(target)) > LAYERS.index(_room(module))]
    assert upwards == [], upwards


def test_no_import_circles():
    graph = {module: _imports(path) for module, path in _modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path + [module, target]
            if target in graph and not state.get(target):
                if circle := visit(target, path + [module]):
                    return circle
        state[module] = 2
        return None

    for module in graph:
        if not state.get(module):
            circle = visit(module, [])
            assert circle is None, " -> ".join(circle)


def test_every_room_says_what_lives_there_and_what_it_may_import():
    for room in LAYERS:
        init = ROOT / "ca2vdm" / room / "__init__.py"
        source = init if init.exists() else ROOT / "ca2vdm" / f"{room}.py"
        doc = ast.get_docstring(ast.parse(source.read_text())) or ""
        assert len(doc.split()) >= 25 and "import" in doc.lower(), f"{source.relative_to(ROOT)}: {doc!r}"


def test_no_sys_path_edits_anywhere():
    calls = [f"sys.path.{verb}(" for verb in ("insert", "append")]  # spelled apart: this file is searched too
    edits = [str(p.relative_to(ROOT)) for d in ("ca2vdm", "infer", "train", "scripts", "tests")
             for p in (ROOT / d).rglob("*.py") if any(call in p.read_text() for call in calls)]
    assert edits == [], edits


def test_command_lines_parse_before_torch_loads():
    """Every command line builds and checks its arguments without importing torch (so --help answers at once), and
    the package imports nothing heavy by itself."""
    code = ("import sys, ca2vdm, ca2vdm.cli.generate as g, ca2vdm.cli.serve as s, ca2vdm.cli.trainer as t\n"
            "g.parse_args(['--chunks', '2', '--step-cache', 'taylorseer', '--step-cache-opt', 'interval=2'])\n"
            "s.parse_args([])\n"
            "t.trainer_parser('', '').parse_intermixed_args(['--config', 'c.yaml', 'train.max_steps=1'])\n"
            "heavy = sorted(m for m in ('torch', 'accelerate', 'diffusers', 'av', 'decord') if m in sys.modules)\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_generating_without_compile_never_imports_dynamo(checkpoint, tmp_path):
    """Nor peft, which loads transformers (2.5 s): only generating with --lora needs it."""
    code = ("import sys; from ca2vdm.cli.generate import main\n"
            f"main(['--checkpoint', {str(checkpoint)!r}, '--chunks', '1', '--out', {str(tmp_path / 'v.mp4')!r}])\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
            "assert 'peft' not in sys.modules, 'peft was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and (tmp_path / "v.mp4").is_file(), result.stderr

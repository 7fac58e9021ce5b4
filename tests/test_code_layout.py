"""Short files, one concept each (STYLE.md): no module of the library is over 400 lines."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400


def test_no_library_module_over_400_lines():
    modules = sorted((ROOT / "ca2vdm").rglob("*.py"))
    assert len(modules) > 20, modules
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > LIMIT}
    assert long == {}, f"split these by concept: {long}"

"""Every option of every command-line tool has help text (`--help` is the tools' documentation)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p for d in ("scripts", "scripts/experiments", "infer", "train") for p in (ROOT / d).glob("*.py")
               if not p.name.startswith("_"))

# Runs each tool up to its argument parsing (in one interpreter: torch is imported once), records the options of every
# parser it builds that lack help, and stops it there.
_PROBE = r"""
import argparse, json, runpy, sys
missing, reached = {}, set()
class Parsed(BaseException):
    pass
def probe(self, *args, **kwargs):
    for action in self._actions:
        if action.help is None and not isinstance(action, argparse._HelpAction):
            missing.setdefault(TOOL, []).append("/".join(action.option_strings) or action.dest)
    reached.add(TOOL)
    raise Parsed
for name in ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args"):
    setattr(argparse.ArgumentParser, name, probe)
for TOOL in sys.argv[1:]:
    sys.argv = [TOOL]
    try:
        runpy.run_path(TOOL, run_name="__main__")
    except (Parsed, SystemExit):
        pass
print(json.dumps({"missing": missing, "reached": sorted(reached)}))
"""


def test_every_option_of_every_tool_has_help():
    assert len(TOOLS) >= 10, TOOLS
    result = subprocess.run([sys.executable, "-c", _PROBE, *map(str, TOOLS)], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["missing"] == {}, f"options without help text: {report['missing']}"
    unparsed = sorted(set(map(str, TOOLS)) - set(report["reached"]))
    assert unparsed == [], f"tools that never reached argument parsing (probe them some other way): {unparsed}"

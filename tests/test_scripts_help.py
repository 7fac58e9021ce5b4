"""Every option of every command-line tool has help text (`--help` is the tools' documentation): each subcommand of
``ca2vdm``, the entry points in infer/ and train/, and every script left in scripts/ (benchmarks in scripts/bench/,
finished experiments in scripts/experiments/)."""
import json
import subprocess
import sys
from pathlib import Path

from ca2vdm.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p for d in ("scripts", "scripts/bench", "scripts/experiments", "infer", "train")
               for p in (ROOT / d).glob("*.py") if not p.name.startswith("_"))


def subcommands() -> list[list[str]]:
    """The words of every subcommand: ``["generate"]``, ..., ``["eval", "quality"]``."""
    return [[name, *([sub] if sub else [])] for name, (target, _) in COMMANDS.items()
            for sub in (target if isinstance(target, dict) else [None])]


# Runs each tool up to its argument parsing (in one interpreter: torch is imported once), records the options of every
# parser it builds that lack help, and stops it there: scripts as __main__, subcommands through ca2vdm's main.
_PROBE = r"""
import argparse, json, runpy, sys
from ca2vdm.cli.main import main
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
scripts, commands = json.loads(sys.argv[1])
for TOOL in scripts:
    sys.argv = [TOOL]
    try:
        runpy.run_path(TOOL, run_name="__main__")
    except (Parsed, SystemExit):
        pass
for words in commands:
    TOOL = " ".join(["ca2vdm", *words])
    try:
        main(words)
    except (Parsed, SystemExit):
        pass
print(json.dumps({"missing": missing, "reached": sorted(reached)}))
"""


def test_every_option_of_every_tool_has_help():
    assert len(TOOLS) >= 10 and len(subcommands()) >= 15, (TOOLS, subcommands())
    tools = [str(p) for p in TOOLS]
    result = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([tools, subcommands()])], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["missing"] == {}, f"options without help text: {report['missing']}"
    expected = set(tools) | {" ".join(["ca2vdm", *words]) for words in subcommands()}
    unparsed = sorted(expected - set(report["reached"]))
    assert unparsed == [], f"tools that never reached argument parsing (probe them some other way): {unparsed}"


# --help of every subcommand, then (torch is allowed from here on) of every script as __main__; the modules loaded
# by the subcommands' --help, and each tool whose --help did not exit 0 (or printed no usage)
_HELP = r"""
import contextlib, io, json, runpy, sys
from ca2vdm.cli.main import main
scripts, commands = json.loads(sys.argv[1])
failed = {}
def run(name, call):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            call()
        failed[name] = "did not exit"
    except SystemExit as e:
        if e.code or not out.getvalue().startswith("usage:"):
            failed[name] = e.code or out.getvalue()[:200]
for words in commands:
    run(" ".join(["ca2vdm", *words]), lambda: main([*words, "--help"]))
heavy = sorted(m for m in ("torch", "accelerate", "diffusers", "av", "decord") if m in sys.modules)
for tool in scripts:
    sys.argv = [tool, "--help"]
    run(tool, lambda: runpy.run_path(tool, run_name="__main__"))
print(json.dumps({"failed": failed, "heavy": heavy}))
"""


def test_every_subcommand_and_script_answers_help():
    """``--help`` exits 0 with the usage for every subcommand, without importing torch or another heavy library, and
    for every script."""
    result = subprocess.run([sys.executable, "-c", _HELP, json.dumps([[str(p) for p in TOOLS], subcommands()])],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"failed": {}, "heavy": []}

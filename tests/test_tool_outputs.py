"""One rule for every tool's outputs and numbers (issue 42): every ``ca2vdm`` subcommand and every script declares
what it writes (``ToolParser.add_output``), what it reads (``add_input``) and the range of each number flag, and an
output that would destroy something is refused in one line before any work: a device (a pipe stands in, as
test_writes_destroy_nothing does), a folder given for a file (a file for a folder), or one of the tool's inputs.

The walk runs in one fresh interpreter: each tool up to its parser (scripts as __main__, subcommands through
``ca2vdm``'s main), whose actions are read; then each tool again with each bad output, which must exit at once with an
``error:`` line naming the flag and leave the pipe, the folder and the input as they were.
"""
import json
import subprocess
import sys
from pathlib import Path

from test_scripts_help import TOOLS, subcommands

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_NAMES = r"(out|out_dir|outdir|dst|json|sheet|stats|plot|png|save|output\w*)"  # dests that name what is written
FILL = {"variant": "v:train.max_steps=1"}  # required arguments that are neither inputs nor outputs

_WALK = r"""
import argparse, contextlib, io, json, os, re, runpy, stat, sys
from ca2vdm.cli.args import ToolParser
from ca2vdm.cli.main import main

tools, tmp, names, fill = json.loads(sys.argv[1])
TOOL, captured = None, {}

class Parsed(BaseException):
    pass

def capture(self, *args, **kwargs):
    captured.setdefault(TOOL, self)
    raise Parsed

def run(tool, argv):
    if tool.endswith(".py"):
        sys.argv = [tool, *argv]
        runpy.run_path(tool, run_name="__main__")
    else:
        main([*tool.split()[1:], *argv])

original = {n: getattr(argparse.ArgumentParser, n) for n in ("parse_args", "parse_intermixed_args")}
for name in original:
    setattr(argparse.ArgumentParser, name, capture)
for TOOL in tools:
    try:
        run(TOOL, [])
    except (Parsed, SystemExit):
        pass
for name, method in original.items():
    setattr(argparse.ArgumentParser, name, method)

def flag(action):
    return action.option_strings[0] if action.option_strings else action.metavar or action.dest.upper()

problems, cases = [], []
fifo, folder, regular, source = (os.path.join(tmp, n) for n in ("fifo", "folder", "regular", "input.safetensors"))
os.mkfifo(fifo)
os.mkdir(folder)
for path in (regular, source):
    with open(path, "wb") as f:
        f.write(b"kept bytes")
for tool, parser in captured.items():
    if not isinstance(parser, ToolParser):
        problems.append(f"{tool}: its parser is not ca2vdm.cli.args.new_parser's")
        continue
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    for a in actions:
        kind = getattr(a.type, "__name__", "")
        if a.type in (int, float) or kind == "<lambda>":
            problems.append(f"{tool} {flag(a)}: a number without a declared range (type={kind})")
        if re.fullmatch(names, a.dest) and not (getattr(a, "output", None) or getattr(a, "input", False)):
            problems.append(f"{tool} {flag(a)}: names an output but is not declared with add_output (or add_input)")
    inputs = [a for a in actions if getattr(a, "input", False)]
    for out in (a for a in actions if getattr(a, "output", None)):
        bad = {"device": fifo, "input": source}
        if out.output != "video":  # generate's --out: a folder means long_video.mp4 inside it
            bad["other kind"] = regular if out.output == "folder" else folder
        for case, value in bad.items():
            if case == "input" and not inputs:
                continue
            positional, options = [], []
            for a in actions:
                given = value if a is out else source if a in inputs[:1] and case == "input" else None
                if given is None and a.required:
                    given = source if getattr(a, "input", False) else os.path.join(tmp, "new-" + a.dest) \
                        if getattr(a, "output", None) else fill.get(a.dest)
                if given is None and not a.option_strings and a.nargs not in ("*", "?"):
                    given = source if getattr(a, "input", False) else fill.get(a.dest)
                if given is None:
                    continue
                if a.option_strings:
                    options += [a.option_strings[0], given]
                else:
                    positional.append(given)
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    run(tool, positional + options)
                code = 0
            except SystemExit as e:
                code, text = e.code, err.getvalue()
                if isinstance(e.code, str):
                    code, text = 1, e.code
            except BaseException as e:
                code, text = repr(e), err.getvalue()
            kept = (stat.S_ISFIFO(os.stat(fifo).st_mode) and os.path.isdir(folder) and not os.listdir(folder)
                    and open(regular, "rb").read() == b"kept bytes" and open(source, "rb").read() == b"kept bytes")
            cases.append({"tool": tool, "flag": flag(out), "case": case, "code": code, "kept": kept,
                          "line": (text if code else "").strip().splitlines()[-1:] })
print(json.dumps({"problems": problems, "cases": cases, "reached": sorted(captured)}))
"""


def test_every_tool_declares_its_outputs_and_refuses_one_that_would_destroy_something(tmp_path):
    tools = [str(p) for p in TOOLS] + [" ".join(["ca2vdm", *words]) for words in subcommands()]
    result = subprocess.run([sys.executable, "-c", _WALK, json.dumps([tools, str(tmp_path), OUTPUT_NAMES, FILL])],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["problems"] == []
    assert set(report["reached"]) == set(tools)
    walked = {(c["tool"], c["flag"]) for c in report["cases"]}
    assert len(walked) >= 25, sorted(walked)  # every tool's outputs: generate's, the evaluations', the scripts'...
    assert {("ca2vdm generate", "--out"), ("ca2vdm eval prompts", "--sheet"), ("ca2vdm make-data", "--out"),
            ("ca2vdm merge-lora", "OUT"), ("scripts/bench/serve.py", "--out")} <= {(t.replace(str(ROOT) + "/", ""), f)
                                                                                  for t, f in walked}
    wrong = [c for c in report["cases"] if c["code"] != 1 or not c["kept"] or not c["line"]
             or "error" not in c["line"][0] or c["flag"] not in c["line"][0]]
    assert wrong == []

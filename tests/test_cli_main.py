"""The ``ca2vdm`` command (ca2vdm/cli/main.py): ``ca2vdm --help`` lists every subcommand, one line each; each
``ca2vdm SUB --help`` is that tool's full help and loads no torch; an unknown command is one usage error."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ca2vdm.cli.main import COMMANDS

from helpers import ca2vdm_command, checkout_env, run_command

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = [[name, *([sub] if sub else [])] for name, (target, _) in COMMANDS.items()
               for sub in (target if isinstance(target, dict) else [None])]
# whether a fresh interpreter loaded anything heavy while answering ca2vdm ARGS --help
_HEAVY = ("import contextlib, io, json, sys\nfrom ca2vdm.cli.main import main\nout = io.StringIO()\n"
          "try:\n    with contextlib.redirect_stdout(out):\n        main(sys.argv[1:] + ['--help'])\n"
          "except SystemExit as e:\n    code = e.code\n"
          "heavy = sorted(m for m in ('torch', 'accelerate', 'diffusers', 'av', 'decord') if m in sys.modules)\n"
          "print(json.dumps({'code': code, 'usage': out.getvalue().splitlines()[0], 'heavy': heavy}))")


def test_help_lists_every_subcommand_with_one_line():
    result = subprocess.run(ca2vdm_command("--help"), capture_output=True, text=True, env=checkout_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: ca2vdm COMMAND"), result.stderr
    listed = {}
    for line in result.stdout.split("commands:\n")[1].splitlines():
        words, _, summary = line.strip().partition("  ")
        listed[words] = summary.strip()
    assert set(listed) == {" ".join(words) for words in SUBCOMMANDS}, listed
    assert all(listed.values()), listed  # one line each
    for required in ("generate", "serve", "train", "distill", "train-autoencoder", "calibrate", "encode-latents",
                     "export", "merge-lora", "make-data", "make-ode-pairs", "train-detector", "eval quality",
                     "eval prompts", "eval long-video"):
        assert required in listed, required


def test_every_tool_module_is_a_subcommand():
    """A module of ca2vdm/cli with a main is reachable as a subcommand (args, trainer and main are not tools)."""
    modules = {target for target, _ in COMMANDS.values() if isinstance(target, str)}
    modules |= {module for target, _ in COMMANDS.values() if isinstance(target, dict) for module, _ in target.values()}
    files = {f"ca2vdm.cli.{p.stem}" for p in (ROOT / "ca2vdm/cli").glob("*.py")} - {
        "ca2vdm.cli.__init__", "ca2vdm.cli.args", "ca2vdm.cli.trainer", "ca2vdm.cli.main"}
    assert modules == files


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=[" ".join(w) for w in SUBCOMMANDS])
def test_subcommand_help_is_the_tools_and_loads_no_torch(words):
    result = subprocess.run([sys.executable, "-c", _HEAVY, *words], capture_output=True, text=True,
                            env=checkout_env(), cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None) and report["heavy"] == [], report
    assert report["usage"].startswith(f"usage: ca2vdm {' '.join(words)} "), report  # the tool's own parser


def test_unknown_or_missing_command_is_one_usage_error(capsys):
    assert run_command("bogus") == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ca2vdm COMMAND") and "ca2vdm: error: unknown command 'bogus' (choose from " in err
    assert run_command("eval") == 2
    assert "ca2vdm eval: error: a command is required (choose from quality, prompts, long-video" in \
        capsys.readouterr().err
    assert run_command("eval", "--help") == 0
    assert "long-video" in capsys.readouterr().out

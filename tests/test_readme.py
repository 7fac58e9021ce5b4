"""The README is the front page: short, the two set-up commands first, and every command in it runs.

Each command of the README's ```bash blocks is run here, in order, in a scratch folder laid out like the checkout,
with tiny settings (one chunk, two training steps); the set-up and test commands are what CI runs (``.ci/run``), and
commands that need several processes or a server are run by the tests named in ``ELSEWHERE``.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP = "bash scripts/setup.sh"
TEST = ".venv/bin/python -m pytest -q tests"
# command prefix -> the test that runs it (several processes, or a server); here its arguments are parsed
ELSEWHERE = {
    "accelerate launch --multi_gpu --num_processes 2 train/train.py":
        "test_parallelize.py::test_fsdp_two_processes_shard_resume_exactly_and_match_ddp",
    "accelerate launch --multi_gpu --num_processes 2 infer/long_video.py":
        "test_multi_video.py::test_two_processes_write_every_video",
    ".venv/bin/python infer/serve.py":
        "test_serve_browser.py::test_page_streams_frames_stops_and_downloads_what_was_shown",
}
# tiny settings per tool, appended or replacing the README's
TINY_TRAIN = ["train.batch_size=2", "train.log_every=1", "train.save_every=1", "train.warmup_steps=1",
              "data.clips_per_video=2", "--no-progress"]


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 180, "README.md is the front page: at most 180 lines (the rest goes to docs/)"
    first = readme_commands(text)[:2]
    assert first[0].startswith(f"{SETUP} && .venv/bin/python infer/long_video.py"), first
    assert first[1] == f"{SETUP} && {TEST}", first
    ci = (ROOT / ".ci/run").read_text()
    assert SETUP in ci and TEST in ci, "CI must run the README's test command"
    for link in re.findall(r"\]\(((?:docs|checkpoints)/[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links to a missing file: {link}"


def _tiny(argv: list[str], trained: int) -> list[str]:
    """The README's command with tiny settings: one chunk, two denoising steps, a few training steps."""
    script = argv[0]
    if script == "infer/long_video.py":
        chunks = "1"
        if "--switch" in argv:  # a prompt switch lands inside the tiny video: at its second chunk
            i = argv.index("--switch") + 1
            argv[i], chunks = "1=" + argv[i].split("=", 1)[1], "2"
        if "--chunks" in argv:
            argv[argv.index("--chunks") + 1] = chunks
        argv += ["--chunks", chunks, "--steps", "2"] if "--chunks" not in argv else ["--steps", "2"]
    elif argv[:2] == ["ca2vdm", "make-data"]:
        argv += ["--num-videos", "6", "--frames", "24"]
    elif script == "train/train.py":
        argv += TINY_TRAIN + [f"train.max_steps={trained + 1}"]  # a resumed run does one more step
    return argv


def _parses(command: str, prefix: str) -> None:
    """A command run by another test: its arguments are what its entry point accepts (a training config must
    validate), and the test that runs it exists."""
    from ca2vdm.cli import generate, serve, trainer

    test_file, test = ELSEWHERE[prefix].split("::")
    assert f"def {test}(" in (ROOT / "tests" / test_file).read_text(), f"{command}: {ELSEWHERE[prefix]} is gone"
    argv = shlex.split(command)
    script = next(a for a in argv if a.endswith(".py"))
    args = argv[argv.index(script) + 1:]
    if script == "train/train.py":
        parser = trainer.trainer_parser("", "")
        parsed = parser.parse_intermixed_args(args)
        parsed.config = str(ROOT / parsed.config)
        trainer.load_trainer_config(parser, parsed, "model")
    else:
        {"infer/long_video.py": generate, "infer/serve.py": serve}[script].parse_args(args)


def test_every_readme_command_runs(tmp_path):
    for name in ("ca2vdm", "checkpoints", "configs", "infer", "scripts", "train"):
        (tmp_path / name).symlink_to(ROOT / name)
    trained = 0
    ran = []
    for command in readme_commands(README.read_text()):
        if command.startswith(f"{SETUP} && "):  # CI runs the set-up (and the test command) itself
            command = command.split(" && ", 1)[1]
            if command == TEST:
                continue
        prefix = next((p for p in ELSEWHERE if command.startswith(p)), None)
        if prefix:
            _parses(command, prefix)
            continue
        argv = shlex.split(command)
        assert argv[0] in (".venv/bin/python", ".venv/bin/ca2vdm"), \
            f"README commands run the set-up's interpreter or its ca2vdm command: {command}"
        # a --checkpoint is used as written: it must exist after the tiny run
        argv = _tiny(["ca2vdm", *argv[1:]] if argv[0].endswith("ca2vdm") else argv[1:], trained)
        tool = " ".join(argv[:2]) if argv[0] == "ca2vdm" else argv[0]
        run = ["-m", "ca2vdm.cli.main", *argv[1:]] if argv[0] == "ca2vdm" else argv  # the console script's code
        result = subprocess.run([sys.executable, *run], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        trained += tool == "train/train.py"
        ran.append(tool)
    assert {"infer/long_video.py", "train/train.py", "ca2vdm make-data", "ca2vdm encode-latents"} <= set(ran), ran


def _stubs(folder: Path, root: bool, chromium: bool) -> dict:
    """An environment whose PATH holds only stand-ins: id (root or not), apt-get (logs its arguments), and
    chromium when asked; plus a .venv whose python and pip succeed (torch "installed")."""
    folder.mkdir()
    log = folder / "calls.log"
    tools = {"id": f"echo {0 if root else 1000}", "apt-get": f'echo "apt-get $*" >> {log}', "python3": "exit 0"}
    if chromium:
        tools["chromium"] = "exit 0"
    for name, body in tools.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (folder / name).chmod(0o755)
    for tool in ("dirname", "bash"):
        (folder / tool).symlink_to(shutil.which(tool))
    return {"PATH": str(folder), "HOME": str(folder)}


def test_setup_says_what_it_does_and_installs_chromium_where_it_can(tmp_path):
    """The README's test command needs Chromium, which setup.sh did not install (only .ci/run did), after 3 silent
    minutes. Now setup says what it does, and installs Debian's chromium as root with apt; otherwise it says how."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "setup_browser.sh"):
        shutil.copy(ROOT / "scripts" / name, checkout / "scripts" / name)
    venv = checkout / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name in ("python", "pip"):
        (venv / name).write_text(f"#!/bin/bash\necho \"{name} $*\" >> {tmp_path / 'venv.log'}\n")
        (venv / name).chmod(0o755)
    for root, chromium, says in [(True, False, "setup: installing Debian's chromium for the browser test"),
                                 (False, False, "setup: no chromium, so the browser test will skip; to run it: sudo "
                                                "apt-get install chromium"),
                                 (True, True, "setup: chromium for the browser test: ")]:
        stubs = tmp_path / f"stubs-{root}-{chromium}"
        result = subprocess.run(["/bin/bash", "scripts/setup.sh"], cwd=checkout, capture_output=True, text=True,
                                env=_stubs(stubs, root, chromium), timeout=60)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "setup: installing ca2vdm and its test, plot and serve extras into .venv (pip install -e)"
        assert lines[1].startswith(says) and lines[-1].startswith("setup: done")
        calls = (stubs / "calls.log").read_text().splitlines() if (stubs / "calls.log").exists() else []
        assert calls == (["apt-get update -qq", "apt-get install -y -qq chromium"] if root and not chromium else [])


def test_the_browser_test_skips_without_chromium_in_one_line_but_not_under_ci(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(tmp_path), PYTHONPATH=str(ROOT))  # no chromium on this PATH
    run = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_serve_browser.py"]
    skipped = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert skipped.returncode in (0, 5) and "1 skipped" in skipped.stdout, skipped.stdout[-2000:]  # 5: none ran
    assert "the browser test needs chromium: install Debian's chromium (bash scripts/setup.sh does as root; or: " \
           "sudo apt-get install chromium)" in skipped.stdout
    failed = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, env={**env, "CI": "1"}, timeout=300)
    assert failed.returncode != 0 and "the browser test must run under CI, but there is no chromium" in failed.stdout

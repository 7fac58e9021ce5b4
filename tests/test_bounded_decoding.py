"""Decompression bombs: a small file whose frames decode beyond 4096x4096 pixels is refused from its header, before
anything is decoded (images and videos alike: the command line's --first-frame, the readers the API and training
use, the server's uploads); a JPEG that large is decoded reduced instead."""
import io
import re

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ca2vdm.io.bounded import MAX_FRAME_PIXELS, FrameTooLarge, decode_image
from ca2vdm.io.video import open_video, read_video, stream_video
from ca2vdm.serve import create_app

from helpers import cli_error
from serve_helpers import FakeModel, PacedSource, receive

TOO_LARGE = "over the limit of 4096x4096 (16.8 million pixels) that is decoded; scale it down first"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """A 3 KB PNG of 5000x5000 pixels (75 MB as RGB) and a 5 KB mp4 of one 4128x4128 frame."""
    folder = tmp_path_factory.mktemp("bombs")
    Image.new("1", (5000, 5000)).save(folder / "bomb.png")
    with av.open(str(folder / "bomb.mp4"), "w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=8)
        stream.width = stream.height = 4128
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame(4128, 4128, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert (folder / "bomb.png").stat().st_size < 10_000 and (folder / "bomb.mp4").stat().st_size < 100_000
    return folder


def test_readers_refuse_frames_beyond_the_bound_before_decoding(bombs):
    png, mp4 = bombs / "bomb.png", bombs / "bomb.mp4"
    with pytest.raises(FrameTooLarge, match=f"^image {png} is 5000x5000 pixels \\(25.0 million per frame\\), "):
        read_video(png, size=32)
    with pytest.raises(FrameTooLarge, match=f"^image {png} is 5000x5000 pixels"):
        next(stream_video(png, 32))
    for read in (open_video, lambda p: next(stream_video(p, 32)), lambda p: read_video(p, size=32)):
        with pytest.raises(FrameTooLarge, match=f"^video {mp4} is 4128x4128 pixels \\(17.0 million per frame\\), "
                                                f"{re.escape(TOO_LARGE)}"):
            read(mp4)


@pytest.mark.parametrize("name", ["bomb.png", "bomb.mp4"])
def test_first_frame_bomb_is_one_line_at_the_command_line(bombs, name, capsys, tmp_path):
    error = cli_error(capsys, "--first-frame", bombs / name, "--chunks", 1, "--out", tmp_path / "v.mp4")
    assert error.startswith("error: ") and TOO_LARGE in error and "\n" not in error.strip(), error
    assert not list(tmp_path.iterdir())


def test_a_jpeg_beyond_the_bound_is_decoded_reduced():
    buffer = io.BytesIO()
    Image.new("L", (6000, 4000), 120).save(buffer, format="JPEG")
    pixels = decode_image(io.BytesIO(buffer.getvalue()), "photo")
    assert pixels.shape == (1, 2000, 3000, 3) and pixels.dtype == np.uint8 and abs(int(pixels.mean()) - 120) <= 1
    assert pixels.shape[1] * pixels.shape[2] <= MAX_FRAME_PIXELS


def test_the_server_refuses_an_upload_beyond_the_bound(bombs):
    app = create_app({"fake": FakeModel()}, max_chunks=5, source=PacedSource())
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        for name, size in (("bomb.png", "5000x5000"), ("bomb.mp4", "4128x4128")):
            ws.send_bytes((bombs / name).read_bytes())
            kind, error, _ = receive(ws)
            assert kind == "error" and error["message"].startswith(f"the upload is {size} pixels") and \
                TOO_LARGE in error["message"], error
            assert list(app.state.serve.temp_root.glob("*/upload.*")) == []

import json

import pytest
import torch

from ca2vdm.config import CodecConfig
from ca2vdm.data.clips import VideoFolderDataset
from ca2vdm.data.latent_encoding import encode_folder
from ca2vdm.data.latents import INDEX_NAME, LatentClipDataset
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.encoders.codec import build_codec
from ca2vdm.errors import DataError

from helpers import save_tiny_autoencoder


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Five labelled 16x16 videos (one broken file beside them), encoded with a tiny autoencoder (factor 2)."""
    root = tmp_path_factory.mktemp("videos")
    write_dataset(root, num_videos=5, num_frames=12, size=16, seed=0)
    (root / "broken.mp4").write_bytes(b"not a video")
    save_tiny_autoencoder(root.parent / "ae")
    codec = build_codec(CodecConfig(kind="diffusers", path=str(root.parent / "ae")))
    out = root.parent / "latents"
    index = encode_folder(root, out, codec, pixel_resolution=16, progress=False)
    return root, out, codec, index


def test_shards_hold_every_frame_with_labels_and_codec(encoded):
    root, out, codec, index = encoded
    assert (out / INDEX_NAME).is_file()
    assert [v["frames"] for v in index["videos"]] == [12] * 5
    assert [v["label"] for v in index["videos"]] == [0, 1, 2, 0, 1]
    assert (index["channels"], index["resolution"], index["pixel_resolution"]) == (4, 8, 16)
    assert index["codec"]["kind"] == "diffusers" and index["codec"]["factor"] == 2
    assert [s[0].split("/")[-1] for s in index["skipped"]] == ["broken.mp4"]


@pytest.mark.parametrize("sink_frames", [0, 1])
def test_latent_clips_equal_encoded_video_clips(encoded, sink_frames):
    """Same (seed, epoch, item) -> the latent dataset's clip is the video dataset's clip, encoded (with attention
    sinks too: the first frame, then a later run)."""
    root, out, codec, _ = encoded
    videos = VideoFolderDataset(root, num_frames=5, frame_stride=2, resolution=16, seed=3, clips_per_video=2,
                                sink_frames=sink_frames)
    latents = LatentClipDataset(out, num_frames=5, frame_stride=2, seed=3, clips_per_video=2, sink_frames=sink_frames)
    assert len(latents) == len(videos) == 10
    for epoch in (0, 1):
        videos.set_epoch(epoch), latents.set_epoch(epoch)
        for i in (0, 3, 7):
            item = latents[i]
            assert item["video"].shape == (4, 5, 8, 8) and item["video"].dtype == torch.float32
            expected = codec.encode(videos[i]["video"][None])[0]
            torch.testing.assert_close(item["video"], expected, atol=2e-3, rtol=2e-3)  # stored as float16
            assert item["label"] == videos[i]["label"]


def test_mismatches_are_clear_errors(encoded, tmp_path):
    root, out, codec, _ = encoded
    latents = LatentClipDataset(out, num_frames=3)
    latents.check_fits(4, 8, codec.metadata())
    with pytest.raises(DataError, match="model expects 3 x 8"):
        latents.check_fits(3, 8, codec.metadata())
    with pytest.raises(DataError, match="were encoded with codec"):
        latents.check_fits(4, 8, {"kind": "autoencoder", "path": "other"})
    with pytest.raises(DataError, match="already holds encoded latents"):
        encode_folder(root, out, codec, pixel_resolution=16, progress=False)
    with pytest.raises(DataError, match="no index.json"):
        LatentClipDataset(tmp_path, num_frames=3)
    with pytest.raises(DataError, match="a clip needs 13|has the 13 frames"):
        LatentClipDataset(out, num_frames=13)
    (tmp_path / INDEX_NAME).write_text("{not json")
    with pytest.raises(DataError, match="cannot be read"):
        LatentClipDataset(tmp_path, num_frames=3)
    assert json.loads((out / INDEX_NAME).read_text())["videos"]

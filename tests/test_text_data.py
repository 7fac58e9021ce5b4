"""Text encoders (WordLlama's shipped table, a local transformers folder), caption manifests, captioned shapes, and
training a text model on captions or on latents with stored caption vectors."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ca2vdm.config import load_config
from ca2vdm.data.captioned import HELD_OUT, pairs, write_captioned_dataset
from ca2vdm.data.captions import load_captions
from ca2vdm.encoders.text import TransformersEncoder, WordLlamaEncoder, build_text_encoder
from ca2vdm.errors import ConfigError, DataError
from ca2vdm.io.video import read_video
from ca2vdm.models.dit import CausalVideoDiT

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]


def test_wordllama_token_vectors():
    encoder = WordLlamaEncoder(max_tokens=6)
    text = encoder.encode(["a red circle", ""])
    assert text.tokens.shape == (2, 6, 256) and text.mask.tolist() == [[True] * 3 + [False] * 3, [False] * 6]
    assert (text.tokens[0, 3:] == 0).all() and (text.tokens[1] == 0).all()
    assert torch.equal(text.tokens[0, 1], encoder.table[encoder.token_ids(["red"])[0][-1]])  # one row per token
    assert not torch.equal(encoder.encode("a red circle").tokens, encoder.encode("a blue circle").tokens)


def _save_tiny_encoder(folder, kind: str) -> None:
    """A tiny random T5 encoder or CLIP text model with a word-level tokenizer, saved as save_pretrained does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    if kind == "t5":
        model = T5EncoderModel(T5Config(vocab_size=8, d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32))
    else:
        model = CLIPTextModel(CLIPTextConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, max_position_embeddings=16))
    model.save_pretrained(folder)


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_transformers_encoder_from_a_local_folder(tmp_path, kind):
    _save_tiny_encoder(tmp_path, kind)
    encoder = build_text_encoder(str(tmp_path), max_tokens=5)
    assert isinstance(encoder, TransformersEncoder) and encoder.dim == 16
    text = encoder.encode(["a red circle", ""])
    assert text.tokens.shape == (2, 5, 16) and text.mask.sum(1).tolist()[1] == 0 and text.mask[0, :3].all()
    # a text model on it, with the width recorded
    model = random_model(text_encoder=str(tmp_path), text_dim=16, text_tokens=5)
    out = model(torch.randn(2, 3, 3, 16, 16), torch.rand(2, 3), text=text)
    assert out.shape == (2, 3, 3, 16, 16)


def test_encoder_folder_that_is_not_one(tmp_path):
    with pytest.raises(ConfigError, match="is not a text encoder: give none, wordllama, or a folder"):
        build_text_encoder(str(tmp_path / "missing"), 8)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="cannot be loaded as a text encoder"):
        build_text_encoder(str(tmp_path), 8)
    assert build_text_encoder("none", 8) is None


def test_caption_manifests_skip_and_list_bad_rows(tmp_path):
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text('{"file": "a.mp4", "caption": "a red  circle"}\nnot json\n{"file": "b.mp4"}\n\n'
                     '{"caption": "no file"}\n{"file": "c.mp4", "caption": " "}\n[1]\n')
    captions, skipped = load_captions(jsonl)
    assert captions == {"a.mp4": "a red circle"}
    assert skipped == [("captions.jsonl:2", "not a JSON object"), ("captions.jsonl:3", "b.mp4: no caption"),
                       ("captions.jsonl:5", "no file"), ("captions.jsonl:6", "c.mp4: no caption"),
                       ("captions.jsonl:7", "not a JSON object")]
    openvid = tmp_path / "openvid.csv"
    openvid.write_text('video,caption,aesthetic score\nx.mp4,"a cat, walking",5.1\ny.mp4,,4\n')
    assert load_captions(openvid) == ({"x.mp4": "a cat, walking"}, [("openvid.csv:3", "y.mp4: no caption")])
    webvid = tmp_path / "webvid.csv"
    webvid.write_text("videoid,contentUrl,duration,page_dir,name\n31353427,http://x,PT00H00M15S,1066_1070,Waves\n")
    assert load_captions(webvid)[0] == {"1066_1070/31353427.mp4": "Waves"}
    other = tmp_path / "other.csv"
    other.write_text("path,text\na.mp4,hi\n")
    with pytest.raises(DataError, match="needs file,caption"):
        load_captions(other)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"file": "a.mp4"}\n')
    with pytest.raises(DataError, match="no usable row"):
        load_captions(empty)


def test_a_manifest_that_is_not_utf8_says_so_and_a_byte_order_mark_is_read(tmp_path):
    """A non-UTF-8 manifest was a 35-line UnicodeDecodeError; a CSV with a UTF-8 BOM (spreadsheets write one) was
    refused as having no file,caption columns."""
    latin = tmp_path / "captions.jsonl"
    latin.write_bytes('{"file": "a.mp4", "caption": "a red circle"}\n{"file": "b.mp4", "caption": "café"}\n'
                      .encode("latin-1"))
    with pytest.raises(DataError) as error:
        load_captions(latin)
    assert str(error.value) == f"caption manifest {latin} is not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"
    bom = tmp_path / "captions.csv"
    bom.write_bytes("file,caption\na.mp4,a red circle\n".encode("utf-8-sig"))
    assert load_captions(bom) == ({"a.mp4": "a red circle"}, [])


def test_a_caption_over_the_models_tokens_is_skipped_and_listed_at_load(tmp_path):
    """It was read as it was: the run died at the batch that held it (naming --prompt), and again at the same step on
    every resume; ca2vdm encode-latents aborted the whole encoding. Now such videos are skipped and listed when the
    data is opened, as videos without captions are, and encoding goes on without them."""
    from ca2vdm.data.clips import VideoFolderDataset
    from ca2vdm.data.latent_encoding import encode_folder
    from ca2vdm.encoders.codec import build_codec

    write_captioned_dataset(tmp_path / "videos", num_videos=3, num_frames=8, size=16, seed=0)
    manifest = tmp_path / "videos" / "captions.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["caption"] = "a very small red circle drifting left very slowly across the whole frame"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoder = WordLlamaEncoder(max_tokens=8)
    data = VideoFolderDataset(tmp_path / "videos", 4, resolution=16, captions=manifest, caption_problem=encoder.problem,
                              report_skipped=False)
    assert [v.name for v in data.videos] == ["video_00000.mp4", "video_00002.mp4"]
    assert data.skipped == [(str(tmp_path / "videos" / "video_00001.mp4"), f"its caption in {manifest} is 14 tokens "
                             "long; this model reads at most 8 (model.text_tokens): shorten it")]
    index = encode_folder(tmp_path / "videos", tmp_path / "latents", build_codec(None), 16, progress=False,
                          text_encoder=encoder, text_name="wordllama", captions=manifest)
    assert [v["file"] for v in index["videos"]] == ["video_00000.mp4", "video_00002.mp4"]
    assert "14 tokens long" in index["skipped"][0][1]


def test_captioned_shapes(tmp_path):
    assert write_captioned_dataset(tmp_path, num_videos=4, num_frames=6, size=16, seed=0) == 4
    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    held = {(h["colour"], h["shape"]) for h in json.loads((tmp_path / "held_out.json").read_text())}
    assert held == set(HELD_OUT) and not held & {(r["colour"], r["shape"]) for r in rows}
    assert [(r["colour"], r["shape"]) for r in rows] == pairs(held_out=False)[:4]
    for row in rows:
        assert row["caption"].startswith("a ") and f"{row['colour']} {row['shape']}" in row["caption"]
        video = read_video(tmp_path / row["file"])  # (3, T, H, W) in [-1, 1]
        assert video.shape == (3, 6, 16, 16) and not torch.equal(video[:, 0], video[:, -1])  # it moves


def test_text_model_trains_on_captions_and_on_latents(tmp_path):
    """One step on captioned videos (caption dropout, text_dim from the encoder), and on latents whose caption
    vectors were stored by the encoder: the same batches give the same caption vectors."""
    from ca2vdm.data.latent_encoding import encode_folder
    from ca2vdm.data.latents import LatentClipDataset
    from ca2vdm.encoders.codec import build_codec
    from ca2vdm.training.diffusion_task import DiffusionTask

    write_captioned_dataset(tmp_path / "videos", num_videos=3, num_frames=8, size=16, seed=0)
    config = load_config(ROOT / "configs/tiny.yaml", [f"data.root={tmp_path / 'videos'}", "model.num_classes=0",
                                                      "model.text_encoder=wordllama", "model.text_tokens=12",
                                                      "diffusion.caption_dropout=0.5"])
    task = DiffusionTask(config, torch.device("cpu"))
    assert config.model.text_dim == 256
    dataset = task.dataset(config)
    item = dataset[0]
    batch = {k: (torch.stack([item[k]]) if isinstance(item[k], torch.Tensor) else [item[k]]) for k in item}
    model = task.build_model(config, None)
    loss = task.loss(model, batch, config, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    index = encode_folder(tmp_path / "videos", tmp_path / "latents", build_codec(None), 16, progress=False,
                          text_encoder=task.text_encoder, text_name="wordllama",
                          captions=tmp_path / "videos" / "captions.jsonl")
    assert index["text_encoder"] == "wordllama" and index["videos"][0]["caption"] == dataset.captions[0]
    latents = LatentClipDataset(tmp_path / "latents", config.model.clip_frames)
    latents.check_text(config.model)
    stored = latents[0]
    fresh = task.text_encoder.encode(dataset.captions[0])
    assert torch.equal(stored["text_mask"], fresh.mask[0])
    assert (stored["text"] - fresh.tokens[0]).abs().max() < 1e-2  # stored as float16
    config.model.text_tokens = 8
    with pytest.raises(DataError, match="re-encode"):
        latents.check_text(config.model)


def test_text_model_starts_from_a_label_model(tmp_path):
    from ca2vdm.training.diffusion_task import load_initial

    label = random_model(num_classes=3).state_dict()
    text = CausalVideoDiT(random_model(text_encoder="wordllama", text_dim=256).cfg)
    load_initial(text, label, "label.safetensors")
    assert torch.equal(text.state_dict()["x_embedder.weight"], label["x_embedder.weight"])
    assert np.all([(text.state_dict()[k] == 0).all() for k in text.state_dict() if k.endswith("cross.proj.weight")])


def test_a_prompt_says_once_which_words_the_model_never_saw(tmp_path):
    """Unknown words passed without a word. A text model's checkpoint records the words of its training captions
    (the shipped text demo's too), and a prompt names, once, those the model never saw."""
    from ca2vdm.generation.api import load_pipeline
    from ca2vdm.training.diffusion_task import DiffusionTask

    pipe = load_pipeline(ROOT / "checkpoints/text-demo.safetensors", steps=1)
    assert {"red", "circle", "drifting"} <= pipe.sampler.text_encoder.seen_words
    with pytest.warns(UserWarning, match="'a purple hexagon': the model never saw 'purple', 'hexagon' in its "
                                         "training captions"):
        pipe.generate(1, prompt="a purple hexagon")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.generate(1, prompt="a purple hexagon")  # once
        pipe.generate(1, prompt="a small red circle drifting left slowly")  # every word seen
    write_captioned_dataset(tmp_path / "videos", num_videos=3, num_frames=8, size=16, seed=0)
    config = load_config(ROOT / "configs/tiny.yaml", [f"data.root={tmp_path / 'videos'}", "model.num_classes=0",
                                                      "model.text_encoder=wordllama", "model.text_tokens=12"])
    task = DiffusionTask(config, torch.device("cpu"))
    dataset = task.dataset(config)
    assert task.caption_words == sorted({w for c in dataset.captions for w in c.split()})  # what checkpoints record

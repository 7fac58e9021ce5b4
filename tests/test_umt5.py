"""UMT5 prompts (ca2vdm/encoders/umt5.py) from a tiny random UMT5 and a tokenizer built in the test, in folders laid out
as a Wan diffusers folder (text_encoder/, tokenizer/): the same vectors as diffusers' WanPipeline for a prompt, the
empty prompt and an over-long one (cut with one warning), each prompt encoded once, offloading, and Wan's own T5
names read into UMT5EncoderModel."""
import pytest
import torch

from ca2vdm.config.conditioning import check_prompt
from ca2vdm.encoders.umt5 import UMT5TextEncoder, load_wan_t5, wan_t5_to_umt5
from ca2vdm.errors import ConfigError, SettingError

WORDS = "a red circle blue square moves left right up down the on green triangle".split()
TOKENS = 16  # the tiny model's text_tokens (Wan: 512)
TINY = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, feed_forward_proj="gated-gelu")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """A folder with text_encoder/ (a tiny UMT5EncoderModel) and tokenizer/ (a Unigram T5 tokenizer of WORDS)."""
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("wan")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), **TINY)).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def encoder(wan):
    return UMT5TextEncoder.from_folders(wan / "text_encoder", wan / "tokenizer", max_tokens=TOKENS)


@pytest.fixture(scope="module")
def reference(wan):
    """diffusers' WanPipeline on the same folders: its encode_prompt is Wan's prompt encoding."""
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(wan / "tokenizer", local_files_only=True)
    model = UMT5EncoderModel.from_pretrained(wan / "text_encoder", local_files_only=True)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=model, vae=None, scheduler=None, transformer=None)

    def encode(prompt: str, negative: bool = False) -> torch.Tensor:
        embeds, negative_embeds = pipe.encode_prompt(prompt if not negative else "a", negative_prompt=prompt,
                                                     do_classifier_free_guidance=negative,
                                                     max_sequence_length=TOKENS, device=torch.device("cpu"))
        return negative_embeds if negative else embeds
    return encode


def test_a_prompt_is_encoded_as_wan_encodes_it(encoder, reference):
    text = encoder.encode("  a red   circle moves left ")
    assert text.tokens.shape == (1, TOKENS, 32) and int(text.mask.sum()) == 6  # 5 words and </s>
    assert (text.tokens - reference("  a red   circle moves left ")).abs().max() <= 1e-5
    assert text.tokens[0, 6:].abs().max() == 0 and text.tokens[0, :6].abs().min() > 0  # padded rows zero, kept


def test_the_empty_prompt_is_wans_negative_prompt(encoder, reference):
    empty = encoder.encode("")
    assert int(empty.mask.sum()) == 1 and empty.tokens[0, 0].abs().max() > 0  # the one token </s>
    assert (empty.tokens - reference("", negative=True)).abs().max() <= 1e-5
    with pytest.raises(SettingError, match="must be a non-empty text"):
        check_prompt("")  # a user still gives a prompt, or none


def test_each_prompt_is_encoded_once(wan):
    encoder = UMT5TextEncoder.from_folders(wan / "text_encoder", wan / "tokenizer", max_tokens=TOKENS)
    calls = []
    encoder.model.register_forward_hook(lambda *_: calls.append(1))
    first = encoder.encode(["a red circle", "a blue square", "a red circle"])
    again = encoder.encode("a red circle")
    assert len(calls) == 2 and torch.equal(first.tokens[0], again.tokens[0]) and torch.equal(first.tokens[2],
                                                                                              again.tokens[0])


def test_a_prompt_longer_than_the_limit_is_cut_with_one_warning(encoder, reference, recwarn):
    prompt = " ".join(WORDS * 2)  # 28 words and </s>
    text = encoder.encode(prompt)
    encoder.encode(prompt)  # remembered: no second warning
    cut = [w for w in recwarn if "UMT5 reads 16" in str(w.message)]
    assert len(cut) == 1 and "is 29 tokens long" in str(cut[0].message) and "cut to its first 16" in str(
        cut[0].message)
    assert bool(text.mask.all()) and (text.tokens - reference(prompt)).abs().max() <= 1e-5


def test_offloaded_encoder_waits_on_the_cpu_and_gives_the_same_vectors(wan, encoder):
    offloaded = UMT5TextEncoder.from_folders(wan / "text_encoder", wan / "tokenizer", max_tokens=TOKENS,
                                             offload=True)
    assert torch.equal(offloaded.encode("a green triangle").tokens, encoder.encode("a green triangle").tokens)
    assert {p.device.type for p in offloaded.model.parameters()} == {"cpu"}


def test_folders_that_are_not_umt5_are_one_line(wan, tmp_path):
    with pytest.raises(ConfigError, match="UMT5 text encoder .* cannot be loaded: .*save_pretrained"):
        UMT5TextEncoder.from_folders(tmp_path, wan / "tokenizer")


def _wan_names(state: dict, layers: int) -> dict:
    """UMT5EncoderModel's tensors under Wan's T5Encoder names (wan/modules/t5.py), spelled out."""
    out = {"token_embedding.weight": state["shared.weight"], "norm.weight": state["encoder.final_layer_norm.weight"]}
    for i in range(layers):
        b = f"encoder.block.{i}.layer"
        out |= {f"blocks.{i}.attn.{p}.weight": state[f"{b}.0.SelfAttention.{p}.weight"] for p in "qkvo"}
        bias = state[f"{b}.0.SelfAttention.relative_attention_bias.weight"]
        out |= {f"blocks.{i}.norm1.weight": state[f"{b}.0.layer_norm.weight"],
                f"blocks.{i}.pos_embedding.embedding.weight": bias,
                f"blocks.{i}.norm2.weight": state[f"{b}.1.layer_norm.weight"],
                f"blocks.{i}.ffn.gate.0.weight": state[f"{b}.1.DenseReluDense.wi_0.weight"],
                f"blocks.{i}.ffn.fc1.weight": state[f"{b}.1.DenseReluDense.wi_1.weight"],
                f"blocks.{i}.ffn.fc2.weight": state[f"{b}.1.DenseReluDense.wo.weight"]}
    return out


def test_wans_own_t5_file_loads_into_umt5(encoder, tmp_path):
    state = encoder.model.state_dict()
    wan_state = _wan_names(state, TINY["num_layers"])
    assert len(wan_state) == len(state) - 1  # the embedding is stored once
    torch.save(wan_state, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    config = dict(vocab_size=len(WORDS) + 4, **TINY)
    model = load_wan_t5(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", config)
    ids, mask = torch.tensor([[4, 5, 6, 1, 0, 0]]), torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        assert torch.equal(model(ids, mask).last_hidden_state, encoder.model(ids, mask).last_hidden_state)
    with pytest.raises(ConfigError, match="'blocks.0.attn.x.weight' is not a name of Wan's T5 encoder"):
        wan_t5_to_umt5({"blocks.0.attn.x.weight": torch.zeros(1)})
    torch.save({k: v for k, v in wan_state.items() if k != "norm.weight"}, tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match="does not fit UMT5 .* 1 missing"):
        load_wan_t5(tmp_path / "partial.pth", config)

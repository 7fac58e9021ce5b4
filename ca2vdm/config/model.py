"""The model's configuration: its sizes, the registry of named sizes, and the checks that they fit together.

Torch-free, like the rest of :mod:`ca2vdm.config`: the command lines build their parsers from it before torch loads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ca2vdm.config.layout import ChunkLayout
from ca2vdm.errors import ConfigError

BACKENDS = ("auto", "sdpa", "flash", "flex")  # model.attention_backend (ca2vdm.models.attention)
ARCHS = ("dit", "wan")  # model.arch: the registered model families (ca2vdm.models.registry)
TEXT_FIELDS = ("text_encoder", "text_dim", "text_tokens")  # recorded only for text models (label models unchanged)
WAN_FIELDS = ("width", "ffn_dim", "freq_dim", "eps", "rope_max_seq_len", "positions")  # recorded only for arch wan
POSITIONS = ("absolute", "ring")  # model.positions (arch wan, ca2vdm.models.wan.cache)
MAX_TEXT_TOKENS = 512


@dataclass
class ModelConfig:
    name: str = "tiny"
    arch: str = "dit"               # the model family (ca2vdm.models.registry): dit = Ca2-VDM's causal ST-DiT
    in_channels: int = 3
    resolution: int = 16
    patch_size: int = 4
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    num_classes: int = 0            # 0: unconditional; otherwise labels 0..num_classes-1 plus a learned null label
    chunk_frames: int = 2           # frames denoised together (bidirectional inside, causal across chunks)
    first_frame_chunk: bool = True  # frame 0 is a chunk of its own (image-to-video condition)
    max_context_frames: int = 5     # conditioning frames kept in the KV cache (training clip = this + a chunk)
    prefix_frames: int = 0          # prefix-enhanced spatial attention over the last k conditioning frames; 0 = off
    sink_frames: int = 0            # attention sinks: the video's first k frames are never evicted; 0 = off
    attention_backend: str = "auto"  # auto (flex to train on CUDA, else flash or sdpa) | sdpa | flash | flex
    # text conditioning (cross-attention over prompt tokens, ca2vdm.models.cross_attention); none: labels or nothing
    text_encoder: str = "none"      # none | wordllama | a local folder of a transformers text encoder (T5, CLIP)
    text_dim: int = 0               # width of the encoder's token vectors (0: the encoder's, filled in by training)
    text_tokens: int = 24           # the longest prompt in the encoder's tokens; longer prompts are refused
    # arch wan (Wan 2.1's transformer, ca2vdm.models.wan): diffusers' WanTransformer3DModel sizes, and its positions
    width: int = 0                  # frame width in the model's space when it differs from resolution (the height)
    ffn_dim: int = 0                # the feed-forward width (Wan 2.1 1.3B: 8960)
    freq_dim: int = 256             # sinusoidal timestep features
    eps: float = 1e-6               # the layer norms' and q/k RMS norms' epsilon
    rope_max_seq_len: int = 1024    # rows of Wan's RoPE table: absolute positions must stay below it
    positions: str = "ring"         # absolute: a frame's index (Self-Forcing, LongLive; below rope_max_seq_len) |
    #                                 ring: the window's frames numbered from its first (sinks before it; any length)

    @property
    def clip_frames(self) -> int:
        """Frames per training clip: the longest sequence the model ever attends over."""
        return self.max_context_frames + self.chunk_frames

    @property
    def frame_width(self) -> int:
        """Width of a frame in the model's space (``width``, or ``resolution`` for square frames)."""
        return self.width or self.resolution

    @property
    def layout(self) -> ChunkLayout:
        """How this model's frames split into chunks."""
        return ChunkLayout(self.chunk_frames, self.first_frame_chunk)

    @property
    def rope_period(self) -> int:
        """Period of the temporal rotary phase; exceeds every query-key distance in the window."""
        return self.clip_frames + self.chunk_frames


MODEL_CONFIGS: dict[str, dict] = {
    "tiny": {},
    "demo": dict(resolution=32, patch_size=4, hidden_size=128, depth=4, num_heads=4, num_classes=3, chunk_frames=4,
                 max_context_frames=9),
    # the shipped text model (checkpoints/text-demo.safetensors): the demo's sizes, prompts through WordLlama
    "text-demo": dict(resolution=32, patch_size=4, hidden_size=128, depth=4, num_heads=4, chunk_frames=4,
                      max_context_frames=9, text_encoder="wordllama", text_dim=256, text_tokens=24),
    "small": dict(resolution=64, patch_size=4, hidden_size=384, depth=12, num_heads=6, chunk_frames=4,
                  max_context_frames=25, prefix_frames=3),
    "base": dict(resolution=128, patch_size=4, hidden_size=768, depth=12, num_heads=12, chunk_frames=8,
                 max_context_frames=25, prefix_frames=3),
    # Ca2-VDM's published scale (CausalSTDiT2-XL/2): SD-VAE latents of 256x256 frames (4 x 32 x 32), 256 tokens a frame
    "ca2vdm-xl": dict(in_channels=4, resolution=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16,
                      chunk_frames=8, max_context_frames=25, prefix_frames=3),
    # Wan 2.1 T2V 1.3B (arch wan): latents of 480x832 frames (16 x 60 x 104, 1560 tokens a frame), UMT5-XXL prompts of
    # 512 tokens; chunks of 3 latent frames over a 21-frame window as Self-Forcing samples it (absolute positions)
    "wan-1.3b": dict(arch="wan", in_channels=16, resolution=60, width=104, patch_size=2, hidden_size=1536, depth=30,
                     num_heads=12, ffn_dim=8960, text_encoder="umt5-xxl", text_dim=4096, text_tokens=512,
                     chunk_frames=3, first_frame_chunk=False, max_context_frames=18, positions="absolute"),
    # the Wan-architecture demo (checkpoints/wan-shapes.safetensors): Wan's blocks at the text demo's scale on 32x32
    # pixels (patch 4: 64 tokens a frame), WordLlama prompts, chunks of 4 after a first frame, 9 frames of context
    "wan-shapes": dict(arch="wan", resolution=32, patch_size=4, hidden_size=128, depth=4, num_heads=4, ffn_dim=512,
                       rope_max_seq_len=64, text_encoder="wordllama", text_dim=256, text_tokens=24, chunk_frames=4,
                       max_context_frames=9),
    # the conformance suite's tiny Wan (diffusers' own test sizes: 2 heads x 12, 2 layers, FFN 32), on 16x16 pixels
    "wan-tiny": dict(arch="wan", resolution=16, patch_size=2, hidden_size=24, depth=2, num_heads=2, ffn_dim=32,
                     rope_max_seq_len=32, text_encoder="wordllama", text_dim=256, text_tokens=8, chunk_frames=2,
                     max_context_frames=5),
}


_POSITIVE_MODEL_FIELDS = ("in_channels", "resolution", "patch_size", "hidden_size", "depth", "num_heads",
                          "chunk_frames", "max_context_frames")


def model_config(name: str, **overrides) -> ModelConfig:
    """A registered model configuration with optional field overrides."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model name {name!r}; registered: {sorted(MODEL_CONFIGS)}")
    return validate_model(ModelConfig(**{**MODEL_CONFIGS[name], **overrides, "name": name}))


def validate_model(m: ModelConfig) -> ModelConfig:
    """Check that the sizes fit together; raise ConfigError naming the field and the fix."""
    problems = [f"model.{k} must be >= 1, got {getattr(m, k)}" for k in _POSITIVE_MODEL_FIELDS if getattr(m, k) < 1]
    if m.num_classes < 0:
        problems.append(f"model.num_classes must be >= 0 (0 = unconditional), got {m.num_classes}")
    if m.mlp_ratio <= 0:
        problems.append(f"model.mlp_ratio must be > 0, got {m.mlp_ratio}")
    if problems:  # the size checks below would divide by zero
        raise ConfigError("invalid model config: " + "; ".join(problems))
    if m.resolution % m.patch_size:
        problems.append(f"model.resolution={m.resolution} is not divisible by model.patch_size={m.patch_size}")
    if m.hidden_size % m.num_heads or (m.hidden_size // m.num_heads) % 2:
        problems.append(f"model.hidden_size={m.hidden_size} must split into model.num_heads={m.num_heads} heads of "
                        "an even size")
    if m.max_context_frames < m.chunk_frames:
        problems.append(f"model.max_context_frames={m.max_context_frames} is shorter than a chunk "
                        f"(model.chunk_frames={m.chunk_frames}); the window must hold at least one chunk")
    elif not m.layout.is_boundary(m.max_context_frames):
        layout = "1 + k * chunk_frames" if m.first_frame_chunk else "k * chunk_frames"
        problems.append(f"model.max_context_frames={m.max_context_frames} must be {layout} so that training clips "
                        "end on a chunk boundary")
    if not 0 <= m.prefix_frames <= m.max_context_frames:
        problems.append(f"model.prefix_frames={m.prefix_frames} must be in [0, max_context_frames]")
    if m.sink_frames and not (0 < m.sink_frames < m.max_context_frames and m.layout.is_boundary(m.sink_frames)):
        layout = "1 + n * chunk_frames" if m.first_frame_chunk else "n * chunk_frames"
        problems.append(f"model.sink_frames={m.sink_frames} must be 0 (off) or whole chunks, {layout}, below "
                        f"model.max_context_frames={m.max_context_frames}")
    if m.text_encoder != "none" and m.num_classes:
        problems.append(f"model.text_encoder={m.text_encoder} and model.num_classes={m.num_classes}: a model is "
                        "conditioned on prompts or on labels, not both; set one of them to none / 0")
    if not 1 <= m.text_tokens <= MAX_TEXT_TOKENS or m.text_dim < 0:
        problems.append(f"model.text_tokens must be in 1 .. {MAX_TEXT_TOKENS} and model.text_dim >= 0, got "
                        f"{m.text_tokens} and {m.text_dim}")
    if m.arch not in ARCHS:
        problems.append(f"model.arch={m.arch!r} must be one of {', '.join(ARCHS)} (the registered model families)")
    problems += _wan_problems(m) if m.arch == "wan" else [
        f"model.{k}={getattr(m, k)!r} applies to model.arch=wan only; leave it out"
        for k in WAN_FIELDS if getattr(m, k) != _DEFAULTS[k]]
    if m.attention_backend not in BACKENDS:
        problems.append(f"model.attention_backend={m.attention_backend!r} must be one of {', '.join(BACKENDS)}")
    if problems:
        raise ConfigError("invalid model config: " + "; ".join(problems))
    return m


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def _wan_problems(m: ModelConfig) -> list[str]:
    """What a Wan model's config gets wrong: its own sizes, and the DiT's settings it has no use for."""
    problems = []
    if m.text_encoder == "none":
        problems.append("model.arch=wan reads prompts: set model.text_encoder (a folder of its text encoder, or "
                        "wordllama) and model.text_dim")
    if m.ffn_dim < 1 or m.freq_dim < 2 or m.freq_dim % 2 or m.width < 0 or not 0 < m.eps < 1:
        problems.append(f"model.ffn_dim={m.ffn_dim} must be >= 1, model.freq_dim={m.freq_dim} even, model.width="
                        f"{m.width} >= 0 (0: square frames) and model.eps={m.eps} in (0, 1)")
    if m.frame_width % m.patch_size:
        problems.append(f"model.width={m.width} is not divisible by model.patch_size={m.patch_size}")
    if m.positions not in POSITIONS:
        problems.append(f"model.positions={m.positions!r} must be one of {', '.join(POSITIONS)}")
    if m.rope_max_seq_len < m.clip_frames + m.chunk_frames:
        problems.append(f"model.rope_max_seq_len={m.rope_max_seq_len} must cover a window and a chunk "
                        f"({m.clip_frames + m.chunk_frames} frames)")
    if m.num_classes or m.prefix_frames:
        problems.append("model.arch=wan takes prompts, not labels, and no prefix-enhanced spatial attention: set "
                        "model.num_classes=0 and model.prefix_frames=0")
    return problems


def to_dict(model: ModelConfig) -> dict:
    """Plain dict of a model config (stored in checkpoints; other config sections as they are); the text fields only
    for a text model, the family and Wan's fields only when it is not the DiT, so a DiT label model records what it
    recorded before either existed."""
    recorded = dataclasses.asdict(model)
    if isinstance(model, ModelConfig):
        if model.text_encoder == "none":
            for name in TEXT_FIELDS:
                recorded.pop(name)
        if model.arch == "dit":
            for name in ("arch", *WAN_FIELDS):
                recorded.pop(name)
    return recorded

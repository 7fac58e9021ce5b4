"""Our step caches against diffusers' own cache hooks (FirstBlockCache, MagCache, TaylorSeer) on the same causal Wan,
inside our chunk loop (cache mode kv: a commit pass after every chunk writes the K/V the next chunks read).

    python scripts/bench/wan_step_caches.py              # a small random Wan, 6 chunks of 8 steps, guided

diffusers' hooks are applied to the model as their documentation shows (``model.enable_cache(config)``, calls inside
``model.cache_context(name)``: one context per chunk, so their state starts afresh with every chunk, which is more than
a plain pipeline loop gives them); ours are chosen by the sampler's ``step_cache`` setting. For each: the share of
stack passes whose last block's self-attention ran, the commit passes in which it did not (its K/V never written:
every later chunk reads a stale cache), and the video's largest and mean difference from the same seed without a step
cache. Random weights: the differences say whether a method keeps the cache whole, not how a trained model looks.
Writes wan_step_caches.json.
"""
import contextlib
from pathlib import Path

import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

from ca2vdm.cli.args import new_parser
from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.models.hooks import ModelHook
from ca2vdm.models.registry import build_model, tiny_config
from ca2vdm.sampling.pipeline import LongVideoPipeline

STEPS, CHUNKS = 8, 6
OURS = {"ours: taylorseer (interval 2)": ("taylorseer", {"interval": 2}),
        "ours: magcache (threshold 0.5, flat ratios 0.98)": ("magcache", {"threshold": 0.5}),
        "ours: chunkcache (threshold 0.3)": ("chunkcache", {"threshold": 0.3})}
# (name, config): each runs twice, its state fresh per chunk (a cache context per chunk) and in one context for the
# whole video (as a plain pipeline would call it). TaylorSeer's default patterns ("^blocks.*attn", full match) match no
# module of Wan (attn1, attn2): its Wan modules are named here; its lite mode predicts proj_out and skips every block.
THEIRS = [("FirstBlockCache (threshold 0.05)", FirstBlockCacheConfig(threshold=0.05)),
          ("FirstBlockCache (threshold 0.3)", FirstBlockCacheConfig(threshold=0.3)),
          ("MagCache (threshold 0.5, flat ratios 0.98)", MagCacheConfig(
              threshold=0.5, mag_ratios=[0.98] * STEPS, num_inference_steps=STEPS)),
          ("TaylorSeer (interval 2, order 1, attn1 and attn2)", TaylorSeerCacheConfig(
              cache_interval=2, disable_cache_before_step=1, max_order=1, taylor_factors_dtype=torch.float32,
              cache_identifiers=[r"blocks\.\d+\.attn[12]"])),
          ("TaylorSeer lite (interval 2, order 1)", TaylorSeerCacheConfig(
              cache_interval=2, disable_cache_before_step=1, max_order=1, taylor_factors_dtype=torch.float32,
              use_lite_mode=True))]


class Count(ModelHook):
    """Counts calls of the last block's self-attention processor (its K/V reach the cache only when it runs)."""

    def __init__(self):
        self.calls = 0

    def forward(self, call, *args):
        self.calls += 1
        return call(*args)


def run(model, prompt, settings: dict, chunks: int, contexts: str | None = None) -> tuple[torch.Tensor, dict]:
    """The video, and per pass (denoising / commit) whether the last block's self-attention ran; with diffusers'
    hooks, ``contexts`` "chunk" runs every chunk in a cache context of its own (fresh hook state per chunk), "video"
    the whole video in one."""
    count, passes = Count(), []
    hooks = list(model.attention_hooks())[-1][1]
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: passes.append([kwargs.get("commit", False),
                                                                                     count.calls]),
                                             with_kwargs=True)
    pipe = LongVideoPipeline(model, steps=STEPS, cfg_scale=3.0, shift=5.0, cond_noise=0.0, pixel_space=False,
                             calibration={"magcache_ratios": [0.98] * STEPS}, **settings)
    video = model.cache_context("video") if contexts == "video" else contextlib.nullcontext()
    with hooks.attached("count", count), video:
        state = pipe.start(prompt=prompt, seed=0)
        frames = []
        for c in range(chunks):
            with model.cache_context(f"chunk {c}") if contexts == "chunk" else contextlib.nullcontext():
                frames.append(pipe.next_chunk(state).frames)
    handle.remove()
    calls = [p[1] for p in passes] + [count.calls]
    ran = [(commit, calls[i + 1] > calls[i]) for i, (commit, _) in enumerate(passes)]
    return torch.cat(frames, 2), {"passes": len(ran), "last_block_ran": sum(r for _, r in ran),
                                  "commits": sum(c for c, _ in ran),
                                  "commits_skipped": sum(c and not r for c, r in ran)}


def main() -> None:
    p = new_parser(__doc__)
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for the JSON")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "wan_step_caches.json")
    torch.manual_seed(0)
    model = build_model(tiny_config("wan", depth=4, chunk_frames=3, first_frame_chunk=False, max_context_frames=6))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    prompt = TextEmbeddings(torch.randn(1, 8, 256, generator=gen), torch.ones(1, 8, dtype=torch.bool))
    reference, base = run(model, prompt, {}, CHUNKS)
    rows = {"none": {**base, "max_diff": 0.0, "mean_diff": 0.0}}
    methods = [(name, {"step_cache": kind, "step_cache_options": opts}, None, None)
               for name, (kind, opts) in OURS.items()]
    methods += [(f"diffusers: {name}, state per {contexts}", {}, config, contexts)
                for name, config in THEIRS for contexts in ("chunk", "video")]
    for name, settings, config, contexts in methods:
        if config is not None:
            model.enable_cache(config)
        video, stats = run(model, prompt, settings, CHUNKS, contexts)
        if config is not None:
            model.disable_cache()
        diff = (video - reference).abs()
        rows[name] = {**stats, "max_diff": diff.max().item(), "mean_diff": diff.mean().item()}
        r = rows[name]
        print(f"{name:72s} last block ran {r['last_block_ran']:3d}/{r['passes']:3d} passes, commits skipped "
              f"{r['commits_skipped']}/{r['commits']}, max diff {r['max_diff']:.3f}, mean diff {r['mean_diff']:.4f}",
              flush=True)
    write_results(out, {"model": "wan-tiny, 4 blocks, chunks of 3, 6 frames of context", "steps": STEPS,
                        "chunks": CHUNKS, "cfg_scale": 3.0, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

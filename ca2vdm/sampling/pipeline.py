"""The autoregressive loop: generate a long video chunk by chunk, conditioning on what is in the window.

Three ways to condition a chunk (``SamplerSettings.cache``), all sampling the same noise for the same seed:

* ``kv``: Ca2-VDM. Conditioning K/V live in one :class:`~ca2vdm.models.kv_cache.KVCache` (guidance rows batched),
  computed once per chunk by a commit pass and shared by every denoising step of the following chunks. Cost per chunk
  is constant.
* ``none``: the usual autoregressive baseline; the last ``max_context_frames`` frames (with ``model.sink_frames`` =
  k: the first k frames and the last ``max_context_frames - k``, at contiguous positions as in the KV cache) are
  re-run through the model with the chunk at every denoising step. Equal to ``kv`` while the window is not full.
* ``full``: re-run all previous frames at every step (extendable context; quadratic total cost, a benchmark
  baseline). Equal to ``kv`` while the window is not full; past the window it attends beyond the trained range.

Labels and prompts (:mod:`ca2vdm.sampling.conditioning`) can change between chunks (:meth:`LongVideoPipeline.switch`:
``recache``, LongLive's KV re-cache, the default; ``keep``; ``reset``, a cut; ``flush``, infinity-RoPE's). Attention
sinks are the model's (``model.sink_frames``) unless the settings choose others (``sink_frames``, ``sink_rope``).

A pipeline speaks to its model through :class:`~ca2vdm.models.base.CausalVideoModel` only, and never changes it (its
mode, its weights, its hooks): a step-caching policy (and the counter of the passes that ran) is attached only while a
chunk is sampled, and sampling runs under ``torch.no_grad``. One way to make a pipeline for a checkpoint:
:meth:`LongVideoPipeline.for_checkpoint` (its recorded settings, calibrations and space, with overrides); a step cache
is chosen by the settings (``step_cache`` and its options), or given as a policy object by experts. Chunks follow the
model's :class:`~ca2vdm.config.ChunkLayout`: the first frame alone, then chunks of ``chunk_frames``, each beginning
where the previous one ended.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.config import SamplerSettings
from ca2vdm.config.conditioning import check_switch_request
from ca2vdm.config.sampler import sampler_sinks
from ca2vdm.encoders.text import TextEncoder
from ca2vdm.errors import SettingError, opt
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.sampling.conditioning import Conditioning, Prompt, check_kind, kind_of, label_rows, text_rows
from ca2vdm.sampling.evaluations import COUNTER_HOOK, EvalCounter
from ca2vdm.sampling.flow import Denoiser, guidance, perturb, sample, timesteps
from ca2vdm.sampling.step_cache import StepCache, build_step_cache

# The sampler's state (noise, the chunk being denoised, finished frames) stays float32 at every model precision: a
# seed draws the same noise in fp32, bf16 and fp16, and the Euler steps add in float32. The model casts its input to
# its weights' dtype; the context cache is in the weights' dtype.
STATE_DTYPE = torch.float32


@dataclass
class ChunkResult:
    """One generated chunk and what it cost."""
    frames: torch.Tensor        # (B, C, L, H, W) in the model's space: pixels in [-1, 1], or latents
    index: int                  # chunk number, 0-based
    model_evals: int            # block-stack evaluations that ran while denoising (per guidance branch; counted)
    skipped_evals: int = 0      # evaluations a step-caching policy skipped


def _randn(shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator], device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise of ``shape`` (B, ...); with one generator per video, row i from generator i alone, so a video's
    noise does not depend on the others in its batch."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])


def _repeat_rows(video: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, ...) -> (groups * B, ...): the same frames for every guidance branch (no copy for one branch)."""
    return video if groups == 1 else video.repeat(groups, *([1] * (video.ndim - 1)))


@dataclass
class GenerationState:
    """Everything one video's generation carries from chunk to chunk."""
    conditioning: Conditioning
    generator: torch.Generator | list[torch.Generator]  # one for the batch, or one per video (a list of seeds)
    batch: int
    frames: int = 0             # frames conditioned on so far (given first frames included)
    chunks: int = 0             # chunks generated so far


class LongVideoPipeline:
    """Chunk-by-chunk generation with a causal video DiT, sampled as :class:`~ca2vdm.config.SamplerSettings` say."""

    def __init__(self, model: CausalVideoModel, settings: SamplerSettings | None = None, *,
                 policy: StepCache | None = None, calibration: Mapping[str, list[float]] | None = None,
                 pixel_space: bool = True, text_encoder: TextEncoder | None = None,
                 forward: Callable[..., torch.Tensor] | None = None, **overrides):
        """``settings``: the sampler's (default: the library's), with ``overrides`` (keywords named as its fields; None
        ignored). The step cache is built from ``settings.step_cache`` and its options with the checkpoint's
        ``calibration``, unless a policy object (an expert's: a recorder, a policy made by hand) is given as
        ``policy``. ``pixel_space``: the model works on pixels, so sampled chunks are clamped to [-1, 1]; a latent
        model's chunks are not clamped (unit-variance latents go well beyond 1; the codec clamps the decoded pixels).
        ``text_encoder`` reads a text model's prompts (:func:`ca2vdm.encoders.text.build_text_encoder`; encoded prompts
        need none). ``forward``: what runs the model's passes (default: the model; training's rollouts pass its
        distributed wrapper, whose forward synchronises gradients)."""
        self.model = model
        self.text_encoder = text_encoder
        self.forward = model if forward is None else forward
        self.settings = (settings or SamplerSettings()).replace(**overrides)
        self.calibration = calibration or {}
        self.policy = policy if policy is not None else build_step_cache(
            self.settings.step_cache, self.settings.step_cache_options, self.calibration)
        self.pixel_space = pixel_space
        self.sinks = sampler_sinks(self.settings, model.cfg)  # attention sinks: the settings', else the model's

    @classmethod
    def for_checkpoint(cls, model: CausalVideoModel, metadata: CheckpointMetadata, *,
                       text_encoder: TextEncoder | None = None, policy: StepCache | None = None,
                       forward: Callable[..., torch.Tensor] | None = None, **settings) -> LongVideoPipeline:
        """A pipeline with the sampler settings a checkpoint recorded, its calibrations and its space (pixels or
        latents); ``settings`` override the recorded ones by name (None ignored); the other keywords as the
        constructor's."""
        return cls(model, metadata.sampler, policy=policy, calibration=metadata.calibration,
                   pixel_space=metadata.pixel_space, text_encoder=text_encoder, forward=forward, **settings)

    def with_settings(self, **changes) -> LongVideoPipeline:
        """A pipeline on the same model, text encoder, calibrations and space with these settings changed (None
        ignored; a new ``step_cache`` drops the old one's options): one model serves many such pipelines."""
        return type(self)(self.model, self.settings.replace(**changes), calibration=self.calibration,
                          pixel_space=self.pixel_space, text_encoder=self.text_encoder, forward=self.forward)

    def guided(self, label: int | torch.Tensor | None, prompt: Prompt = None) -> bool:
        """Guidance runs a second (unconditional) branch only when there is a label or prompt to guide towards."""
        given = label is not None if self.model.null_label is not None else (
            prompt is not None and self.model.text_conditional)
        return self.settings.cfg_scale != 1.0 and given

    def _conditioning(self, batch: int, label: int | torch.Tensor | None, prompt: Prompt,
                      device: torch.device) -> Conditioning:
        check_kind(self.model, label, prompt)
        groups = 2 if self.guided(label, prompt) else 1
        labels = label_rows(self.model, label, batch, groups, device)
        text = text_rows(self.model, self.text_encoder, prompt, batch, groups)
        cache = self.model.new_cache(groups * batch, device, sink_frames=self.sinks,
                                     sink_rope=self.settings.sink_rope) if self.settings.cache == "kv" else None
        return Conditioning(labels, groups, cache, text)

    def _velocity(self, cond: Conditioning, x: torch.Tensor, t: float | torch.Tensor, frames_before: int,
                  groups: int) -> torch.Tensor:
        """Velocity of the first ``groups`` row groups (x: (B, C, L, H, W), repeated per group) at time ``t``: one
        for every row, or (B,) one per video (training's windows)."""
        rows = groups * x.shape[0]
        t_rows = _repeat_rows(torch.as_tensor(t, device=x.device, dtype=torch.float32).expand(x.shape[0]), groups)
        x, t_rows = _repeat_rows(x, groups), t_rows[:, None]  # (G * B, C, L, H, W), (G * B, 1)
        labels = None if cond.labels is None else cond.labels[:rows]
        text = None if cond.text is None else cond.text.rows(rows)
        L = x.shape[2]
        if cond.cache is not None:
            cache = cond.cache if groups == cond.groups else cond.cache.rows(rows)
            return self.forward(x, t_rows.expand(rows, L), labels, cache=cache, text=text).to(STATE_DTYPE)
        ctx = torch.cat([_repeat_rows(f, groups) for f in cond.sinks + cond.context] + [x], dim=2)
        n = ctx.shape[2] - L
        t_frames = torch.zeros(rows, n + L, device=x.device)
        t_frames[:, n:] = t_rows
        out = self.forward(ctx, t_frames, labels, frame_offset=frames_before - n, num_cond_frames=n, text=text)
        return out[:, :, n:].to(STATE_DTYPE)

    @torch.no_grad()
    def start(self, *, batch: int = 1, label: int | torch.Tensor | None = None, seed: int | list[int] = 0,
              first_frames: torch.Tensor | None = None, frames_before: int = 0,
              prompt: Prompt = None) -> GenerationState:
        """Set up a video: labels or prompts (both guidance branches), the KV cache, the noise generator, the first
        frames; the step-caching policy forgets the previous video.

        label: a label model's label (None: the null label); prompt: a text model's prompt, one for the batch or one
        per video, or already encoded (:class:`~ca2vdm.encoders.text.TextEmbeddings`); None: the empty prompt.

        seed: one seed for the batch, or a list of ``batch`` seeds: then video i draws all its noise from its own
        generator, and equals (within float rounding) the video generated alone with seed ``seed[i]``.

        first_frames: optional (B, C, T0, H, W) video in [-1, 1] to continue (an image is T0 = 1); it is committed
        as conditioning and not yielded. frames_before: the given video had this many earlier frames, left out
        because they can no longer influence what follows (``generation.given.conditioning_start``). They keep their
        place (chunk alignment, the commit noise they would have drawn) without running the model. It must be a
        chunk boundary, and 0 in cache mode ``full``. The KV cache then numbers the kept frames from 0: with the
        periodic temporal RoPE only relative positions matter, so attention is the same up to float rounding. With
        ``model.sink_frames`` = k the sinks are never left out: first_frames is then the video's first k frames
        followed by its frames from ``frames_before`` (>= k) on.
        """
        layout = self.model.cfg.layout
        if frames_before and (first_frames is None or self.settings.cache == "full"
                              or not layout.is_boundary(frames_before) or frames_before < self.sinks):
            raise ValueError(f"frames_before={frames_before} needs first_frames, a chunk boundary, at least "
                             f"sink_frames={self.sinks} and a cache mode other than full")
        device, dtype = self.model.device, STATE_DTYPE
        if not isinstance(seed, int) and len(seed) != batch:
            raise ValueError(f"got {len(seed)} seeds for a batch of {batch} videos; give one seed or one per video")
        generator = (torch.Generator(device=device).manual_seed(seed) if isinstance(seed, int)
                     else [torch.Generator(device=device).manual_seed(s) for s in seed])
        state = GenerationState(self._conditioning(batch, label, prompt, device), generator, batch)
        if self.policy is not None:
            self.policy.reset()
        if first_frames is not None:
            first_frames, shape = first_frames.to(device, dtype), first_frames.shape
            sinks = self.sinks if frames_before else 0
            for part in first_frames[:, :, :sinks].split(layout.split(0, sinks), dim=2):
                self.commit(state, part)
            for n in layout.split(sinks, frames_before - sinks):  # the noise their commits would have drawn
                _randn((*shape[:2], n, *shape[3:]), state.generator, device, dtype)
            state.frames = frames_before
            for part in first_frames[:, :, sinks:].split(layout.split(frames_before, shape[2] - sinks), dim=2):
                self.commit(state, part)
        return state

    @torch.no_grad()
    def next_chunk(self, state: GenerationState, on_step: Callable[[int], None] | None = None,
                   commit_frames: torch.Tensor | None = None, start_from: torch.Tensor | None = None,
                   start_t: float = 1.0, exit_step: int | None = None, grad: bool = False) -> ChunkResult:
        """Denoise the next chunk, append it to the conditioning, return it. ``on_step(i)`` follows each step.

        ``commit_frames`` conditions the following chunks on these frames instead of the sampled ones (teacher
        forcing: evaluations that compare samplers on a shared context). ``start_from`` (B, C, L, H, W): denoise
        these frames perturbed to ``start_t`` instead of pure noise (SDEdit; the self-rollout of training).
        ``exit_step`` k (a student's rollout in training, Self-Forcing): stop at step k and return the prediction of
        the clean chunk made there (unclamped); with ``grad`` that step carries gradients (the steps before it never
        do); the chunk is committed detached (clamped in pixel space).
        """
        settings, policy = self.settings, self.policy
        noise = self.chunk_noise(state)
        if start_from is not None:
            noise = perturb(start_from.to(noise.dtype), noise, start_t)
        denoise = self.denoiser(state, on_step)
        counter = EvalCounter(state.batch)
        hooks = self.model.step_cache_hooks
        with policy.attached(self.model) if policy is not None else contextlib.nullcontext(), \
                hooks.attached(COUNTER_HOOK, counter):
            if policy is not None:
                policy.begin_chunk()
            if exit_step is None:
                start = start_t if start_from is not None else 1.0
                x0 = sample(denoise, noise, settings.steps, times=[start * t for t in self.schedule()])
            else:
                x0 = self._exit_sample(denoise, noise, exit_step, grad)
        if exit_step is None:
            x0 = self._finished(x0, state.chunks)
        committed = x0 if exit_step is None else x0.detach().clamp(-1, 1) if self.pixel_space else x0.detach()
        self.commit(state, committed if commit_frames is None else commit_frames)
        state.chunks += 1
        return ChunkResult(x0, state.chunks - 1, counter.count, 0 if policy is None else policy.skipped)

    def _exit_sample(self, denoise: Denoiser, noise: torch.Tensor, exit_step: int, grad: bool) -> torch.Tensor:
        """The clean-chunk prediction at step ``exit_step`` (``x_t - t v``), that step with gradients if ``grad``."""
        times = self.schedule()
        if not 0 <= exit_step < len(times) - 1:
            raise ValueError(f"exit step {exit_step} is not one of the {len(times) - 1} steps")

        def step(x: torch.Tensor, t: float, i: int) -> torch.Tensor:
            with torch.set_grad_enabled(grad and i == exit_step):
                return denoise(x, t, i)

        with torch.set_grad_enabled(grad):
            return sample(step, noise, exit_step + 1, times=[*times[:exit_step + 1], 0.0])  # (B, C, L, H, W)

    def _finished(self, x0: torch.Tensor, index: int) -> torch.Tensor:
        """A sampled chunk checked finite, clamped to [-1, 1] in pixel space."""
        if not torch.isfinite(x0).all():  # settings and given frames are checked finite before: the model's doing
            fp16 = self.model.dtype == torch.float16
            overflow = " or float16 overflowed (try dtype bf16 or fp32)" if fp16 else ""
            raise FloatingPointError(f"non-finite values while sampling chunk {index} from finite settings "
                                     f"and frames: the weights may be damaged (check the checkpoint){overflow}")
        return x0.clamp(-1, 1) if self.pixel_space else x0

    def generate(self, num_chunks: int, **start_kwargs) -> Iterator[ChunkResult]:
        """Yield ``num_chunks`` chunks, each as soon as it is denoised (keyword arguments as :meth:`start`).

        Without ``first_frames`` and with ``first_frame_chunk``, chunk 0 is the single first frame.
        """
        if num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
        state = self.start(**start_kwargs)
        for _ in range(num_chunks):
            yield self.next_chunk(state)

    def schedule(self) -> list[float]:
        """The denoising times of a chunk, ``steps + 1`` from 1 down to 0."""
        return timesteps(self.settings.steps, self.settings.shift)

    def chunk_noise(self, state: GenerationState) -> torch.Tensor:
        """The next chunk's starting noise (B, C, L, H, W), drawn from the video's generator(s)."""
        channels, height, width = self.model.frame_shape
        shape = (state.batch, channels, self.model.cfg.layout.next_length(state.frames), height, width)
        return _randn(shape, state.generator, self.model.device, STATE_DTYPE)

    def denoiser(self, state: GenerationState, on_step: Callable[[int], None] | None = None) -> Denoiser:
        """The velocity of the next chunk's denoising steps, conditioned on the cache (guided as the settings say);
        ``on_step(i)`` follows each step. :meth:`next_chunk` samples with it; training's rollouts and the teacher's
        recorded trajectories run their own steps with it, then :meth:`commit`."""
        frames_before = state.frames

        def denoise(x: torch.Tensor, t: float, i: int) -> torch.Tensor:
            v = self._guided_velocity(state.conditioning, x, t, frames_before, i)
            if on_step is not None:
                on_step(i)
            return v
        return denoise

    @torch.no_grad()
    def commit(self, state: GenerationState, frames: torch.Tensor, perturbed: bool = False) -> None:
        """Perturb finished frames (prefix perturbation) and append them to the conditioning of every row; the
        window's frames are kept as committed (a switch re-caches them). ``perturbed``: the frames are already as
        committed (another model's window replayed in training): no noise is drawn."""
        if not perturbed:
            frames = perturb(frames, _randn(frames.shape, state.generator, frames.device, frames.dtype),
                             self.settings.cond_noise)
        cond, cfg = state.conditioning, self.model.cfg
        if cond.cache is not None:
            self._commit_pass(cond, frames)
        if self.settings.cache != "full" and state.frames < self.sinks:
            cond.sinks.append(frames)
        else:
            cond.context.append(frames)
            if self.settings.cache != "full":
                cond.context[:] = [torch.cat(cond.context, dim=2)[:, :, -(cfg.max_context_frames - self.sinks):]]
        state.frames += frames.shape[2]

    def _commit_pass(self, cond: Conditioning, frames: torch.Tensor) -> None:
        """Run committed frames (B, C, L, H, W) once at t = 0 in every row: their K/V join the cache."""
        rows, L = _repeat_rows(frames, cond.groups), frames.shape[2]
        self.forward(rows, torch.zeros(rows.shape[0], L, device=frames.device), cond.labels, cache=cond.cache,
                     commit=True, text=cond.text)
        cond.cache.commit(L)

    @torch.no_grad()
    def switch(self, state: GenerationState, *, label: int | None = None, prompt: Prompt = None,
               mode: str = "recache") -> None:
        """Condition the chunks after this point on ``label`` (a label model) or ``prompt`` (a text model), the same
        for every video of the batch. ``mode``: ``recache`` runs the window's frames once more, as committed, under
        the new condition and writes their K/V back into the cache (one commit pass over the window; sinks too);
        ``keep`` keeps the frames' K/V made under the old condition; ``reset`` drops the window (no context);
        ``flush`` keeps the sinks and the last frame only, re-cached (infinity-RoPE's KV flush). In cache modes none
        and full the window is recomputed at every step anyway: ``recache`` changes nothing more and ``keep`` is
        refused. Guidance stays as it was decided at :meth:`start`."""
        check_switch_request(kind_of(self.model), self.model.cfg.num_classes, label, prompt, mode)
        self.check_switch_mode(mode)
        cond, device = state.conditioning, self.model.device
        if label is not None:
            cond.labels = label_rows(self.model, label, state.batch, cond.groups, device)
        else:
            cond.text = text_rows(self.model, self.text_encoder, prompt, state.batch, cond.groups)
        if mode == "reset":
            cond.sinks.clear()
            cond.context.clear()
        if mode == "flush" and cond.context:  # the sinks and the last frame stay, re-cached (infinity-RoPE's KV flush)
            cond.context[:] = [torch.cat(cond.context, dim=2)[:, :, -1:]]
        if mode != "keep":
            self._recache(cond)

    @torch.no_grad()
    def adopt_window(self, state: GenerationState, sinks: list[torch.Tensor], context: list[torch.Tensor],
                     frames: int) -> None:
        """Condition the next chunk on a window another model committed (training's teacher and critic read the
        student's: ``sinks`` and ``context`` (B, C, n, H, W) as committed, after ``frames`` frames of video),
        encoded once under this model and condition: the re-cache of a switch."""
        state.conditioning.sinks[:], state.conditioning.context[:] = sinks, context
        state.frames = frames
        self._recache(state.conditioning)

    def _recache(self, cond: Conditioning) -> None:
        """Write the window's frames, as committed, into the emptied cache under the current condition."""
        if cond.cache is None:
            return
        cond.cache.reset()
        if cond.sinks or cond.context:  # renumbered from 0: only distances count (RoPE)
            window = torch.cat(cond.sinks + cond.context, dim=2)  # (B, C, n, H, W) as committed (perturbed)
            for part in window.split(self.model.cfg.layout.split(0, window.shape[2]), dim=2):
                self._commit_pass(cond, part)

    def check_switch_mode(self, mode: str) -> None:
        """SettingError for a switch mode these settings cannot carry out (``keep`` outside cache mode kv, ``reset``
        with attention sinks in mode kv); called when a switch is scheduled, before any chunk."""
        if mode == "reset" and self.sinks and self.settings.cache == "kv":
            raise SettingError("switch_mode", mode, f"attention sinks (sink_frames={self.sinks}) keep the first "
                               "frames in the cache for good; switch with recache, keep or flush")
        if mode == "keep" and self.settings.cache != "kv":
            raise SettingError("switch_mode", mode, f"needs {opt('cache', 'kv')}: cache mode {self.settings.cache} "
                               "recomputes the window under the current condition at every step, so no K/V is kept")

    def _guided_velocity(self, cond: Conditioning, x: torch.Tensor, t: float, frames_before: int,
                         index: int) -> torch.Tensor:
        """One denoising step's velocity; guidance branches run batched, or as a step-caching policy decides."""
        policy, steps, scale = self.policy, self.settings.steps, self.settings.cfg_scale

        def velocity(groups: int, name: str) -> torch.Tensor:
            if policy is None:
                return self._velocity(cond, x, t, frames_before, groups)
            with policy.step(name, index, steps, branches=groups):
                return self._velocity(cond, x, t, frames_before, groups)

        if cond.groups == 1:
            return velocity(1, "cond")
        both = lambda: velocity(2, "cond+uncond").chunk(2)  # noqa: E731
        if policy is not None:
            with policy.step("cond+uncond", index, steps, branches=2):  # guide() decides for this step
                return policy.guide(both, lambda: velocity(1, "cond"), scale)
        return guidance(*both(), scale)

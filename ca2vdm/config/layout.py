"""How a video's frames split into chunks: the one rule every chunked computation follows.

Frame 0 is a chunk of its own when the model has a first-frame chunk (the image condition of image-to-video), and
every later chunk has ``chunk_frames`` frames; without a first-frame chunk all chunks have ``chunk_frames``. The
attention masks, the sampler, training clips, self-rollout, the validation of the window and sink sizes and the
evaluation scripts all ask a :class:`ChunkLayout` (``ModelConfig.layout``) instead of writing the rule out; how those
(model) frames map to pixel frames when a codec compresses time is :class:`TemporalCompression`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkLayout:
    """Frame 0 alone (``first_frame_chunk``), then chunks of ``chunk_frames``; chunk numbers and frame indices are
    absolute (frame 0 is the video's first frame)."""
    chunk_frames: int
    first_frame_chunk: bool = True

    def chunk_of(self, frame):
        """The chunk number of an absolute frame index (an int, or an integer tensor of them)."""
        L = self.chunk_frames
        return (frame + L - 1) // L if self.first_frame_chunk else frame // L

    def start_of(self, chunk: int) -> int:
        """The first frame of chunk ``chunk``."""
        if not self.first_frame_chunk:
            return chunk * self.chunk_frames
        return 0 if chunk == 0 else 1 + (chunk - 1) * self.chunk_frames

    def is_boundary(self, frame: int) -> bool:
        """Whether a chunk starts at ``frame`` (so ``frame`` frames are whole chunks)."""
        return self.start_of(self.chunk_of(frame)) == frame

    def floor(self, frame: int) -> int:
        """The first frame of the chunk that holds ``frame``."""
        return self.start_of(self.chunk_of(frame))

    def next_length(self, frames_before: int) -> int:
        """Frames of the chunk a sampler generates after ``frames_before`` frames: 1 for the first frame of a model
        with a first-frame chunk, else ``chunk_frames`` (a chunk begins where the previous one ended)."""
        return 1 if self.first_frame_chunk and frames_before == 0 else self.chunk_frames

    def split(self, start: int, count: int) -> list[int]:
        """Lengths of the successive chunks that frames ``start .. start + count - 1`` are committed in (each as
        :meth:`next_length`, the last one cut short)."""
        lengths = []
        while count > 0:
            lengths.append(min(self.next_length(start), count))
            start, count = start + lengths[-1], count - lengths[-1]
        return lengths

    def spans(self, first: int, count: int) -> list[tuple[int, int]]:
        """(start, stop) of each chunk among frames ``first .. first + count - 1`` by absolute chunk number, relative
        to ``first`` (the first and last may be partial chunks). Plain integers: no device sync."""
        spans: list[tuple[int, int]] = []
        for i in range(count):
            if spans and self.chunk_of(first + i) == self.chunk_of(first + spans[-1][0]):
                spans[-1] = (spans[-1][0], i + 1)
            else:
                spans.append((i, i + 1))
        return spans

    def clip_chunks(self, frames: int) -> list[tuple[int, int]]:
        """(first frame, length) of every chunk of a ``frames``-frame training clip that starts at frame 0."""
        chunks, start = [], 0
        for length in self.split(0, frames):
            chunks.append((start, length))
            start += length
        return chunks


@dataclass(frozen=True)
class TemporalCompression:
    """How a codec's frames (the model's) map to a video's pixel frames: the first latent frame holds one pixel frame
    and every later one ``frames_per_latent`` (AutoencoderKLWan: 1, then groups of 4). A per-frame codec has 1, so
    model frames are pixel frames. The writer, the API's chunks and a given video ask this rule (``codec.temporal``)."""
    frames_per_latent: int = 1

    def start_of(self, latent: int) -> int:
        """The first pixel frame of latent frame ``latent`` (also: the pixel frames of latent frames 0 .. latent-1)."""
        return 0 if latent == 0 else 1 + (latent - 1) * self.frames_per_latent

    def pixel_frames(self, start: int, stop: int) -> int:
        """How many pixel frames latent frames ``start .. stop - 1`` decode to."""
        return self.start_of(stop) - self.start_of(start)

    def latents_in(self, pixels: int) -> int:
        """How many whole latent frames the first ``pixels`` pixel frames of a video fill (frames of an unfinished
        group are not counted)."""
        return 0 if pixels <= 0 else 1 + (pixels - 1) // self.frames_per_latent

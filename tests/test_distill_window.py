"""Long rollouts in distillation (ca2vdm/training/distill_rollout.py, distill_window.py): the student's rollout is
inference up to its window, the teacher and the critic read exactly the window the student read (through their own
caches, as a re-cache), a switch inside a training rollout is inference's switch, and only the window carries a graph
(memory flat in the rollout's length)."""
import torch

from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training.distill_rollout import Condition, Plan, self_rollout
from ca2vdm.training.distill_window import replay, window_velocity
from ca2vdm.training.dmd import dmd_loss, flow_loss

from helpers import random_model

LABELS = Condition(label=torch.tensor([1, 3]))  # the second video unconditional (the null label)


def _inference_windows(pipe, chunks, condition, seed, switch=None):
    """The committed window (sinks + context) before each of ``chunks`` chunks of inference, and its chunks."""
    state = pipe.start(batch=2, seed=seed, **condition.kwargs())
    windows, frames = [], []
    for c in range(chunks):
        if switch is not None and c == switch[0]:
            pipe.switch(state, mode="recache", **switch[1].kwargs())
        cond = state.conditioning
        windows.append(torch.cat(cond.sinks + cond.context, dim=2) if cond.sinks or cond.context else None)
        frames.append(pipe.next_chunk(state).frames)
    return windows, frames


def test_the_rollout_is_inference_up_to_the_window_and_gradients_stay_in_it():
    """Chunks before the window: every step, no gradients (inference itself); window chunks: exit steps with
    gradients; with every exit at the last step the window is inference's chunks."""
    student = random_model(num_classes=3).train()
    calls = []
    student.register_forward_hook(lambda m, a, kw, out: calls.append(
        (torch.is_grad_enabled(), kw.get("commit", False))), with_kwargs=True)
    pipe = LongVideoPipeline(student, steps=3, cfg_scale=1.0)
    window = self_rollout(pipe, 2, LABELS, seed=4, plan=Plan(5, [2, 0, 1, 2], None))
    assert window.clip.shape == (2, 3, 8, 16, 16) and window.chunks == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert window.frames == 1 + 4 * 2 and window.clip.requires_grad
    prefix, rest = calls[:5 * 4], calls[5 * 4:]  # 5 chunks of 3 steps and a commit
    assert not any(grad for grad, _ in prefix) and sum(commit for _, commit in prefix) == 5
    assert [grad for grad, commit in rest if not commit] == [False, False, True, True, False, True, False, False, True]
    window.clip.sum().backward()
    assert all(p.grad is not None for p in student.parameters())
    with torch.no_grad():
        last = self_rollout(pipe, 2, LABELS, seed=4, plan=Plan(5, [2] * 4, None), grad=False)
    _, frames = _inference_windows(LongVideoPipeline(student.eval(), steps=3, cfg_scale=1.0), 9, LABELS, 4)
    assert torch.equal(last.clip.clamp(-1, 1), torch.cat(frames[5:], dim=2))


def test_the_teacher_reads_exactly_the_window_the_student_read():
    """Before every window chunk the teacher's window (its sinks and context, re-encoded into its cache, both guidance
    branches) is the student's rollout at that chunk, bit for bit."""
    student = random_model(num_classes=3)
    pipe = LongVideoPipeline(student, steps=2, cfg_scale=1.0)
    window = self_rollout(pipe, 2, LABELS, seed=1, plan=Plan(6, [1] * 4, None), grad=False)
    expected, _ = _inference_windows(pipe, 7, LABELS, 1)  # inference is the rollout up to the window
    teacher = LongVideoPipeline(random_model(seed=3, num_classes=3), steps=2, cfg_scale=2.0)
    seen = []
    for state, c in replay(teacher, window):
        cond = state.conditioning
        seen.append(torch.cat(cond.sinks + cond.context, dim=2))
        assert state.frames == window.frames + window.chunks[c][0]
        assert cond.cache.nbytes() > 0 and cond.groups == 2  # guided: both branches read the window
    assert torch.equal(seen[0], expected[6])
    for c in range(1, 4):  # the window before chunk c: the one before it, moved on by the chunks committed since
        before = torch.cat([seen[c - 1], window.committed[c - 1]], dim=2)[:, :, -seen[c].shape[2]:]
        assert torch.equal(seen[c], before)


def test_a_switch_inside_a_training_rollout_recaches_like_inference():
    """A rollout that switches its labels inside the window equals inference with pipeline.switch (recache) at that
    chunk; the teacher reads the chunks after it under the new condition, from the same re-cache, or (flush) from the
    last frame before the switch."""
    student = random_model(num_classes=3)
    pipe = LongVideoPipeline(student, steps=2, cfg_scale=1.0)
    new = Condition(label=torch.tensor([2, 0]))
    window = self_rollout(pipe, 2, LABELS, seed=2, plan=Plan(4, [1] * 4, 2), new_condition=new, grad=False)
    _, frames = _inference_windows(pipe, 8, LABELS, 2, switch=(6, new))
    assert torch.equal(window.clip.clamp(-1, 1), torch.cat(frames[4:], dim=2)) and window.switch == (2, new)
    teacher = LongVideoPipeline(random_model(seed=3, num_classes=3), steps=2, cfg_scale=2.0)
    for state, c in replay(teacher, window):
        labels = state.conditioning.labels[:2]
        assert torch.equal(labels, (new if c >= 2 else LABELS).label)
        if c == 2:  # the re-cache of the switch: the same cache a fresh teacher makes of that window
            fresh = teacher.start(batch=2, seed=0, **new.kwargs())
            cond = state.conditioning
            teacher.adopt_window(fresh, list(cond.sinks), list(cond.context), state.frames)
            a, b, n = fresh.conditioning.cache, cond.cache, cond.cache.frames_committed
            assert a.frames_committed == n and torch.equal(a.k[:, :, :n], b.k[:, :, :n])
            assert torch.equal(a.v[:, :, :n], b.v[:, :, :n])  # the occupied slots (the window: n < the ring)
    for state, c in replay(teacher, window, switch_mode="flush"):  # the teacher's target across a switch
        cond = state.conditioning
        if c == 2:  # the last frame before the switch alone, under the new labels
            assert torch.equal(torch.cat(cond.context, dim=2), window.committed[1][:, :, -1:]) and not cond.sinks
            assert torch.equal(cond.labels[:2], new.label) and cond.cache.frames_committed == 1


def _graph_bytes(rollout_chunks: int) -> int:
    """Bytes the autograd graph of one DMD student step holds (the storages of the tensors saved for backward), the
    window at the end of a rollout of ``rollout_chunks`` chunks."""
    student, teacher, critic = (random_model(seed=s, num_classes=3) for s in (0, 1, 2))
    student.train()
    saved = {}  # each storage once, however many views of it the graph saved
    keep = lambda x: (saved.setdefault(x.untyped_storage().data_ptr(), x.untyped_storage().nbytes()), x)[1]  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
        pipe = LongVideoPipeline(student, steps=2, cfg_scale=1.0)
        window = self_rollout(pipe, 2, LABELS, 0, Plan(rollout_chunks - 4, [1, 0, 1, 1], None))
        real = lambda noisy, t: window_velocity(LongVideoPipeline(teacher, steps=2, cfg_scale=2.0), window, noisy, t)  # noqa: E731,E501
        fake = lambda noisy, t: window_velocity(LongVideoPipeline(critic, steps=2, cfg_scale=1.0), window, noisy, t)  # noqa: E731,E501
        loss = dmd_loss(window.clip, real, fake, window.chunks) + flow_loss(window.clip, fake, window.chunks)
    loss.backward()
    return sum(saved.values())


def test_memory_of_a_rollout_step_does_not_grow_with_its_length():
    """The graph a 40-chunk rollout step keeps is the 10-chunk one's (the chunks before the window keep none)."""
    short, long = _graph_bytes(10), _graph_bytes(40)
    assert short > 0 and abs(long - short) <= 0.1 * short, (short, long)

"""Few-step distillation (ca2vdm/training/distill_task.py, dmd.py, distill_rollout.py, ode_pairs.py): the losses
against hand-computed references, gradients only through the exit steps of the window of a long rollout, memory flat
in the rollout's length, the critic/generator schedule, exact resume, two processes, the student as a normal
checkpoint, the recorded trajectories, a text teacher's student."""
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ca2vdm
from ca2vdm.checkpoints.weights import load_model, save_weights
from ca2vdm.config import load_config
from ca2vdm.config.training import DistillTrainingConfig
from ca2vdm.data.trajectories import TrajectoryDataset
from ca2vdm.errors import ConfigError, DataError
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training import loop
from ca2vdm.training.distill_rollout import Condition, Plan, rollout_plan, self_rollout
from ca2vdm.training.distill_task import DistillTask, generator_step
from ca2vdm.training.distill_window import window_velocity
from ca2vdm.training.dmd import dmd_gradient, dmd_loss, flow_loss, trajectory_loss
from ca2vdm.training.ode_pairs import write_pairs

from helpers import random_model, run_program

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = [(0, 1), (1, 2), (3, 2)]  # (start, length): a first frame and two chunks of 2, T = 5


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny 3-class teacher recording 4 guided steps (the student takes 2)."""
    model = random_model(num_classes=3)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_weights(path, model.state_dict(), model.cfg,
                 {"sampler": {"steps": 4, "shift": 1.0, "cfg_scale": 2.0, "cond_noise": 0.05}, "metadata_version": 2})
    return path


@pytest.fixture(scope="module")
def pairs(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "ode"
    write_pairs(str(teacher), out, videos=6, steps=2, batch=4, shard_size=4, progress=False)
    return out


def _config(teacher, pairs, out, *extra):
    overrides = [f"distill.teacher={teacher}", "distill.steps=2", "distill.ode_steps=2", "distill.critic_ratio=3",
                 f"data.root={pairs}", f"train.output_dir={out}", "train.batch_size=2", "train.log_every=1",
                 "train.warmup_steps=1", "train.lr=1e-3", *extra]
    return load_config(ROOT / "configs/distill-demo.yaml", overrides, DistillTrainingConfig)


def train(config, **kwargs):
    return loop.train(config, task_type=DistillTask, **kwargs)


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


class Linear(torch.nn.Module):
    """A stand-in model: velocity = a * input + b * time (every frame), so losses can be computed by hand."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(a)), b

    def forward(self, x, t, y=None, **_):
        return self.a * x + self.b * t[:, None, :, None, None]


def test_trajectory_loss_matches_a_hand_computed_reference():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2, 3, 3, 5, 4, 4, generator=gen)  # (B, P, C, T, H, W): times 1, 0.5, 0
    times, step = [1.0, 0.5, 0.0], torch.tensor([[0, 1, 0], [1, 1, 0]])  # (B, K)
    cond_eps = torch.randn(2, 3, 3, 4, 4, generator=gen)
    loss = trajectory_loss(Linear(0.5, 0.25), points, times, None, CHUNKS, 0.05, step=step, cond_eps=cond_eps)
    terms = []
    for k, (s, n) in enumerate(CHUNKS):
        per_sample = []
        for b in range(2):
            j = int(step[b, k])
            x, target = points[b, j, :, s:s + n], points[b, j + 1, :, s:s + n]
            velocity = 0.5 * x + 0.25 * times[j]
            per_sample.append(((velocity - (target - x) / (times[j + 1] - times[j])) ** 2).mean())
        terms.append(sum(per_sample) / 2)
    assert torch.allclose(loss, sum(terms) / 3, rtol=1e-6)


def test_dmd_gradient_and_loss_match_hand_computed_references():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 4, 4, generator=gen, requires_grad=True)
    t = torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.3, 0.4]])
    noise = torch.randn(2, 3, 5, 4, 4, generator=gen)
    frames = lambda t: t[:, [0, 1, 1, 2, 2]][:, None, :, None, None]  # noqa: E731  (B, K) -> per frame
    real = lambda noisy, t: 0.3 * noisy + 0.1 * frames(t)  # noqa: E731  velocity functions (noisy, t) -> v
    fake = lambda noisy, t: -0.2 * noisy + 0.4 * frames(t)  # noqa: E731
    loss = dmd_loss(x, real, fake, CHUNKS, t=t, noise=noise)
    loss.backward()
    grads, terms = torch.zeros_like(x), []
    for k, (s, n) in enumerate(CHUNKS):
        per_sample = []
        for b in range(2):
            tk, clip = float(t[b, k]), x.detach()[b, :, s:s + n]
            noisy = (1 - tk) * clip + tk * noise[b, :, s:s + n]
            real_x0 = noisy - tk * (0.3 * noisy + 0.1 * tk)
            fake_x0 = noisy - tk * (-0.2 * noisy + 0.4 * tk)
            g = (fake_x0 - real_x0) / (clip - real_x0).abs().mean()
            assert torch.allclose(dmd_gradient(clip[None], real_x0[None], fake_x0[None], [(0, n)])[0], g, atol=1e-6)
            per_sample.append(0.5 * (g ** 2).mean())
            grads[b, :, s:s + n] = g / g.numel() / 2 / 3  # d/dx of 0.5 * mean over samples, chunks, elements
        terms.append(sum(per_sample) / 2)
    assert torch.allclose(loss, sum(terms) / 3, rtol=1e-5)
    assert torch.allclose(x.grad, grads, rtol=1e-4, atol=1e-9)  # the loss hands DMD's gradient to the samples
    a = torch.tensor(0.5, requires_grad=True)  # the critic's flow loss: (v - (noise - x))^2, per chunk, then mean
    critic = flow_loss(x, lambda noisy, t: a * noisy, CHUNKS, t=t, noise=noise)
    noisy = (1 - frames(t)) * x.detach() + frames(t) * noise
    per_frame = ((0.5 * noisy - (noise - x.detach())) ** 2).mean(dim=(1, 3, 4))  # (B, T)
    chunk_terms = [per_frame[:, s:s + n].mean() for s, n in CHUNKS]
    assert torch.allclose(critic, sum(chunk_terms) / 3, rtol=1e-5)
    critic.backward()
    assert a.grad is not None


def test_a_non_finite_score_reaches_the_loss_and_a_settled_chunk_gets_no_step():
    """A nan_to_num hid NaN scores: distill.guidance=nan trained with loss_model exactly 0 at every DMD step. NaN
    and infinities now reach the loss (the loop's train.nonfinite check stops on them); a chunk whose clip equals the
    real score (scale 0) still gets a zero step, not a NaN."""
    x = torch.randn(1, 3, 5, 4, 4)
    real, fake = x + 0.5, x - 0.5
    assert torch.isfinite(dmd_gradient(x, real, fake, CHUNKS)).all()
    real[:, :, 1:3] = x[:, :, 1:3]  # chunk 1 settled
    grad = dmd_gradient(x, real, fake, CHUNKS)
    assert torch.equal(grad[:, :, 1:3], torch.zeros_like(grad[:, :, 1:3])) and torch.isfinite(grad).all()
    for bad in (float("nan"), float("inf")):
        assert torch.isnan(dmd_gradient(x, real * bad, fake, CHUNKS)).any()
    nan_real = lambda noisy, t: noisy * float("nan")  # noqa: E731  what a guidance of nan makes of the real score
    loss = dmd_loss(x, nan_real, lambda noisy, t: 0.1 * noisy, CHUNKS)
    assert torch.isnan(loss)  # it was 0.0


def test_the_real_score_is_the_guided_teacher():
    """The teacher's pipeline at guidance s gives v_null + s (v_label - v_null), each read through its cache."""
    model = random_model(num_classes=3)
    window = self_rollout(LongVideoPipeline(random_model(seed=1, num_classes=3), steps=2, cfg_scale=1.0), 1,
                          Condition(label=torch.tensor([1])), 0, Plan(2, [1, 0, 1, 1], None), grad=False)
    noisy, t = torch.randn_like(window.clip), torch.full((1, 4), 0.5)
    score = lambda scale, label: window_velocity(  # noqa: E731
        LongVideoPipeline(model, steps=2, cfg_scale=scale), window if label is None else
        dataclasses.replace(window, condition=Condition(label=torch.tensor([label]))), noisy, t)
    with torch.no_grad():
        guided, label, null = score(3.0, None), score(1.0, None), score(1.0, 3)
    assert torch.allclose(guided, null + 3.0 * (label - null), atol=1e-5) and not torch.allclose(guided, label)


def test_gradients_reach_the_student_only_through_the_exit_steps():
    """Only the exit step of each chunk runs with gradients (and it is that chunk's last model call before its
    commit pass); its output is the clean-chunk prediction; with every exit at the last step the rollout is exactly
    what inference samples."""
    student = random_model(num_classes=3).train()
    calls = []  # (grad enabled, commit) per model call
    student.register_forward_hook(lambda m, args, kwargs, out: calls.append((torch.is_grad_enabled(),
                                                                             kwargs.get("commit", False))),
                                  with_kwargs=True)
    pipe = LongVideoPipeline(student, steps=3, cfg_scale=1.0)
    exits = [2, 0, 1, 2]  # the tiny layout's 4 chunks (the first frame, then chunks of 2)
    labels = Condition(label=torch.tensor([1, 3]))
    clip = self_rollout(pipe, 2, labels, seed=5, plan=Plan(0, exits, None)).clip
    assert clip.shape == (2, 3, 7, 16, 16) and clip.requires_grad
    chunks, current = [], []
    for call in calls:  # the calls of each chunk end with its commit pass
        current.append(call)
        if call[1]:
            chunks.append(current)
            current = []
    assert [len(c) for c in chunks] == [k + 2 for k in exits]  # exit k: k + 1 denoising calls, then the commit
    assert all(c[-2] == (True, False) and not any(g for g, _ in c[:-2] + c[-1:]) for c in chunks)
    clip.sum().backward()
    assert all(p.grad is not None for p in student.parameters())
    with torch.no_grad():
        rollout = self_rollout(pipe, 2, labels, seed=5, plan=Plan(0, [2] * 4, None), grad=False).clip
        inference = torch.cat([c.frames for c in pipe.generate(4, batch=2, label=torch.tensor([1, 3]), seed=5)], 2)
    assert torch.equal(rollout.clamp(-1, 1), inference)


def test_kv_cache_with_gradients_leaves_the_buffer_alone():
    model = random_model()
    cache = model.new_cache(1)
    k = torch.randn(cache.k.shape[1], 2, cache.k.shape[3], requires_grad=True)
    before = cache.k.clone()
    keys, _ = cache.update(0, k, k)
    assert torch.equal(cache.k, before) and keys.requires_grad
    with torch.no_grad():
        plain, _ = model.new_cache(1).update(0, k, k)
    assert torch.equal(keys, plain)


def test_schedule_of_the_critic_and_the_student(teacher, pairs, tmp_path):
    config = _config(teacher, pairs, tmp_path, "distill.ode_steps=2", "distill.critic_ratio=3")
    assert [generator_step(s, config) for s in range(9)] == [True, True, False, False, True, False, False, True, False]
    plans = [rollout_plan(0, step, 20, 4, 2, 0.5) for step in range(40)]
    assert rollout_plan(0, 7, 20, 4, 2, 0.5) == plans[7] and all(0 <= k < 2 for p in plans for k in p.exits)
    assert {p.start for p in plans} <= set(range(17)) and len({p.start for p in plans}) > 8  # anywhere in the rollout
    assert {p.switch_at for p in plans} == {None, 1, 2, 3}  # a switch inside the window, after its first chunk
    out = train(_config(teacher, pairs, tmp_path, "train.max_steps=7", "train.save_every=7"), progress_bar=False)
    parts = [sorted(k for k in m if k.startswith("loss_")) for m in _metrics(out)]
    ode, both, critic = ["loss_model"], ["loss_critic", "loss_model"], ["loss_critic"]
    assert parts == [ode, ode, critic, critic, both, critic, critic]


def test_resume_is_exact(teacher, pairs, tmp_path):
    """8 steps (2 of ODE regression, then DMD on long rollouts that switch labels) == 4 + --resume latest + 4:
    losses, student, critic, EMA."""
    run = ("train.save_every=4", "train.warmup_steps=4",  # the first 4 steps' lr does not depend on max_steps
           "distill.rollout_chunks=6", "distill.switch_share=0.5")
    full = train(_config(teacher, pairs, tmp_path / "full", "train.max_steps=8", *run), progress_bar=False)
    train(_config(teacher, pairs, tmp_path / "half", "train.max_steps=4", *run), progress_bar=False)
    half = train(_config(teacher, pairs, tmp_path / "half", "train.max_steps=8", *run), resume="latest",
                 progress_bar=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]  # noqa: E731
    assert len(_metrics(full)) == 8 and strip(_metrics(full)) == strip(_metrics(half))
    for name in ("ema.safetensors", "model.safetensors", "model_1.safetensors"):  # student, raw student, critic
        a, b = (load_file(d / "checkpoints/step_000008" / name) for d in (full, half))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    student = load_model(full / "checkpoints/step_000008")[0].state_dict()
    assert any(not torch.equal(student[k], v) for k, v in load_model(teacher)[0].state_dict().items())


def test_the_student_is_a_normal_checkpoint(teacher, pairs, tmp_path, capsys):
    """Its own steps and one branch everywhere (API, command line), through the same bounded KV cache."""
    out = train(_config(teacher, pairs, tmp_path, "train.max_steps=3", "train.save_every=3", "train.sample_every=3"),
                progress_bar=False)
    assert (out / "samples/step_000003.mp4").stat().st_size > 0  # the periodic sample of the EMA student
    student = out / "checkpoints/step_000003"
    pipe = ca2vdm.load_pipeline(student)
    assert (pipe.settings.steps, pipe.settings.cfg_scale) == (2, 1.0)
    chunks = list(pipe.generate(3, label=1, seed=0))
    assert [c.model_evals for c in chunks] == [2] * 4  # the first frame and 3 chunks: 2 steps x 1 branch
    kv = torch.cat([c.latents for c in chunks], dim=2)
    full = ca2vdm.load_pipeline(student, cache="full")
    assert (kv - torch.cat([c.latents for c in full.generate(3, label=1, seed=0)], dim=2)).abs().max() <= 1e-4
    from ca2vdm.cli.generate import main
    main(["--checkpoint", str(student), "--chunks", "2", "--label", "0", "--out", str(tmp_path / "v.mp4"),
          "--stats", str(tmp_path / "s.json")])
    stats = json.loads((tmp_path / "s.json").read_text())
    assert (stats["steps"], stats["cfg_scale"]) == (2, 1.0), stats
    bench = run_program("scripts/bench/student.py", "--teacher", teacher, "--student", student, "--chunks", 2,
                        "--repeats", 1, "--json", tmp_path / "speed.json", timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert speed["settings"]["student"]["steps"] == 2 and speed["settings"]["teacher"]["steps"] == 4
    assert speed["speedup_label"] > 0 and set(speed["seconds_per_chunk"]) == {
        f"{m}/{k}" for m in ("teacher", "student", "teacher_at_student_steps") for k in ("label", "no_label")}


def test_recorded_trajectories_end_on_the_teachers_video_and_resume(teacher, pairs, tmp_path):
    data = TrajectoryDataset(pairs)
    assert len(data) == 6 and data[0]["points"].shape == (3, 3, 7, 16, 16)  # (P, C, T, H, W): times 1, 0.5, 0
    model, meta = load_model(teacher)
    item, label = data[1]["points"], int(data[1]["label"])
    video = torch.cat([c.frames for c in LongVideoPipeline.for_checkpoint(model, meta).generate(
        4, label=torch.tensor([label]), seed=1)], dim=2)[0]
    assert (item[-1] - video).abs().max() <= 2e-3  # float16 storage of the teacher's own video (seed 0 * P + 1)
    noise = torch.randn(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert (item[0, :, :1] - noise[0]).abs().max() <= 2e-3  # the first point is the noise
    (tmp_path / "ode").mkdir()
    (tmp_path / "ode" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="did not write"):
        write_pairs(str(teacher), tmp_path / "ode", videos=6, steps=2, progress=False)
    again = tmp_path / "again"
    write_pairs(str(teacher), again, videos=6, steps=2, batch=4, shard_size=4, progress=False)
    (again / "index.json").unlink()
    (again / "shard_00001.safetensors").unlink()  # stopped after its first shard
    with pytest.raises(DataError, match="resume"):
        write_pairs(str(teacher), again, videos=6, steps=2, batch=4, shard_size=4, progress=False)
    write_pairs(str(teacher), again, videos=6, steps=2, batch=4, shard_size=4, resume=True, progress=False)
    for name in ("shard_00000.safetensors", "shard_00001.safetensors"):
        a, b = load_file(pairs / name), load_file(again / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ca2vdm.errors.SettingError, match="divide the teacher's 4 steps"):
        write_pairs(str(teacher), tmp_path / "three", videos=2, steps=3, progress=False)


@pytest.mark.parametrize("damage", ["cut", "empty", "missing", "garbage", "mis-shaped"])
def test_a_bad_shard_is_one_line_when_the_data_opens_and_resume_remakes_it(teacher, pairs, tmp_path, damage):
    """Corrupt, cut, empty, missing or mis-shaped shards crashed train/distill.py with 33-42-line tracebacks after
    training started; make-ode-pairs --resume accepted a finished shard cut to 1000 bytes. Now the data is checked when
    it is opened (one line naming the shard and the command that re-makes it), and --resume re-records it."""
    data = tmp_path / "ode"
    shutil.copytree(pairs, data)
    shard = data / "shard_00001.safetensors"
    original = {k: v.clone() for k, v in load_file(shard).items()}  # not a map of the file damaged below
    if damage == "cut":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "missing":
        shard.unlink()
    elif damage == "garbage":
        shard.write_bytes(b"not a safetensors file at all")
    else:
        save_file({"points": original["points"][:, :2].contiguous(), "labels": original["labels"]}, shard)
    says = {"cut": "is damaged or cut short", "empty": "is empty (0 bytes)", "missing": "is missing",
            "garbage": "is damaged or cut short", "mis-shaped": "holds points [2, 2, 3, 7, 16, 16]"}[damage]
    with pytest.raises(DataError) as error:
        TrajectoryDataset(data)
    line = str(error.value)
    assert line.startswith(f"data.root={data}: the shard shard_00001.safetensors {says}") and "\n" not in line
    command = line.split("re-make it (the sound shards are kept): ")[1]
    assert command.endswith("--resume") and f"--out {data}" in command and "--videos 6 --steps 2" in command
    write_pairs(str(teacher), data, videos=6, steps=2, batch=4, shard_size=4, resume=True, progress=False)
    assert all(torch.equal(original[k], load_file(shard)[k]) for k in original)  # re-made: the same trajectories
    assert len(TrajectoryDataset(data)) == 6


def test_a_bad_shard_stops_the_command_line_in_one_line_before_training(teacher, pairs, tmp_path):
    data = tmp_path / "ode"
    shutil.copytree(pairs, data)
    (data / "shard_00000.safetensors").write_bytes((data / "shard_00000.safetensors").read_bytes()[:1000])
    proc = subprocess.run([sys.executable, str(ROOT / "train/distill.py"), "--config",
                           str(ROOT / "configs/distill-demo.yaml"), "--no-progress", f"distill.teacher={teacher}",
                           "distill.steps=2", f"data.root={data}", f"train.output_dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: data.root={data}: the shard shard_00000")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_distill_settings_name_the_key(teacher, pairs, tmp_path):
    with pytest.raises(ConfigError, match="distill.critic_ratio must be a whole number >= 1, got 0"):
        _config(teacher, pairs, tmp_path, "distill.critic_ratio=0")
    with pytest.raises(ConfigError, match="0 < min_t < max_t < 1"):
        _config(teacher, pairs, tmp_path, "distill.min_t=0.5", "distill.max_t=0.4")
    with pytest.raises(DataError, match="needs its own: ca2vdm make-ode-pairs"):
        DistillTask(_config(teacher, pairs, tmp_path, "distill.steps=4"), torch.device("cpu")).dataset(
            _config(teacher, pairs, tmp_path, "distill.steps=4"))
    proc = subprocess.run([sys.executable, str(ROOT / "train/train.py"), "--config",
                           str(ROOT / "configs/distill-demo.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and "a distillation config (distill section), for train/distill.py" in proc.stderr


def test_a_text_teachers_student(tmp_path):
    """A text teacher's trajectories are sampled from the prompts given (their list in the index, a trajectory's
    label its prompt's number); its student distils with prompts (the guided teacher against the empty prompt), long
    rollouts that switch their prompt inside the window, and samples a prompt in its own steps with one branch."""
    model = random_model(text_encoder="wordllama", text_dim=256, text_tokens=8)
    text = tmp_path / "text.safetensors"
    save_weights(text, model.state_dict(), model.cfg, {"sampler": {"steps": 4, "cfg_scale": 3.0},
                                                       "metadata_version": 2})
    prompts = ["a red circle", "a blue square drifting left"]
    with pytest.raises(ConfigError, match="is a text model .* give the prompts"):
        write_pairs(str(text), tmp_path / "none", videos=2, steps=2, progress=False)
    pairs = tmp_path / "ode"
    write_pairs(str(text), pairs, videos=4, steps=2, batch=4, shard_size=4, progress=False, prompts=prompts,
                null_share=0.3)
    data = TrajectoryDataset(pairs)
    assert data.index["prompts"] == prompts and {int(data[i]["label"]) for i in range(4)} <= {0, 1, 2}
    row = next(i for i in range(4) if int(data[i]["label"]) < 2)
    loaded, meta = load_model(text)
    pipe = ca2vdm.load_pipeline(text)
    video = torch.cat([c.latents for c in pipe.generate(3, prompt=prompts[int(data[row]["label"])], seed=row)], 2)
    assert (data[row]["points"][-1] - video[0]).abs().max() <= 2e-3  # the teacher's own video of that prompt
    config = _config(text, pairs, tmp_path / "run", "distill.ode_steps=1", "distill.critic_ratio=2",
                     "distill.rollout_chunks=4", "distill.switch_share=1", "train.max_steps=3", "train.save_every=3")
    out = train(config, progress_bar=False)
    assert [sorted(k for k in m if k.startswith("loss_")) for m in _metrics(out)] == [
        ["loss_model"], ["loss_critic"], ["loss_critic", "loss_model"]]
    assert all(math.isfinite(m["loss"]) for m in _metrics(out))
    student = ca2vdm.load_pipeline(out / "checkpoints/step_000003")
    assert (student.settings.steps, student.settings.cfg_scale) == (2, 1.0)
    assert [c.model_evals for c in student.generate(2, prompt="a red circle", seed=0)] == [2] * 3
    label_teacher = _config(ROOT / "checkpoints/demo.safetensors", pairs, tmp_path / "x")
    with pytest.raises(DataError, match="recorded with prompts, but .*demo.safetensors is not a text model"):
        DistillTask(label_teacher, torch.device("cpu")).dataset(label_teacher)


@pytest.mark.parametrize("fsdp", [True, False], ids=["fsdp", "ddp"])
def test_two_processes(teacher, pairs, tmp_path, fsdp):
    """accelerate launch --num_processes 2 through the ODE stage into DMD on long rollouts that switch labels: with
    train.fsdp=true student, critic and teacher are sharded over two gloo ranks; without, student and critic are
    replicated (DDP). The student is a full checkpoint one process loads."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(ROOT / "train/distill.py"), "--config", str(ROOT / "configs/distill-demo.yaml"), "--no-progress",
           f"distill.teacher={teacher}", "distill.steps=2", "distill.ode_steps=1", "distill.critic_ratio=2",
           f"data.root={pairs}", f"train.output_dir={tmp_path}", "train.batch_size=1", "train.max_steps=4",
           "distill.rollout_chunks=5", "distill.switch_share=1",
           "train.save_every=4", "train.log_every=1", f"train.fsdp={str(fsdp).lower()}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("FSDP holds") == (6 if fsdp else 0), proc.stdout[-2000:]  # 3 models x 2 ranks
    assert [sorted(k for k in m if k.startswith("loss_")) for m in _metrics(tmp_path)] == [
        ["loss_model"], ["loss_critic"], ["loss_critic", "loss_model"], ["loss_critic"]]
    model, meta = load_model(tmp_path / "checkpoints/step_000004")
    assert meta.sampler.steps == 2 and (tmp_path / "checkpoints/step_000004/model_1.safetensors").is_file()


def test_regression_weight_adds_the_trajectory_loss_to_dmd_steps(teacher, pairs, tmp_path, monkeypatch):
    """DMD's regression term: the student's loss on its DMD steps is DMD + weight x the ODE regression loss."""
    from ca2vdm.training import distill_task

    monkeypatch.setattr(distill_task, "trajectory_loss", lambda *args, **kwargs: torch.tensor(0.5))
    logged = []
    for weight in (0, 2):
        out = train(_config(teacher, pairs, tmp_path / str(weight), "distill.ode_steps=0", "distill.critic_ratio=1",
                            f"distill.regression_weight={weight}", "train.max_steps=1"), progress_bar=False)
        logged.append(_metrics(out)[0]["loss_model"])
    assert logged[1] - logged[0] == pytest.approx(1.0)


def test_a_dmd_step_on_the_causal_wan_with_a_prompt():
    """Self-Forcing's step on arch wan: the student's rollout through its cache with a prompt, gradients only through
    each chunk's exit step; DMD scores it with the teacher guided towards the prompt against the empty prompt and the
    critic, each reading the window through its own cache; one optimizer step changes the student, and the critic's
    flow loss on the rollout trains every weight of the critic. The student's prompt K/V are made once per prompt,
    before the exit steps (as Self-Forcing's cross-attention cache), so their projections get no gradient; the
    critic's are made again with gradients for its loss."""
    import re

    from ca2vdm.encoders.text import TextEmbeddings
    from ca2vdm.models.registry import build_model, tiny_config

    torch.manual_seed(0)
    teacher = build_model(tiny_config("wan")).eval()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    student, critic = build_model(teacher.cfg).train(), build_model(teacher.cfg).train()
    student.load_state_dict(teacher.state_dict())
    critic.load_state_dict(teacher.state_dict())
    gen = torch.Generator().manual_seed(4)
    prompt = TextEmbeddings(torch.randn(2, 8, 256, generator=gen), torch.ones(2, 8, dtype=torch.bool))
    calls = []  # grad enabled per student call
    student.register_forward_hook(lambda m, args, out: calls.append(torch.is_grad_enabled()))
    scorer = lambda model, scale: LongVideoPipeline(model, steps=3, cfg_scale=scale, cond_noise=0.0,  # noqa: E731
                                                    pixel_space=False)
    exits = [1, 0, 2, 1]  # the first frame, then chunks of 2: T = 7
    window = self_rollout(scorer(student, 1.0), 2, Condition(prompt=prompt), seed=5, plan=Plan(0, exits, None))
    assert window.clip.shape == (2, 3, 7, 16, 16) and window.clip.requires_grad and sum(calls) == len(exits)
    fake = lambda noisy, t: window_velocity(scorer(critic, 1.0), window, noisy, t)  # noqa: E731
    real = lambda scale: lambda noisy, t: window_velocity(scorer(teacher, scale), window, noisy, t)  # noqa: E731
    loss = dmd_loss(window.clip, real(3.0), fake, window.chunks, gen)
    unguided = dmd_loss(window.clip, real(1.0), fake, window.chunks, torch.Generator().manual_seed(9))
    assert torch.isfinite(loss) and loss > 0 and not torch.isclose(loss, unguided)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    loss.backward()
    prompt_kv = r"condition_embedder\.text_embedder\..*|blocks\.\d+\.attn2\.(to_k|to_v|norm_k)\..*"
    untouched = {n for n, _ in student.named_parameters() if re.fullmatch(prompt_kv, n)}
    assert {n for n, p in student.named_parameters() if p.grad is None} == untouched
    assert all(p.grad is None for p in critic.parameters())
    optimizer.step()
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
    flow_loss(window.clip, fake, window.chunks, gen).backward()
    assert all(p.grad is not None for p in critic.parameters())  # its prompt K/V too: made again with gradients

"""The benchmarks' bookkeeping: analytic FLOPs, the lockstep measurement (ca2vdm/evaluation/lockstep.py), the
step-cache benchmark and the sampler-drift runs (no timing is asserted). Benchmarks and experiments run as programs,
in a fresh interpreter, as a user runs them: no test imports a script."""
import json
from pathlib import Path

import pytest
import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.evaluation.lockstep import measure_modes, teacache_mode
from ca2vdm.evaluation.metrics import shape_colour
from ca2vdm.models.flops import chunk_flops, forward_flops

from helpers import random_model, run_program


def test_analytic_flops_follow_each_mode_cost_model():
    cfg = random_model().cfg
    L, window = cfg.chunk_frames, cfg.max_context_frames
    kv = [chunk_flops(cfg, "kv", f, L, steps=8, rows=2) for f in range(0, 10 * L, L)]
    none = [chunk_flops(cfg, "none", f, L, 8, 2) for f in range(0, 10 * L, L)]
    full = [chunk_flops(cfg, "full", f, L, 8, 2) for f in range(0, 10 * L, L)]
    full_window = (window + L - 1) // L  # chunks before the window is full
    assert kv[full_window] == kv[-1]  # constant once the window is full
    assert none[full_window] == none[-1] > kv[-1]
    assert none[:full_window] == full[:full_window]  # the two recompute modes agree inside the window
    assert all(b > a for a, b in zip(full, full[1:]))  # extendable context: every chunk costs more
    # skipping half of the denoising passes halves them but never the commit pass
    half = chunk_flops(cfg, "kv", 2 * window, L, 8, 2, evaluated=0.5)
    commit = 2 * forward_flops(cfg, L, window + L)
    assert half == pytest.approx((kv[-1] - commit) / 2 + commit)


def test_lockstep_measure_runs_every_mode_on_the_same_chunks():
    model = random_model(num_classes=3)
    meta = CheckpointMetadata.from_raw({"diffusion_config": {"steps": 3, "cfg_scale": 2.0}}, model.cfg)
    modes = ["kv", "none", "full", teacache_mode(0.5)]
    rows = measure_modes(model, meta, modes, chunks=3, seed=0, batch=2)
    assert list(rows) == modes
    for mode in modes:
        assert [r["chunk"] for r in rows[mode]] == [0, 1, 2]
        assert all(r["seconds"] > 0 and r["flops"] > 0 for r in rows[mode])
    assert all(t["flops"] <= k["flops"] for t, k in zip(rows[modes[3]], rows["kv"]))
    assert len(model.stack.hooks) == 0  # no step cache is left on the model


def test_sampler_drift_teacher_forces_every_chunk_after_the_first(shapes, tmp_path):
    from ca2vdm.checkpoints.weights import save_weights

    model = random_model(num_classes=3)
    checkpoint, out = tmp_path / "tiny.safetensors", tmp_path / "drift.json"
    save_weights(checkpoint, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 2, "cond_noise": 0.05}})
    proc = run_program("scripts/experiments/bench_sampler_drift.py", "--checkpoint", checkpoint, "--data", shapes,
                       "--every", 3, "--chunks", 3, "--settings", "2:1", "2:3", "--json", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["steps"], r["shift"], r["mode"]) for r in results] == [
        (2, 1.0, "teacher"), (2, 1.0, "free"), (2, 3.0, "teacher"), (2, 3.0, "free")]
    for teacher, free in (results[:2], results[2:]):
        rows = teacher["chunks"], free["chunks"]
        assert [len(r) for r in rows] == [3, 3]
        assert all(0 < row[k] < 10 for r in rows for row in r for k in ("brightness", "contrast"))
        assert all(row["hue_error"] is None or 0 <= row["hue_error"] <= 1 for r in rows for row in r)
        assert rows[0][0] == rows[1][0]  # chunk 0 sees only the real first frame in both modes, with the same noise
        assert rows[0][2] != rows[1][2]  # later chunks see real frames in one mode and the model's own in the other
    assert results[0]["chunks"] != results[2]["chunks"]  # the shift reaches the sampler


def test_shape_colour_measures_hue_and_channel_bias():
    real = torch.full((2, 3, 4, 16, 16), -0.9)  # (B, C, T, H, W): dark background, a yellow square in each video
    real[:, :, :, 4:10, 4:10] = torch.tensor([0.8, 0.6, -0.8])[:, None, None, None]
    same = shape_colour(real, real)
    assert same == {"hue_error": 0.0, "red": 0.0, "green": 0.0, "blue": 0.0, "shapes": 2}
    redder = real.clone()
    redder[:, 0, :, 4:10, 4:10] += 0.2  # +0.1 on the [0, 1] scale, the shape only
    shifted = shape_colour(redder, real)
    assert shifted["hue_error"] > 0.01 and shifted["red"] == pytest.approx(0.1)
    assert shifted["green"] == shifted["blue"] == 0
    redder[1] = -0.9  # the shape vanished in one video: only the other is compared
    assert shape_colour(redder, real)["shapes"] == 1
    assert shape_colour(torch.full_like(real, -0.9), real)["hue_error"] is None


def test_sampler_drift_refuses_videos_too_short_for_the_chunks_and_a_setting_without_a_shift(shapes, tmp_path):
    from ca2vdm.checkpoints.weights import save_weights

    model = random_model(num_classes=3)
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(checkpoint, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 2}})
    frames = 1 + 10 * model.cfg.chunk_frames  # the fixture's videos have 20 frames
    script = "scripts/experiments/bench_sampler_drift.py"
    proc = run_program(script, "--checkpoint", checkpoint, "--data", shapes, "--chunks", 10)
    assert proc.returncode == 1 and f"shorter than the {frames} frames that --chunks 10 needs" in proc.stderr
    proc = run_program(script, "--checkpoint", checkpoint, "--data", tmp_path / "empty", "--chunks", 1)
    assert proc.returncode == 1 and "no videos under" in proc.stderr
    proc = run_program(script, "--checkpoint", checkpoint, "--settings", "16")  # steps:shift, e.g. 16:3
    assert proc.returncode == 2 and "a setting is steps:shift, e.g. 16:3, got '16'" in proc.stderr, proc.stderr


def _tiny_checkpoint(tmp_path: Path, steps: int) -> Path:
    from ca2vdm.checkpoints.weights import save_weights

    model = random_model(num_classes=3)
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(checkpoint, model.state_dict(), model.cfg, {"diffusion_config": {"steps": steps, "cfg_scale": 2.0}})
    return checkpoint


def test_step_cache_bench_writes_its_rows_without_matplotlib(tmp_path):
    """Teacher-forced rows with today's keys and the new ones; a missing matplotlib skips only the plot."""
    proc = run_program("scripts/bench/step_cache.py", "--checkpoint", _tiny_checkpoint(tmp_path, 8), "--chunks", 2,
                       "--policies", "taylorseer", "--out-dir", tmp_path / "out", matplotlib=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "step_cache.json").read_text())["rows"]
    assert "skipped the plot" in proc.stdout and not (tmp_path / "out" / "step_cache.png").exists()
    assert {r["policy"] for r in rows} == {"none", "taylorseer"}
    for row in rows:
        assert {"policy", "setting", "eval_ratio", "speedup", "chunk_psnr_mean", "chunk_psnr_min"} <= set(row)
        assert row["chunk_psnr_min"] <= row["chunk_psnr_mean"] <= 100
    none = rows[0]
    assert none["eval_ratio"] == 1 and none["chunk_psnr_min"] == 100  # no policy: the reference itself
    growth = next(r for r in rows if r["setting"] == "interval=2,growth=1,cfg_reuse=1")
    assert growth["eval_ratio"] == pytest.approx(2 * 8 * 2 / (2 * (2 * 5 - 1)))  # steps 0,1,3,6,7; 3 cond only


def test_step_cache_drift_over_seeds_keeps_per_seed_entries_and_a_summary(tmp_path):
    """--drift-seeds N: policy-free and policy videos for N seeds, on / off per seed, their mean and the spread of
    the policy-free videos between seeds; --settings keeps only the named setting; the first seed's keys as before.
    Tiny videos (--drift-first 1 --drift-last 2), every setting counting as good (--goal-psnr -1 -1)."""
    setting = "interval=2,growth=1,cfg_reuse=1"
    proc = run_program("scripts/bench/step_cache.py", "--checkpoint", _tiny_checkpoint(tmp_path, 4), "--chunks", 1,
                       "--policies", "taylorseer", "--settings", setting, "--drift-chunks", 4, "--drift-seeds", 3,
                       "--drift-first", 1, "--drift-last", 2, "--goal-psnr", -1, -1, "--out-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "step_cache.json").read_text())
    assert [(r["policy"], r["setting"]) for r in result["rows"]] == [("none", "-"), ("taylorseer", setting)]
    drift = result["drift"]
    assert [e["seed"] for e in drift["seeds"]] == [0, 1, 2]
    stats = ("brightness", "contrast", "sharpness", "motion")
    for entry in drift["seeds"]:
        on = entry["taylorseer"]
        assert on["setting"] == setting and set(on["vs_off"]) == set(stats)
        assert all(on["vs_off"][k] == pytest.approx(on["last_vs_first"][k] / entry["off"][k]) for k in stats)
    assert drift["seeds"][0]["off"] != drift["seeds"][1]["off"]  # each seed its own video
    assert drift["off"] == drift["seeds"][0]["off"] and drift["taylorseer"] == drift["seeds"][0]["taylorseer"]
    assert drift["off_next_seed"]["last_vs_first"] == drift["seeds"][1]["off"]
    for key in stats:
        summary, off = drift["summary"][key], [e["off"][key] for e in drift["seeds"]]
        on_off = [e["taylorseer"]["vs_off"][key] for e in drift["seeds"]]
        assert summary["off"] == off and summary["off_spread"] == pytest.approx(max(off) / min(off))
        assert summary["taylorseer"]["on_off"] == on_off
        assert summary["taylorseer"]["mean"] == pytest.approx(sum(on_off) / 3)


def test_step_cache_bench_names_an_unknown_setting():
    proc = run_program("scripts/bench/step_cache.py", "--settings", "interval=2,growth=9", "--chunks", 1)
    assert proc.returncode == 2 and "--settings: no setting interval=2,growth=9" in proc.stderr


def test_wan_memory_estimate_counts_wans_published_sizes(tmp_path):
    """Config arithmetic on the meta device: the 1.3B's 1,418,996,800 parameters, 1560 tokens per latent frame at
    480x832, a 15-frame bf16 KV cache of 15 x 274.2 MiB and 90 MiB of prompt K/V; offloading UMT5 lowers the peak."""
    proc = run_program("scripts/bench/wan_memory.py", "--sizes", "480x832", "--dtypes", "bf16", "--out",
                       tmp_path / "wan.json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "wan.json").read_text())
    assert data["parameters"]["transformer"] == 1_418_996_800 and data["estimate"] is True
    [row] = data["rows"]
    assert (row["size"], row["tokens_per_frame"], row["cache_frames"]) == ("480x832", 1560, 15)
    assert (row["mib"]["kv_cache"], row["mib"]["prompt_kv"]) == (4113.3, 90.0)
    assert row["peak_gib"]["text_encoder_offloaded"] < row["peak_gib"]["text_encoder_resident"]
    assert "480x832 bf16: peak" in proc.stdout
    bad = run_program("scripts/bench/wan_memory.py", "--sizes", "480x830")
    assert bad.returncode == 2 and "'480x830': give HxW in pixels, multiples of 16" in bad.stderr

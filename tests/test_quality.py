"""The reference-free instrument (ca2vdm/evaluation/frechet.py, detector.py, detector_training.py, quality.py and
``ca2vdm eval quality``): the Frechet distance against scipy, detector files, the command line's JSON."""
import json
import subprocess

import numpy as np
import pytest
import scipy.linalg
import torch

import ca2vdm
from ca2vdm.errors import CheckpointError
from ca2vdm.evaluation.detector import Detector, DetectorConfig, ShapesDetector, load_detector, save_detector
from ca2vdm.evaluation.detector_training import train_detector
from ca2vdm.evaluation.frechet import Gaussian, frechet_distance
from ca2vdm.evaluation.quality import evaluate_quality, generated_clips

from helpers import ca2vdm_command, checkout_env


@pytest.mark.parametrize("dim, n", [(3, 50), (16, 400), (40, 30)])  # the last: rank-deficient covariances
def test_frechet_distance_matches_scipy_sqrtm(dim, n):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(n + 7, dim)) @ rng.normal(size=(dim, dim)) * 0.7 + rng.normal(size=dim)
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    reference = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)
    value = frechet_distance(Gaussian.fit(torch.tensor(a)), Gaussian.fit(torch.tensor(b)))
    assert value == pytest.approx(reference, rel=1e-6, abs=1e-6)
    assert frechet_distance(Gaussian.fit(torch.tensor(a)), Gaussian.fit(torch.tensor(a))) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        Gaussian.fit(torch.zeros(1, dim))


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    """Same features: 0. Moved by d (the same covariance): exactly |d|^2, so it grows with the shift; a wider spread
    adds the covariance term; the distance is symmetric."""
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)))
    d = torch.tensor([0.3, -1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(Gaussian.fit(a), Gaussian.fit(a.clone())) == pytest.approx(0, abs=1e-8)
    moved = [frechet_distance(Gaussian.fit(a), Gaussian.fit(a + s * d)) for s in (0.5, 1, 2, 4)]
    assert moved == pytest.approx([s * s * float(d @ d) for s in (0.5, 1, 2, 4)], rel=1e-6)
    wider = frechet_distance(Gaussian.fit(a), Gaussian.fit(a * 1.5))
    assert wider > 0.1 and wider == pytest.approx(frechet_distance(Gaussian.fit(a * 1.5), Gaussian.fit(a)))


def test_evaluate_quality_measures_against_the_real_gaussian_it_is_given(checkpoint):
    """The report's distances are those of the generated clips' features to the real Gaussian: ~0 against the
    clips' own Gaussian, |d|^2 when its mean is moved by d (the covariance term unchanged); per chunk, each chunk's."""
    pipe = ca2vdm.load_pipeline(checkpoint, "cpu")
    cfg = DetectorConfig(frames=2, resolution=16, width=8, features=4)
    torch.manual_seed(0)
    detector = Detector(ShapesDetector(cfg), cfg.resolution, cfg.frames, {}, True, "random")
    clips, _, _ = generated_clips(pipe, 6, 2, None, seed=3)
    features = torch.stack([detector.features(clips[:, k]) for k in range(2)], dim=1)  # (videos, chunks, D)
    own = Gaussian.fit(features.flatten(0, 1))
    same = evaluate_quality(pipe, detector, 6, 2, seed=3, real={"all": own})
    d = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    moved = evaluate_quality(pipe, detector, 6, 2, seed=3, real={"all": Gaussian(own.mean + d, own.cov)})
    assert same["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert moved["frechet_distance"] == pytest.approx(float(d @ d), rel=1e-6)
    for k in range(2):
        chunk = frechet_distance(Gaussian.fit(features[:, k]), own)
        assert same["per_chunk"][k]["frechet_distance"] == pytest.approx(chunk, rel=1e-6, abs=1e-9)
    assert 0 <= same["class_accuracy"] <= 1 and same["class_accuracy"] == moved["class_accuracy"]
    labels = torch.arange(6) % 3  # the videos cycle through the classes: each class against its own real clips
    own_class = {str(c): Gaussian.fit(features[labels == c].flatten(0, 1)) for c in range(3)}
    per_label = evaluate_quality(pipe, detector, 6, 2, seed=3, real={"all": own, **own_class})["per_label"]
    assert sorted(per_label) == ["0", "1", "2"] and all(row["videos"] == 2 for row in per_label.values())
    assert all(row["frechet_distance"] == pytest.approx(0, abs=1e-6) for row in per_label.values())
    named = detector.classify(features.flatten(0, 1)).view(6, 2)
    for c in range(3):
        assert per_label[str(c)]["class_accuracy"] == pytest.approx((named[labels == c] == c).float().mean().item())
    assert same["per_label"]["0"]["frechet_distance"] is None  # no real clips of class 0 given


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_detector_files_round_trip_and_torchscript_plugs_in(tmp_path):
    model = ShapesDetector(DetectorConfig(width=8, features=6)).eval()
    real = {"all": Gaussian(torch.zeros(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64))}
    save_detector(tmp_path / "d.safetensors", model, real, {"note": "test"})
    loaded = load_detector(tmp_path / "d.safetensors")
    clips = torch.rand(3, 3, 4, 16, 16) * 2 - 1  # resized to the detector's 32 pixels
    with torch.no_grad():
        assert torch.allclose(loaded.features(clips), model(loaded._prepare(clips)))
    assert loaded.classifies and set(loaded.real) == {"all"} and loaded.classify(loaded.features(clips)).shape == (3,)

    class I3DLike(torch.nn.Module):  # FVD's TorchScript I3D is called as detector(x, rescale=..., resize=..., ...)
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            return x.mean(dim=(2, 3, 4))

    torch.jit.script(I3DLike()).save(str(tmp_path / "i3d.pt"))
    i3d = load_detector(tmp_path / "i3d.pt")
    assert not i3d.classifies and not i3d.real and i3d.features(clips).shape == (3, 3)
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(CheckpointError, match="neither our .safetensors detector nor a TorchScript file"):
        load_detector(tmp_path / "junk.pt")


def test_eval_quality_writes_the_interface(shapes, checkpoint, tmp_path):
    """The command line's JSON: frechet_distance, class_accuracy in [0, 1], one frechet_distance per chunk index;
    a checkpoint compared with itself at other settings gives another distance."""
    info = train_detector(shapes, tmp_path / "det.safetensors", steps=3, batch=8, clips_per_video=2,
                          cfg=DetectorConfig(width=8, features=4), log=lambda *_: None)
    assert 0 <= info["held_out_accuracy"] <= 1 and info["clips"] == 24
    reports = []
    for extra in ([], ["--steps", "1"]):
        out = tmp_path / f"q{len(extra)}.json"
        proc = subprocess.run(ca2vdm_command("eval", "quality", "--checkpoint", checkpoint, "--videos", 6, "--chunks",
                                             2, "--seed", 3, "--json", out, "--detector", tmp_path / "det.safetensors",
                                             "--threads", 1, *extra),
                              capture_output=True, text=True, env=checkout_env(), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports.append(json.loads(out.read_text()))
    report = reports[0]
    assert report["frechet_distance"] > 0 and 0 <= report["class_accuracy"] <= 1  # a random model vs real clips
    assert [row["chunk"] for row in report["per_chunk"]] == [0, 1]
    assert all(row["frechet_distance"] > 0 for row in report["per_chunk"])
    assert (report["videos"], report["chunks"], report["seed"], report["label"]) == (6, 2, 3, None)
    assert reports[1]["sampler"]["steps"] == 1 and reports[1]["frechet_distance"] != report["frechet_distance"]
    proc = subprocess.run(ca2vdm_command("eval", "quality", "--checkpoint", checkpoint, "--videos", 4, "--chunks", 1,
                                         "--label", 7, "--json", tmp_path / "x.json", "--detector",
                                         tmp_path / "det.safetensors"), capture_output=True, text=True,
                          env=checkout_env())
    assert proc.returncode != 0 and proc.stderr.startswith("error: --label 7") and "no class 7" in proc.stderr

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402
import torch  # noqa: E402

from ca2vdm.synthetic import write_dataset  # noqa: E402

# The test models are tiny: one thread avoids oversubscription on small CI machines (2 cores).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """12 labelled synthetic videos (20 frames, 16x16) shared by the training tests; tests that change a dataset copy
    it first."""
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root, num_videos=12, num_frames=20, size=16, seed=0)
    return root

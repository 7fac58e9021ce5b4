import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# The test models are tiny: one thread avoids oversubscription on small CI machines (2 cores).
torch.set_num_threads(1)

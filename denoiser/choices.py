"""The names and default places a user picks from, in plain Python.

Each belongs to the module named beside it, which imports it from here; they live apart so
that the command line can offer and check them without importing torch or pandas (an
argument error then answers in a fraction of a second).
"""

from __future__ import annotations

from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "mps")  # denoiser.models.device
PRECISIONS = ("auto", "fp32", "bf16")  # denoiser.models.precision
TONES = ("keep", "normalize")  # denoiser.scans.restore: keep each scan's paper and ink, or normalize
USES = ("clean", "run")  # denoiser.models.registry: the commands a model can be promoted for
DEFAULT_MODELS_DIR = Path("data") / "models"  # denoiser.models.checkpoint: the model store
DEFAULT_RUNS_DIR = Path("data") / "runs"  # denoiser.pipeline.stages: one folder per MNIST run
#: denoiser.folders.settings: decoded pixels of one file (all its pages) at most, by default.
#: Measured on a 2-core Xeon (2026-12-04): ``denoiser clean`` of one 4000x4000 scan peaked
#: at 774 MB of RSS (502 MB for a 28x28 one), so one file at this limit stays under 1 GB.
MAX_PIXELS = 2**24
SHARD_SIZE = 2000  # denoiser.folders.settings: files per retryable task of a cleaning run
MAX_FILE_MB = 100  # denoiser.folders.safe_read: larger input files are error rows, never read
#: denoiser.adapt.sample: scans of a folder that adapting reads. Every per-scan step before
#: and after the fine-tuning (the noise profile, the backgrounds, the folder's shapes, the
#: anchors, the gate's label-free checks) scales with it: on 4,898 real cheque digits
#: adapting took 6.0 minutes with 5,000 and 4.2 with 2,000, the same 2.5 of fine-tuning
#: (2-core AMD EPYC, 2026-12-07). ``bench.adapt`` measured its gains on folders of 1,000-2,000.
SAMPLE_IMAGES = 2000

"""``denoiser models`` as a user runs it: list, show, promote, shapes, quality."""

from denoiser.checks import shapes
from tests.helpers import denoiser, write_idx_dataset


# from checks/test_quality_net.py
def test_models_quality_without_a_model_for_clean_says_what_to_do(tmp_path):
    out = denoiser("models", "quality", "--models-dir", str(tmp_path / "empty"))
    assert out.returncode == 2
    assert "no model for clean yet" in out.stderr and len(out.stderr.strip().splitlines()) == 1



# from models/test_registry.py
def test_models_command_lists_promotes_and_refuses(two_models, idx_dir, tmp_path):
    folder, _ = idx_dir
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    base = ["--models-dir", str(two_models)]
    promote = ["models", "promote", "--for", "run", "--limit", "16", "--data-dir", str(folder),
               "--dataset", "idx", "--device", "cpu", *base]
    first = denoiser(*promote[:2], "unet-tiny", *promote[2:], env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "unet-tiny is now the default for run" in first.stdout
    refused = denoiser(*promote[:2], "conv-untrained", *promote[2:], env=env)
    assert refused.returncode == 1 and "below the current default unet-tiny" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    listing = denoiser("models", "list", *base, env=env)
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if row.startswith("unet-tiny"))
    assert line.rstrip().endswith("run")
    shown = denoiser("models", "show", "unet-tiny", *base, env=env)
    assert '"default_for": [\n    "run"\n  ]' in shown.stdout



# from checks/test_shapes.py
def test_models_shapes_command_trains_and_stores_one(tmp_path):
    write_idx_dataset(tmp_path / "idx", n_train=300, n_test=20)
    store = tmp_path / "models"
    out = denoiser("models", "shapes", "--data-dir", str(tmp_path / "idx"), "--dataset", "idx",
                   "--models-dir", str(store))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clean flags outputs scoring above" in out.stdout
    assert shapes.find_shapes(store) is not None
    missing = denoiser("models", "shapes", "--data-dir", str(tmp_path / "nothing"), "--dataset", "idx",
                       "--models-dir", str(tmp_path / "other"))
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1


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



def test_models_list_shows_a_model_the_budget_cut_short(tmp_path):
    from denoiser.models import checkpoint
    from denoiser.models.networks import build_model

    store = tmp_path / "models"
    for model_id, steps in (("conv-0123456789ab", 13_000), ("conv-0123456789ab-cut2600", 2_600)):
        checkpoint.save_checkpoint(store, model_id, build_model("conv"), {
            "architecture": "conv", "config": {"epochs": 13, "noise": "gaussian:0.5"}, "steps": steps,
            "planned_steps": 13_000, "cut_short": steps < 13_000})
    listing = denoiser("models", "list", "--models-dir", str(store))
    rows = {row.split()[0]: row for row in listing.stdout.splitlines()[1:]}
    assert "2.6/13 cut" in rows["conv-0123456789ab-cut2600"], listing.stdout
    assert " 13 " in rows["conv-0123456789ab"] and "cut" not in rows["conv-0123456789ab"]

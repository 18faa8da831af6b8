"""The command line on broken folder states and hostile models: one line, the right exit
status, nothing started or written (the library's fault corpus is tests/folders/test_faults.py)."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, WITHOUT_ROOT_OVERRIDE, denoiser, digit_png


# from folders/test_faults.py
@pytest.fixture
def cli_folder(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    digit_png().save(root / "x.png")
    return root


def one_line_error(result, expected: str, status: int = 1) -> None:
    assert result.returncode == status, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_a_crafted_pickle_as_model_is_one_line_and_runs_nothing(tmp_path, cli_folder):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (evil / "model.pt").write_bytes(pickle.dumps(Payload()))
    (evil / "model.json").write_text('{"architecture": "conv"}')
    result = denoiser("clean", str(cli_folder), str(tmp_path / "out"), "--model", str(evil / "model.pt"),
                      "--device", "cpu", timeout=60)
    one_line_error(result, "not a checkpoint this tool wrote")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_a_read_only_out_dir_is_one_line_even_for_root(tmp_path, cli_folder, untrained):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    command = WITHOUT_ROOT_OVERRIDE + [sys.executable, "-m", "flows.cli", "clean", str(cli_folder), str(out),
               "--model", str(untrained.weights), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    one_line_error(result, "is not writable (permission denied)")


@pytest.mark.parametrize("state", ["lock-is-a-folder", "dangling-out-dir", "report-inside-in-dir", "tmp-is-a-file",
                                   "corrupt-manifest", "api-url-closed"])
def test_broken_folder_states_are_one_line(tmp_path, cli_folder, untrained, state, api_env):
    out = tmp_path / "out"
    args = ["clean", str(cli_folder), str(out), "--model", str(untrained.weights), "--device", "cpu"]
    env = {"PREFECT_HOME": str(tmp_path / "ph"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **api_env}
    if state == "lock-is-a-folder":
        (out / ".denoiser" / "lock").mkdir(parents=True)
        expected = "lock is a folder"
    elif state == "dangling-out-dir":
        out.symlink_to(tmp_path / "gone")
        expected = "is a dangling link"
    elif state == "tmp-is-a-file":
        (out / ".denoiser").mkdir(parents=True)
        (out / ".denoiser" / "tmp").write_bytes(b"")
        expected = ".denoiser/tmp is a file, where the product keeps a folder"
    elif state == "corrupt-manifest":
        (out / ".denoiser").mkdir(parents=True)
        (out / ".denoiser" / "manifest.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
        expected = "is corrupt or not a manifest"
    elif state == "api-url-closed":
        env["PREFECT_API_URL"] = "http://127.0.0.1:1/api"
        expected = "no Prefect server answers at http://127.0.0.1:1/api"
    else:
        args += ["--report", str(cli_folder / "report.parquet")]
        expected = "must not be inside the input folder"
    result = denoiser(*args, env=env, timeout=180)
    one_line_error(result, expected, status=2 if state == "report-inside-in-dir" else 1)
    assert not (cli_folder / "report.parquet").exists()


@pytest.mark.parametrize("api_url", ["", "http://127.0.0.1:1/api"])
def test_the_dask_cluster_listens_on_this_machine_only(monkeypatch, api_url):
    pytest.importorskip("prefect_dask")
    from distributed import LocalCluster

    from flows.cli.clean import dask_task_runner

    monkeypatch.setenv("PREFECT_API_URL", api_url)  # worker processes only with a real server
    kwargs = {**dask_task_runner(None).cluster_kwargs, "n_workers": 1}
    import psutil

    def listening() -> set[tuple[str, int]]:
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        return {(c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections("inet")
                if c.status == psutil.CONN_LISTEN}

    before = listening()
    with LocalCluster(**kwargs):
        opened = listening() - before
    assert opened, "the cluster opened no port: the dashboard at least should listen"
    assert {ip for ip, _ in opened} == {"127.0.0.1"}, opened



def test_ctrl_c_that_a_library_turned_into_its_own_error_still_ends_as_interrupted(tmp_path, capsys):
    """A KeyboardInterrupt caught inside a library and raised again as a ValueError (pydantic's
    serializer does: "Error calling function `_ser_model`: KeyboardInterrupt") is still Ctrl-C:
    one line, exit status 130; the same error without Ctrl-C is the user's error it says."""
    from flows import interrupt
    from flows.cli.main import main

    args = ["models", "show", "nosuch", "--models-dir", str(tmp_path)]
    assert main(args) == 1 and "error: no model 'nosuch'" in capsys.readouterr().err
    interrupt.requested.set()
    try:
        assert main(args) == 130
    finally:
        interrupt.requested.clear()
    assert capsys.readouterr().err.strip().splitlines() == ["denoiser models: interrupted"]

"""prefect.yaml describes the cleaning flow as it is: its entrypoint, parameters and pool."""

import inspect
from pathlib import Path

import yaml

from flows import workers

ROOT = Path(__file__).resolve().parent.parent


def test_the_deployment_file_names_the_flow_its_parameters_and_the_pool():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    path, name = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file() and name == "clean_folder"
    from flows.clean import clean_folder

    accepted = set(inspect.signature(clean_folder.fn).parameters)
    assert set(deployment["parameters"]) <= accepted
    assert deployment["work_pool"]["name"] == workers.POOL and deployment["concurrency_limit"] == 1

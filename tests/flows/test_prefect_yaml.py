"""prefect.yaml describes the cleaning flow as it is: its entrypoint, parameters and pool."""

import inspect

import yaml

from flows import workers
from tests.helpers import ROOT


def test_the_deployment_file_names_the_flow_its_parameters_and_the_pool():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    path, name = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file() and name == "clean_folder"
    from flows.clean import clean_folder

    accepted = set(inspect.signature(clean_folder.fn).parameters)
    assert set(deployment["parameters"]) <= accepted
    from dataclasses import fields

    from denoiser.folders.settings import CleanOptions, CleanRun

    for name, settings in (("options", CleanOptions), ("run", CleanRun)):  # the typed settings' fields
        assert set(deployment["parameters"].get(name, {})) <= {f.name for f in fields(settings)}
    assert deployment["work_pool"]["name"] == workers.POOL and deployment["concurrency_limit"] == {
        "limit": 1, "collision_strategy": "CANCEL_NEW"}  # runs do not pile up

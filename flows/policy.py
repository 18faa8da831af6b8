"""One retry policy and one set of task defaults for every flow.

A task is retried twice, 10 s apart, unless it failed on bad input (a ``ValueError``: bad
data, a bad option, a file that is not a checkpoint), which a retry cannot fix. Prefect
persists no result (``persist_result=False``): its stored results name their own
serializer, pickle included, so a replaced one could run code when loaded. Stages that
resume keep their own results as plain JSON (:mod:`flows.pipeline`).
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

TASK_RETRIES = 2
RETRY_DELAY_SECONDS = 10


def retry_unless_bad_input(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's hook)
    """Retry transient failures; a ValueError (bad data, bad option) fails at once."""
    try:
        state.result()
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


#: ``@task(name=..., **TASK_DEFAULTS)`` for every task of every flow.
TASK_DEFAULTS = dict(retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
                     retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, persist_result=False)
#: ``@flow(name=..., **FLOW_DEFAULTS)``
FLOW_DEFAULTS = dict(log_prints=True, persist_result=False)

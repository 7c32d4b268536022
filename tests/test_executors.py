"""perfjax.executors.RayExecutor under perfjax.tune, against serial evaluation (needs the 'ray'
extra; skipped without it)."""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path

import pytest

import perfjax
from perfjax.errors import PerfjaxError
from perfjax.study import Study

sys.path.insert(0, str(Path(__file__).parent))
import tune_kill_worker  # noqa: E402


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from perfjax.executors import RayExecutor
    with pytest.raises(PerfjaxError, match=r"pip install -e '\.\[ray\]'"):
        RayExecutor()


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="Ray is the optional 'ray' extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    yield ray
    ray.shutdown()


def test_ray_batch_matches_serial_and_a_dying_worker_is_one_failed_evaluation(ray, tmp_path):
    from perfjax.executors import RayExecutor

    space = tune_kill_worker.space()
    offset = 0.5  # a closure: Ray ships it by cloudpickle, which a process pool cannot
    serial = perfjax.tune(space, lambda c: tune_kill_worker.objective(c) + offset,
                          strategy="random", seed=4, budget=8, batch=4)
    with RayExecutor(num_cpus=1) as pool:
        parallel = perfjax.tune(space, lambda c: tune_kill_worker.objective(c) + offset,
                                strategy="random", seed=4, budget=8, batch=4, executor=pool)
    key = lambda r: (repr(sorted(r.config.items())), r.values["value"])  # noqa: E731
    assert sorted(map(key, parallel.records)) == sorted(map(key, serial.records))
    # a worker process that dies on tile 16: that evaluation fails (no retries), the run goes on
    path = tmp_path / "s.jsonl"
    with RayExecutor(num_cpus=1, max_retries=0) as pool:
        result = perfjax.tune(space, tune_kill_worker.dies_on_tile_16, strategy="random",
                              seed=2, budget=12, batch=4, study=path, executor=pool)
    assert len(result.records) == 12 == len(Study(path).records)
    died = [r for r in result.records if r.config["tile"] == 16]
    assert died and all(not r.valid and r.error.startswith("executor: ") for r in died)
    for r in result.records:
        if r.config["tile"] != 16:
            assert r.valid and r.values["value"] == tune_kill_worker.objective(r.config)


def test_ray_bad_options_fail_at_construction(ray):
    from perfjax.executors import RayExecutor

    with pytest.raises(PerfjaxError, match="bad Ray task options"):
        RayExecutor(num_cpus="many")
    pool = RayExecutor()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(len, [1])

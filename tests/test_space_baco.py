"""BaCO / HyperMapper scenario files: every fixture loads, matches its own JSON, samples feasible
configurations (by the plain-Python reference) and round-trips through to_baco_json; malformed
scenarios raise SpaceError naming the parameter or constraint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import config_to_row, ref_feasible
from perfjax import Categorical, Integer, Ordinal, Permutation, Real, Space, SpaceError

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.json"))


def test_fixtures_are_present():
    assert len(FILES) >= 20


def reference_params(data):
    """Parameters built straight from the JSON (not through perfjax's scenario reader)."""
    params = {}
    for name, spec in data["input_parameters"].items():
        kind, values = spec["parameter_type"], spec["values"]
        if kind == "real":
            params[name] = Real(values[0], values[1])
        elif kind == "integer":
            params[name] = Integer(values[0], values[1])
        elif kind == "ordinal":
            params[name] = Ordinal(values)
        elif kind == "categorical":
            params[name] = Categorical(values)
        else:
            params[name] = Permutation(values[0] if isinstance(values, list) else values)
    return params


def reference_constraints(data):
    texts = [c for spec in data["input_parameters"].values() for c in spec.get("constraints", [])]
    return texts + list(data.get("constraints", []))


def _domain(param):
    if isinstance(param, (Real, Integer)):
        return (param.kind, param.lo, param.hi, param.log)
    if isinstance(param, Ordinal):
        return (param.kind, tuple(param.values), param.log)
    if isinstance(param, Categorical):
        return (param.kind, tuple(param.values))
    return (param.kind, param.n, param.parametrization)


def _default(param):
    return list(param.default) if isinstance(param, Permutation) and param.default is not None \
        else param.default


def describe(space):
    """Everything a round trip must keep."""
    return {
        "names": list(space.names),
        "params": {n: (_domain(p), _default(p), p.prior if not isinstance(p.prior, tuple) else list(p.prior),
                       list(p.prior_parameters)) for n, p in space.params.items()},
        "constraints": Counter(c.text for c in space.constraints),
        "dependencies": {k: list(v) for k, v in space.dependencies.items()},
    }


def _check_matches_json(space, data):
    inputs = data["input_parameters"]
    assert list(space.names) == list(inputs)
    for name, spec in inputs.items():
        p = space.params[name]
        assert p.kind == spec["parameter_type"], name
        values = spec["values"]
        if p.kind in ("real", "integer"):
            assert (p.lo, p.hi) == (values[0], values[1]), name
        elif p.kind == "ordinal":
            assert list(p.values) == sorted(values), name
        elif p.kind == "categorical":
            assert list(p.values) == list(values), name
        else:
            assert p.n == (values[0] if isinstance(values, list) else values), name
            assert p.parametrization == spec.get("parametrization", "spearman").lower()
        if p.kind != "categorical" and p.kind != "permutation":
            assert p.log == (spec.get("transform", "none") == "log"), name
        assert _default(p) == spec.get("parameter_default"), name
        if "prior" in spec:
            assert (list(p.prior) if isinstance(p.prior, tuple) else p.prior) == spec["prior"], name
        deps = [d for d in spec.get("dependencies", [])]
        assert list(space.dependencies.get(name, [])) == deps, name
    assert Counter(c.text for c in space.constraints) == Counter(reference_constraints(data))


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario_loads_samples_feasibly_and_round_trips(path, tmp_path):
    data = json.loads(path.read_text())
    space = Space.from_baco_json(str(path))
    _check_matches_json(space, data)

    params, constraints = reference_params(data), reference_constraints(data)
    batch = space.sample(100, seed=0)
    configs = space.to_dicts(batch)
    assert len(configs) == 100
    bad = [c for c in configs if not ref_feasible(params, constraints, config_to_row(params, c))]
    assert not bad, bad[:3]

    exported = space.to_baco_json()
    text = json.dumps(exported)  # plain JSON, nothing numpy-typed
    for key in ("optimization_objectives", "feasible_output", "application_name"):
        if key in data:
            assert exported[key] == data[key]
    out = tmp_path / "round_trip.json"
    out.write_text(text)
    again = Space.from_baco_json(out)
    assert describe(again) == describe(space)
    _check_matches_json(again, {**data, "input_parameters": {
        n: {**spec, "values": sorted(spec["values"]) if spec["parameter_type"] == "ordinal" else spec["values"]}
        for n, spec in data["input_parameters"].items()}})
    assert again.to_baco_json() == exported
    if constraints:
        assert bool(np.asarray(again.feasible(batch)).all())


def test_scenario_sources_path_text_and_dict_agree():
    path = SCENARIOS / "baco_tests_perm.json"
    text = path.read_text()
    spaces = [Space.from_baco_json(path), Space.from_baco_json(str(path)), Space.from_baco_json(text),
              Space.from_baco_json(json.loads(text))]
    first = describe(spaces[0])
    assert all(describe(s) == first for s in spaces[1:])


def test_unknown_extra_keys_are_accepted_and_top_level_ones_kept():
    scenario = {
        "application_name": "extra", "whatever": {"nested": [1, 2]},
        "input_parameters": {
            "a": {"parameter_type": "integer", "values": [1, 8], "foo": 1, "parameter_default": 2},
            "b": {"parameter_type": "ordinal", "values": [1, 2, 4], "bar": "baz"},
        },
    }
    space = Space.from_baco_json(json.dumps(scenario))
    assert set(space.names) == {"a", "b"}
    assert space.params["a"].default == 2
    exported = space.to_baco_json()
    assert exported["whatever"] == {"nested": [1, 2]}
    assert "foo" not in exported["input_parameters"]["a"]


def _scenario(**params):
    return {"application_name": "bad", "input_parameters": params}


@pytest.mark.parametrize("scenario, fragments", [
    (_scenario(a={"parameter_type": "float", "values": [0, 1]}), ["'a'", "float"]),
    (_scenario(a={"parameter_type": "real", "values": [2.0, 1.0]}), ["'a'"]),
    (_scenario(a={"parameter_type": "integer", "values": [5, 1]}), ["'a'"]),
    (_scenario(a={"parameter_type": "real", "values": [0.0, 1.0], "transform": "log"}), ["'a'", "log"]),
    (_scenario(a={"parameter_type": "integer", "values": [-2, 8], "transform": "log"}), ["'a'", "log"]),
    (_scenario(a={"parameter_type": "ordinal", "values": [0, 1, 2], "transform": "log"}), ["'a'", "log"]),
    (_scenario(a={"parameter_type": "ordinal", "values": [1, 2, 4], "parameter_default": 3}), ["'a'", "3"]),
    (_scenario(a={"parameter_type": "categorical", "values": ["x", "y"], "parameter_default": "z"}),
     ["'a'", "'z'"]),
    (_scenario(a={"parameter_type": "integer", "values": [1, 8], "constraints": ["a + zz > 1"]}),
     ["a + zz > 1", "zz"]),
    (_scenario(a={"parameter_type": "integer", "values": [1, 8]}, b={"parameter_type": "real", "values": [0, 1]})
     | {"constraints": ["a * q <= 4"]}, ["a * q <= 4", "'q'"]),
    (_scenario(a={"parameter_type": "integer", "values": [1, 8], "constraints": ["a +* > 1"]}), ["a +* > 1"]),
    (_scenario(p={"parameter_type": "permutation"}), ["'p'", "values"]),
    (_scenario(p={"parameter_type": "permutation", "values": [5], "constraints": ["p_i7 < p_i0"]}),
     ["p_i7 < p_i0"]),
    (_scenario(a={"parameter_type": "integer", "values": [1, 8], "dependencies": ["zz"]}), ["'a'", "'zz'"]),
    (_scenario(a={"parameter_type": "integer", "values": [1, 8], "constraints": "a > 1"}), ["'a'", "constraints"]),
    (_scenario(a={"parameter_type": "real", "values": [0.0, 1.0], "parameter_default": 2.0}), ["'a'"]),
    (_scenario(a={"parameter_type": "real", "values": [0.0, float("nan")]}), ["'a'"]),
    (_scenario(a={"parameter_type": "integer", "values": [1]}), ["'a'"]),
    (_scenario(a=5), ["'a'"]),
    ({"application_name": "x"}, ["input_parameters"]),
    ({"application_name": "x", "input_parameters": {}}, ["input_parameters"]),
])
def test_malformed_scenarios_raise_space_error(scenario, fragments):
    for source in (scenario, json.dumps(scenario)):
        with pytest.raises(SpaceError) as info:
            Space.from_baco_json(source)
        for fragment in fragments:
            assert fragment in str(info.value), (fragment, str(info.value))


def test_not_json_file_raises_space_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"input_parameters": {"a": {"parameter_type": "integer", "values": [1, 8]}')
    with pytest.raises(SpaceError) as info:
        Space.from_baco_json(path)
    assert "broken.json" in str(info.value)
    path.write_text("[1, 2, 3]")
    with pytest.raises(SpaceError) as info:
        Space.from_baco_json(path)
    assert "broken.json" in str(info.value)


def test_missing_file_raises_space_error(tmp_path):
    path = tmp_path / "nowhere" / "missing.json"
    with pytest.raises(SpaceError) as info:
        Space.from_baco_json(path)
    assert "missing.json" in str(info.value)
    with pytest.raises(SpaceError):
        Space.from_baco_json(str(path))

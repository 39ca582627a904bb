"""Rights policies: canonical form and hash, contradiction rules, schema fit."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mpc_engine.policy import (
    ColumnInfo,
    ComputationKind,
    PolicyContradictions,
    PrivacyBudget,
    RightsPolicy,
    Sensitivity,
    check_against_schema,
)

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

PSI = ComputationKind.PSI
EI = ComputationKind.ENCRYPTED_INFERENCE
AGG = ComputationKind.AGGREGATE

BASE: dict[str, Any] = {
    "permitted_kinds": ["aggregate", "psi"],
    "permitted_columns": ["age", "cost", "region"],
    "join_keys": ["patient_id"],
    "purposes": ["research"],
    "prohibitions": ["marketing"],
    "regions": ["DE", "FR"],
    "min_group_size": 10,
    "budget_per_buyer": {"epsilon": 1.0, "delta": 1e-6},
    "budget_per_dataset": {"epsilon": 10.0, "delta": 1e-5},
    "column_bounds": {"age": {"lower": 0, "upper": 110}},
}


def base(**changes: Any) -> dict[str, Any]:
    """A valid policy document with top-level ``changes``."""
    doc = {k: (v.copy() if isinstance(v, dict | list) else v) for k, v in BASE.items()}
    doc.update(changes)
    return doc


def contradictions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The issues ``doc`` is rejected with (empty if it validates)."""
    try:
        RightsPolicy.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        assert len(errors) == 1, errors
        error = errors[0]["ctx"]["error"]
        assert isinstance(error, PolicyContradictions), errors
        assert str(error) == "; ".join(f"{f}: {m}" for f, m in error.issues)
        return error.issues
    return []


# -- strategies ----------------------------------------------------------------

COLUMNS = ["age", "cost", "income", "region", "visits"]
KEYS = ["patient_id", "postcode"]
PURPOSES = ["research", "billing", "audit", "fraud-detection"]
PROHIBITIONS = ["marketing", "resale", "reidentification"]
REGIONS = ["DE", "FR", "NL", "US", "JP"]


def _subset(pool: list[str], min_size: int = 0) -> st.SearchStrategy[list[str]]:
    if not pool:
        return st.just([])
    return st.lists(st.sampled_from(pool), min_size=min_size, unique=True).map(sorted)


def _bounds() -> st.SearchStrategy[dict[str, float]]:
    return st.tuples(st.integers(-1000, 1000), st.integers(1, 1000)).map(
        lambda t: {"lower": float(t[0]), "upper": float(t[0] + t[1])}
    )


@st.composite
def valid_policies(draw: st.DrawFn) -> dict[str, Any]:
    """Documents of consistent policies (every contradiction rule respected)."""
    kinds = set(draw(st.sets(st.sampled_from(list(ComputationKind)), min_size=1)))
    needs_columns = kinds - {PSI, EI}
    columns = draw(_subset(COLUMNS, min_size=1 if needs_columns else 0))
    join_keys = draw(_subset(KEYS, min_size=1)) if PSI in kinds else []
    purposes = draw(_subset(PURPOSES, min_size=1))
    prohibitions = draw(_subset(PROHIBITIONS))
    dataset_eps = draw(st.sampled_from([0.5, 1.0, 2.5, 10.0, 100.0]))
    dataset_delta = draw(st.sampled_from([0.0, 1e-7, 1e-6, 1e-5, 5e-4]))
    buyer_eps = draw(st.floats(0.01, dataset_eps))
    buyer_delta = draw(st.floats(0.0, dataset_delta))
    bounded = draw(_subset(columns))
    doc: dict[str, Any] = {
        "permitted_kinds": sorted(k.value for k in kinds),
        "permitted_columns": columns,
        "join_keys": join_keys,
        "purposes": purposes,
        "prohibitions": prohibitions,
        "regions": draw(_subset(REGIONS, min_size=1)),
        "min_group_size": draw(st.integers(2, 1_000_000)),
        "budget_per_buyer": {"epsilon": buyer_eps, "delta": buyer_delta},
        "budget_per_dataset": {"epsilon": dataset_eps, "delta": dataset_delta},
        "reveal_intersection": draw(st.booleans()) if PSI in kinds else False,
        "human_approval": draw(st.booleans()),
        "max_queries_per_buyer": draw(st.none() | st.integers(1, 10**6)),
        "inference_row_budget": draw(st.integers(1, 10**6)) if EI in kinds else None,
        "column_bounds": {name: draw(_bounds()) for name in bounded},
        "expires_at": draw(
            st.none()
            | st.datetimes(
                min_value=datetime(2025, 1, 1),
                max_value=datetime(2040, 1, 1),
                timezones=st.just(UTC),
            ).map(lambda d: d.replace(microsecond=0).isoformat())
        ),
    }
    return doc


def _shuffled(draw: st.DrawFn, values: list[Any]) -> list[Any]:
    return list(draw(st.permutations(values)))


# -- canonical form and hash ---------------------------------------------------


def test_canonical_json_shape() -> None:
    policy = RightsPolicy.model_validate(
        base(expires_at="2030-06-01T12:00:00+02:00", regions=["FR", "DE"])
    )
    text = policy.canonical_json()
    assert " " not in text
    assert '"expires_at":"2030-06-01T10:00:00Z"' in text
    assert '"regions":["DE","FR"]' in text
    assert len(policy.policy_hash()) == 64
    assert int(policy.policy_hash(), 16) >= 0
    # The canonical JSON is itself a valid, equivalent policy document.
    again = RightsPolicy.model_validate_json(text)
    assert again.canonical_json() == text


@PROPERTY
@given(st.data())
def test_canonical_json_is_stable_under_permutations(data: st.DataObject) -> None:
    doc = data.draw(valid_policies())
    first = RightsPolicy.model_validate(doc)
    shuffled = dict(doc)
    for key in (
        "permitted_kinds",
        "permitted_columns",
        "join_keys",
        "purposes",
        "prohibitions",
        "regions",
    ):
        shuffled[key] = data.draw(st.permutations(doc[key])).copy()
    bounds = list(doc["column_bounds"].items())
    shuffled["column_bounds"] = dict(data.draw(st.permutations(bounds)))
    shuffled = dict(data.draw(st.permutations(list(shuffled.items()))))
    second = RightsPolicy.model_validate(shuffled)
    assert second.canonical_json() == first.canonical_json()
    assert second.policy_hash() == first.policy_hash()
    assert second == first


@PROPERTY
@given(valid_policies(), st.integers(-12, 14))
def test_expiry_hash_depends_on_the_instant_not_the_zone(
    doc: dict[str, Any], offset_hours: int
) -> None:
    if doc["expires_at"] is None:
        doc["expires_at"] = "2031-01-01T00:00:00+00:00"
    instant = datetime.fromisoformat(doc["expires_at"])
    zone = timezone(timedelta(hours=offset_hours))
    other = {**doc, "expires_at": instant.astimezone(zone).isoformat()}
    a = RightsPolicy.model_validate(doc)
    b = RightsPolicy.model_validate(other)
    assert a.policy_hash() == b.policy_hash()


def _changes(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Valid variants of ``doc`` that each differ in one field."""
    doc = RightsPolicy.model_validate(doc).model_dump(mode="json")
    kinds = set(doc["permitted_kinds"])
    out: list[tuple[str, dict[str, Any]]] = []

    def variant(name: str, **changes: Any) -> None:
        out.append((name, {**doc, **changes}))

    variant("min_group_size", min_group_size=doc["min_group_size"] % 999_999 + 2)
    variant("human_approval", human_approval=not doc["human_approval"])
    variant("require_dp", require_dp=not doc.get("require_dp", False))
    variant(
        "max_queries_per_buyer",
        max_queries_per_buyer=None if doc["max_queries_per_buyer"] else 7,
    )
    variant("purposes", purposes=[*doc["purposes"], "teaching"])
    variant("prohibitions", prohibitions=[*doc["prohibitions"], "scraping"])
    variant("regions", regions=[*doc["regions"], "CH"])
    variant(
        "budget_per_dataset",
        budget_per_dataset={
            **doc["budget_per_dataset"],
            "delta": doc["budget_per_dataset"]["delta"] + 1e-6,
        },
    )
    variant(
        "budget_per_buyer",
        budget_per_buyer={
            **doc["budget_per_buyer"],
            "epsilon": doc["budget_per_buyer"]["epsilon"] / 2,
        },
    )
    expires = doc["expires_at"]
    variant(
        "expires_at",
        expires_at="2033-03-03T03:03:03Z"
        if expires is None
        else (datetime.fromisoformat(expires) + timedelta(seconds=1)).isoformat(),
    )
    if PSI in kinds:
        variant(
            "reveal_intersection", reveal_intersection=not doc["reveal_intersection"]
        )
        variant("join_keys", join_keys=[*doc["join_keys"], "member_no"])
    if EI in kinds:
        variant(
            "inference_row_budget", inference_row_budget=doc["inference_row_budget"] + 1
        )
    if doc["permitted_columns"]:
        first = doc["permitted_columns"][0]
        old = doc["column_bounds"].get(first, {"lower": 0.0, "upper": 1.0})
        variant(
            "column_bounds",
            column_bounds={
                **doc["column_bounds"],
                first: {**old, "upper": old["upper"] + 1},
            },
        )
    variant("permitted_columns", permitted_columns=[*doc["permitted_columns"], "zeta"])
    column_kinds = [k.value for k in ComputationKind if k not in (PSI, EI)]
    missing = [k for k in column_kinds if k not in kinds]
    if doc["permitted_columns"] and missing:
        variant(
            "permitted_kinds", permitted_kinds=[*doc["permitted_kinds"], missing[0]]
        )
    elif doc["permitted_columns"]:
        variant("permitted_kinds", permitted_kinds=sorted(kinds - {column_kinds[0]}))
    elif PSI.value not in kinds:
        variant("permitted_kinds", permitted_kinds=[*kinds, PSI.value], join_keys=["k"])
    elif EI.value not in kinds:
        variant(
            "permitted_kinds",
            permitted_kinds=[*kinds, EI.value],
            inference_row_budget=5,
        )
    else:
        variant(
            "permitted_kinds", permitted_kinds=[PSI.value], inference_row_budget=None
        )
    return out


@PROPERTY
@given(valid_policies())
def test_hash_changes_when_any_field_changes(doc: dict[str, Any]) -> None:
    original = RightsPolicy.model_validate(doc)
    seen = {original.policy_hash(): "original"}
    for name, changed in _changes(doc):
        policy = RightsPolicy.model_validate(changed)
        digest = policy.policy_hash()
        assert digest not in seen, (
            f"changing {name} kept the hash of {seen.get(digest)}"
        )
        seen[digest] = name


def test_every_field_takes_part_in_the_hash() -> None:
    """Each field of the model is covered by the change list above."""
    doc = base(
        permitted_kinds=["aggregate", "encrypted_inference", "psi"],
        inference_row_budget=100,
        max_queries_per_buyer=5,
        expires_at="2031-01-01T00:00:00Z",
    )
    changed = {name for name, _ in _changes(doc)}
    assert changed | {"policy_version"} == set(RightsPolicy.model_fields)


# -- validation of single fields -----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("permitted_kinds", []),
        ("permitted_kinds", ["aggregate", "aggregate"]),
        ("permitted_kinds", ["teleport"]),
        ("permitted_columns", ["Age"]),
        ("permitted_columns", ["1st"]),
        ("purposes", []),
        ("purposes", ["R"]),
        ("regions", []),
        ("regions", ["de"]),
        ("regions", ["DEU"]),
        ("min_group_size", 1),
        ("max_queries_per_buyer", 0),
        ("inference_row_budget", 0),
        ("expires_at", "2030-01-01T00:00:00"),
        ("budget_per_buyer", {"epsilon": 0, "delta": 0}),
        ("budget_per_buyer", {"epsilon": 1, "delta": 1e-3}),
        ("budget_per_buyer", {"epsilon": 101, "delta": 0}),
        ("budget_per_buyer", {"epsilon": float("nan"), "delta": 0}),
        ("budget_per_buyer", {"epsilon": 1, "delta": 0, "extra": 1}),
        ("column_bounds", {"age": {"lower": 5, "upper": 5}}),
        ("column_bounds", {"age": {"lower": 0, "upper": float("inf")}}),
        ("policy_version", 2),
        ("unknown_field", True),
    ],
)
def test_invalid_fields_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        RightsPolicy.model_validate(base(**{field: value}))
    assert all(e["loc"][0] == field for e in exc.value.errors())


def test_policy_is_frozen_and_budget_is_finite() -> None:
    policy = RightsPolicy.model_validate(BASE)
    with pytest.raises(ValidationError):
        policy.min_group_size = 3  # type: ignore[misc]
    assert math.isfinite(PrivacyBudget(epsilon=1, delta=0).epsilon)


# -- contradiction rules -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        (
            {"budget_per_buyer": {"epsilon": 11.0, "delta": 1e-6}},
            ["budget_per_buyer.epsilon"],
        ),
        (
            {"budget_per_buyer": {"epsilon": 1.0, "delta": 1e-4}},
            ["budget_per_buyer.delta"],
        ),
        (
            {
                "permitted_kinds": ["aggregate"],
                "join_keys": [],
                "reveal_intersection": True,
            },
            ["reveal_intersection"],
        ),
        ({"permitted_kinds": ["aggregate"]}, ["join_keys"]),
        ({"join_keys": []}, ["join_keys"]),
        ({"purposes": ["marketing", "research"]}, ["prohibitions"]),
        ({"join_keys": ["age"]}, ["join_keys"]),
        (
            {"permitted_kinds": ["aggregate", "encrypted_inference", "psi"]},
            ["inference_row_budget"],
        ),
        ({"inference_row_budget": 10}, ["inference_row_budget"]),
        ({"permitted_columns": [], "column_bounds": {}}, ["permitted_columns"]),
        (
            {
                "column_bounds": {
                    "age": {"lower": 0, "upper": 1},
                    "weight": {"lower": 0, "upper": 1},
                }
            },
            ["column_bounds.weight"],
        ),
    ],
    ids=[
        "buyer-epsilon",
        "buyer-delta",
        "reveal-without-psi",
        "join-keys-without-psi",
        "psi-without-join-keys",
        "purpose-prohibited",
        "join-key-computed",
        "inference-without-budget",
        "budget-without-inference",
        "no-columns",
        "bounds-for-unpermitted",
    ],
)
def test_each_contradiction_names_its_field(
    changes: dict[str, Any], fields: list[str]
) -> None:
    assert contradictions(base()) == []
    issues = contradictions(base(**changes))
    assert [f for f, _ in issues] == fields
    assert all(message for _, message in issues)


def test_contradictions_are_all_reported_at_once() -> None:
    issues = contradictions(
        base(
            permitted_kinds=["federated_train", "encrypted_model_eval"],
            permitted_columns=[],
            purposes=["marketing"],
            reveal_intersection=True,
            inference_row_budget=5,
            budget_per_buyer={"epsilon": 20.0, "delta": 1e-4},
        )
    )
    assert Counter(f for f, _ in issues) == Counter(
        [
            "budget_per_buyer.epsilon",
            "budget_per_buyer.delta",
            "reveal_intersection",
            "join_keys",
            "prohibitions",
            "inference_row_budget",
            "permitted_columns",
            "column_bounds.age",
        ]
    )


def expected_contradictions(doc: dict[str, Any]) -> list[str]:
    """The fields the rules of DESIGN §5 object to, computed independently."""
    kinds = set(doc["permitted_kinds"])
    columns, keys = set(doc["permitted_columns"]), set(doc["join_keys"])
    fields = []
    if doc["budget_per_buyer"]["epsilon"] > doc["budget_per_dataset"]["epsilon"]:
        fields.append("budget_per_buyer.epsilon")
    if doc["budget_per_buyer"]["delta"] > doc["budget_per_dataset"]["delta"]:
        fields.append("budget_per_buyer.delta")
    if doc["reveal_intersection"] and "psi" not in kinds:
        fields.append("reveal_intersection")
    if ("psi" in kinds) != bool(keys):
        fields.append("join_keys")
    if set(doc["purposes"]) & set(doc["prohibitions"]):
        fields.append("prohibitions")
    if keys & columns:
        fields.append("join_keys")
    if ("encrypted_inference" in kinds) != (doc["inference_row_budget"] is not None):
        fields.append("inference_row_budget")
    if kinds - {"psi", "encrypted_inference"} and not columns:
        fields.append("permitted_columns")
    fields.extend(f"column_bounds.{c}" for c in set(doc["column_bounds"]) - columns)
    return sorted(fields)


@st.composite
def arbitrary_policies(draw: st.DrawFn) -> dict[str, Any]:
    """Field-valid documents whose fields may contradict each other."""
    eps = st.sampled_from([0.5, 1.0, 2.0, 50.0])
    delta = st.sampled_from([0.0, 1e-6, 1e-5])
    return {
        "permitted_kinds": draw(
            _subset([k.value for k in ComputationKind], min_size=1)
        ),
        "permitted_columns": draw(_subset(["age", "cost", "postcode"])),
        "join_keys": draw(_subset(["patient_id", "postcode"])),
        "purposes": draw(_subset(["research", "marketing", "audit"], min_size=1)),
        "prohibitions": draw(_subset(["marketing", "resale"])),
        "regions": ["DE"],
        "budget_per_buyer": {"epsilon": draw(eps), "delta": draw(delta)},
        "budget_per_dataset": {"epsilon": draw(eps), "delta": draw(delta)},
        "reveal_intersection": draw(st.booleans()),
        "inference_row_budget": draw(st.none() | st.just(100)),
        "column_bounds": {
            name: {"lower": 0, "upper": 1}
            for name in draw(_subset(["age", "cost", "weight"]))
        },
    }


@settings(PROPERTY, max_examples=200)
@given(arbitrary_policies())
def test_contradiction_rules_match_their_specification(doc: dict[str, Any]) -> None:
    issues = contradictions(doc)
    assert sorted(f for f, _ in issues) == expected_contradictions(doc)


@PROPERTY
@given(valid_policies())
def test_generated_consistent_policies_validate(doc: dict[str, Any]) -> None:
    assert contradictions(doc) == []
    assert expected_contradictions(doc) == []


# -- fit against the dataset schema --------------------------------------------

SCHEMA = [
    ColumnInfo("patient_id", numeric=False, sensitivity=Sensitivity.IDENTIFIER),
    ColumnInfo("age", numeric=True, sensitivity=Sensitivity.QUASI_IDENTIFIER),
    ColumnInfo("region", numeric=False, sensitivity=Sensitivity.PUBLIC),
    ColumnInfo("cost", numeric=True, sensitivity=Sensitivity.SENSITIVE),
    ColumnInfo("postcode", numeric=False, sensitivity=Sensitivity.QUASI_IDENTIFIER),
]


def _fit(**changes: Any) -> list[str]:
    bounds = {"age": {"lower": 0, "upper": 110}, "cost": {"lower": 0, "upper": 1e5}}
    policy = RightsPolicy.model_validate(base(**{"column_bounds": bounds, **changes}))
    issues = check_against_schema(policy, SCHEMA)
    assert all(message for _, message in issues)
    return [f for f, _ in issues]


def test_a_fitting_policy_has_no_issues() -> None:
    assert _fit() == []


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        (
            {"permitted_columns": ["age", "cost", "region", "weight"]},
            ["permitted_columns.weight"],
        ),
        (
            {
                "permitted_columns": ["age", "cost", "region", "visit_id"],
                "join_keys": ["postcode"],
            },
            ["permitted_columns.visit_id"],
        ),
        ({"join_keys": ["member_no"]}, ["join_keys.member_no"]),
        ({"join_keys": ["patient_id", "zip"]}, ["join_keys.zip"]),
        (
            {"permitted_columns": ["age", "cost"], "join_keys": ["region"]},
            ["join_keys.region"],
        ),
        (
            {
                "permitted_columns": ["age", "region"],
                "join_keys": ["cost"],
                "column_bounds": {"age": {"lower": 0, "upper": 1}},
            },
            ["join_keys.cost"],
        ),
        (
            {
                "column_bounds": {
                    "age": {"lower": 0, "upper": 1},
                    "cost": {"lower": 0, "upper": 1},
                    "region": {"lower": 0, "upper": 1},
                }
            },
            ["column_bounds.region"],
        ),
        ({"column_bounds": {"age": {"lower": 0, "upper": 1}}}, ["column_bounds.cost"]),
    ],
    ids=[
        "unknown-column",
        "unknown-column-2",
        "unknown-join-key",
        "one-unknown-join-key",
        "public-join-key",
        "sensitive-join-key",
        "bounds-on-text",
        "missing-bounds",
    ],
)
def test_schema_rules(changes: dict[str, Any], fields: list[str]) -> None:
    assert _fit(**changes) == fields


def test_identifier_columns_may_only_be_join_keys() -> None:
    fields = _fit(
        permitted_columns=["age", "cost", "patient_id"], join_keys=["postcode"]
    )
    assert fields == ["permitted_columns.patient_id"]


def test_missing_bounds_only_matter_for_aggregate() -> None:
    assert (
        _fit(
            column_bounds={"age": {"lower": 0, "upper": 1}},
            permitted_kinds=["psi", "secure_aggregate"],
        )
        == []
    )


@st.composite
def schema_cases(draw: st.DrawFn) -> tuple[RightsPolicy, list[ColumnInfo]]:
    names = ["a", "b", "c", "d", "e"]
    schema = [
        ColumnInfo(n, draw(st.booleans()), draw(st.sampled_from(list(Sensitivity))))
        for n in draw(_subset(names))
    ]
    columns = draw(_subset(["a", "b", "c"]))
    kinds = draw(
        _subset(["aggregate", "secure_aggregate", "federated_train"], min_size=1)
    )
    policy = RightsPolicy.model_validate(
        {
            "permitted_kinds": [*kinds, "psi"],
            "permitted_columns": columns or ["a"],
            "join_keys": draw(_subset(["d", "e"], min_size=1)),
            "purposes": ["research"],
            "regions": ["DE"],
            "budget_per_buyer": {"epsilon": 1, "delta": 0},
            "budget_per_dataset": {"epsilon": 1, "delta": 0},
            "column_bounds": {
                n: {"lower": 0, "upper": 1} for n in draw(_subset(columns or ["a"]))
            },
        }
    )
    return policy, schema


@PROPERTY
@given(schema_cases())
def test_schema_rules_match_their_specification(
    case: tuple[RightsPolicy, list[ColumnInfo]],
) -> None:
    policy, schema = case
    by_name = {c.name: c for c in schema}
    expected = []
    for name in policy.permitted_columns:
        col = by_name.get(name)
        if col is None or col.sensitivity is Sensitivity.IDENTIFIER:
            expected.append(f"permitted_columns.{name}")
    for name in policy.join_keys:
        col = by_name.get(name)
        if col is None or col.sensitivity not in (
            Sensitivity.IDENTIFIER,
            Sensitivity.QUASI_IDENTIFIER,
        ):
            expected.append(f"join_keys.{name}")
    for name in policy.column_bounds:
        col = by_name.get(name)
        if col is not None and not col.numeric:
            expected.append(f"column_bounds.{name}")
    if AGG in policy.permitted_kinds:
        for name in policy.permitted_columns:
            col = by_name.get(name)
            if col is not None and col.numeric and name not in policy.column_bounds:
                expected.append(f"column_bounds.{name}")
    issues = check_against_schema(policy, schema)
    assert sorted(f for f, _ in issues) == sorted(expected)
    # The check only reads: the same inputs give the same answer.
    assert check_against_schema(policy, schema) == issues

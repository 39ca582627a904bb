"""The rights policy model, its canonical JSON form and its consistency rules."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_TOKEN = r"^[a-z][a-z0-9_-]{1,47}$"  # noqa: S105 - a regex, not a secret

ColumnName = Annotated[str, Field(pattern=_NAME, description="A column name.")]
Token = Annotated[
    str, Field(pattern=_TOKEN, description="A lower-case purpose or use token.")
]
RegionCode = Annotated[
    str, Field(pattern=r"^[A-Z]{2}$", description="An ISO 3166-1 alpha-2 code.")
]


class ComputationKind(StrEnum):
    """The computation templates of DESIGN §4."""

    AGGREGATE = "aggregate"
    ENCRYPTED_MODEL_EVAL = "encrypted_model_eval"
    ENCRYPTED_INFERENCE = "encrypted_inference"
    PSI = "psi"
    SECURE_AGGREGATE = "secure_aggregate"
    FEDERATED_TRAIN = "federated_train"


class Sensitivity(StrEnum):
    """How sensitive a column is, which decides how it may be used."""

    IDENTIFIER = "identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE = "sensitive"
    PUBLIC = "public"


class PolicyContradictions(ValueError):
    """Raised when a policy's fields contradict each other.

    ``issues`` holds ``(field, reason)`` pairs so the API can report each field.
    """

    def __init__(self, issues: Sequence[tuple[str, str]]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(f"{f}: {m}" for f, m in self.issues))


class PrivacyBudget(BaseModel):
    """A differential-privacy budget (ε, δ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0, le=100, description="Total ε that may be spent.")
    delta: float = Field(
        ge=0, lt=1e-3, description="Total δ that may be spent (0 for pure DP)."
    )

    @field_validator("epsilon", "delta")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ColumnBounds(BaseModel):
    """Clamping bounds for a numeric column; DP sensitivity derives from them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: float
    upper: float

    @model_validator(mode="after")
    def _ordered(self) -> ColumnBounds:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError("bounds must be finite numbers")
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class RightsPolicy(BaseModel):
    """What a buyer may compute on a dataset, for which purposes, within which budget.

    The policy is canonicalised (sets sorted, keys sorted, no whitespace) before
    hashing, so two policies that mean the same have the same hash.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_version: Literal[1] = 1
    permitted_kinds: list[ComputationKind] = Field(min_length=1)
    permitted_columns: list[ColumnName] = Field(default_factory=list)
    join_keys: list[ColumnName] = Field(
        default_factory=list,
        description="Identifier columns usable only as PSI join keys.",
    )
    purposes: list[Token] = Field(min_length=1)
    prohibitions: list[Token] = Field(default_factory=list)
    regions: list[RegionCode] = Field(
        min_length=1, description="Buyer regions allowed (ISO 3166-1 alpha-2)."
    )
    expires_at: datetime | None = None
    max_queries_per_buyer: int | None = Field(default=None, ge=1)
    min_group_size: int = Field(default=10, ge=2, le=1_000_000)
    budget_per_buyer: PrivacyBudget
    budget_per_dataset: PrivacyBudget
    reveal_intersection: bool = False
    human_approval: bool = False
    require_dp: bool = Field(
        default=False,
        description="Aggregates may only be released with differential privacy: no "
        "exact mode (closes differencing attacks on exact, thresholded releases and "
        "exact quantiles, which reveal real values).",
    )
    inference_row_budget: int | None = Field(
        default=None,
        ge=1,
        description="Rows a buyer may score with encrypted_inference (model-"
        "extraction guard).",
    )
    column_bounds: dict[ColumnName, ColumnBounds] = Field(default_factory=dict)

    @field_validator(
        "permitted_kinds",
        "permitted_columns",
        "join_keys",
        "purposes",
        "prohibitions",
        "regions",
    )
    @classmethod
    def _unique_sorted(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate entries: {', '.join(map(str, dupes))}")
        return sorted(value)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("must include a time zone (e.g. 2027-01-01T00:00:00Z)")
        # Whole seconds in UTC: the stored form is exactly the hashed form.
        return value.astimezone(UTC).replace(microsecond=0) if value else value

    @model_validator(mode="after")
    def _consistent(self) -> RightsPolicy:
        issues = list(_contradictions(self))
        if issues:
            raise PolicyContradictions(issues)
        return self

    def canonical_json(self) -> str:
        """Return the canonical JSON form: sorted keys, no spaces, UTC times."""
        data = self.model_dump(mode="json")
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at.astimezone(UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def policy_hash(self) -> str:
        """Return the SHA-256 of the canonical JSON, hex-encoded."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _contradictions(p: RightsPolicy) -> Iterable[tuple[str, str]]:
    kinds = set(p.permitted_kinds)
    if p.budget_per_buyer.epsilon > p.budget_per_dataset.epsilon:
        yield (
            "budget_per_buyer.epsilon",
            f"{p.budget_per_buyer.epsilon} exceeds the dataset's total "
            f"{p.budget_per_dataset.epsilon}",
        )
    if p.budget_per_buyer.delta > p.budget_per_dataset.delta:
        yield (
            "budget_per_buyer.delta",
            f"{p.budget_per_buyer.delta} exceeds the dataset's total "
            f"{p.budget_per_dataset.delta}",
        )
    if p.reveal_intersection and ComputationKind.PSI not in kinds:
        yield ("reveal_intersection", "requires 'psi' in permitted_kinds")
    if p.join_keys and ComputationKind.PSI not in kinds:
        yield ("join_keys", "join keys are only used by 'psi', which is not permitted")
    if ComputationKind.PSI in kinds and not p.join_keys:
        yield ("join_keys", "'psi' is permitted, so at least one join key is needed")
    both = sorted(set(p.purposes) & set(p.prohibitions))
    if both:
        yield ("prohibitions", f"also listed as permitted purposes: {', '.join(both)}")
    overlap = sorted(set(p.join_keys) & set(p.permitted_columns))
    if overlap:
        yield (
            "join_keys",
            f"also in permitted_columns: {', '.join(overlap)}; a join key may only "
            "be matched, never computed on",
        )
    if ComputationKind.ENCRYPTED_INFERENCE in kinds and p.inference_row_budget is None:
        yield (
            "inference_row_budget",
            "required when 'encrypted_inference' is permitted (d+1 chosen rows "
            "reveal a linear model)",
        )
    if (
        p.inference_row_budget is not None
        and ComputationKind.ENCRYPTED_INFERENCE not in kinds
    ):
        yield (
            "inference_row_budget",
            "set, but 'encrypted_inference' is not permitted",
        )
    needs_columns = kinds - {ComputationKind.PSI, ComputationKind.ENCRYPTED_INFERENCE}
    if needs_columns and not p.permitted_columns:
        yield (
            "permitted_columns",
            f"empty, but {', '.join(sorted(needs_columns))} need columns to compute on",
        )
    for name in sorted(set(p.column_bounds) - set(p.permitted_columns)):
        yield (
            f"column_bounds.{name}",
            "bounds given for a column that is not permitted",
        )


@dataclass(frozen=True)
class ColumnInfo:
    """The facts about a dataset column that a policy is checked against."""

    name: str
    numeric: bool
    sensitivity: Sensitivity


def check_against_schema(
    policy: RightsPolicy, columns: Sequence[ColumnInfo]
) -> list[tuple[str, str]]:
    """Return ``(field, reason)`` for each way ``policy`` does not fit the schema."""
    by_name = {c.name: c for c in columns}
    issues: list[tuple[str, str]] = []
    for name in policy.permitted_columns:
        col = by_name.get(name)
        if col is None:
            issues.append((f"permitted_columns.{name}", "no such column in the schema"))
        elif col.sensitivity is Sensitivity.IDENTIFIER:
            issues.append(
                (
                    f"permitted_columns.{name}",
                    "an identifier column may only be a join key",
                )
            )
    for name in policy.join_keys:
        col = by_name.get(name)
        if col is None:
            issues.append((f"join_keys.{name}", "no such column in the schema"))
        elif col.sensitivity not in (
            Sensitivity.IDENTIFIER,
            Sensitivity.QUASI_IDENTIFIER,
        ):
            issues.append(
                (
                    f"join_keys.{name}",
                    f"a join key must be an identifier or quasi-identifier column, "
                    f"not {col.sensitivity.value}",
                )
            )
    for name in policy.column_bounds:
        col = by_name.get(name)
        if col is not None and not col.numeric:
            issues.append(
                (f"column_bounds.{name}", "bounds apply to numeric columns only")
            )
    if ComputationKind.AGGREGATE in policy.permitted_kinds:
        for name in policy.permitted_columns:
            col = by_name.get(name)
            if col is not None and col.numeric and name not in policy.column_bounds:
                issues.append(
                    (
                        f"column_bounds.{name}",
                        "required for a numeric column permitted in 'aggregate' "
                        "(DP clamping and sensitivity derive from it)",
                    )
                )
    return issues

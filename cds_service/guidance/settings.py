"""Clinical settings: thresholds, look-back windows, indicators and which rules are enabled.

The defaults come from the knowledge file ``thresholds.json`` (each value there cites its source),
so a clinician can review them as data. Operators override them with a JSON file
(``CDS_GUIDANCE_FILE``) whose keys are the field names below; unknown keys are an error, so a typo
cannot silently leave a default in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from cds_service.guidance.cards import Indicator
from cds_service.knowledge import load_knowledge

ThresholdMode = Literal["fixed", "age-bands"]

ALL_RULES: tuple[str, ...] = (
    "rehab-referral",
    "opioid-active",
    "opioid-order",
    "corticosteroid-order",
    "passive-modality-order",
    "rehab-intensity",
    "imaging-radiograph-first",
    "imaging-mri-hip",
    "assessment-gaps",
    "pots-management",
    "possible-hypermobility",
)


def _threshold(name: str) -> Any:
    return load_knowledge().thresholds[name]


# The settings that are whole numbers of days (checked in GuidanceSettings.__post_init__).
WHOLE_NUMBERS = (
    "chronic_pain_days",
    "rehab_lookback_days",
    "psych_screen_lookback_days",
)


def _whole(value: Any) -> Any:
    """365.0 as 365; anything else as it is, for the checks to judge."""
    return int(value) if type(value) is float and value.is_integer() else value


@dataclass(frozen=True)
class GuidanceSettings:
    """Every number a rule compares against, with defaults read from ``thresholds.json``."""

    beighton_threshold_mode: ThresholdMode = "fixed"
    beighton_fixed_threshold: int = field(default_factory=lambda: _threshold("beighton_fixed"))
    # (minimum age in years, threshold) pairs, highest minimum first; see thresholds.json.
    beighton_age_bands: tuple[tuple[int, int], ...] = field(
        default_factory=lambda: tuple(
            (int(band["min_age"]), int(band["threshold"]))
            for band in sorted(_threshold("beighton_age_bands"), key=lambda b: -b["min_age"])
        )
    )
    chronic_pain_days: int = field(default_factory=lambda: _threshold("chronicity_days"))
    programme_min_hours: float = field(default_factory=lambda: _threshold("programme_min_hours"))
    rehab_lookback_days: int = field(default_factory=lambda: _threshold("rehab_lookback_days"))
    psych_screen_lookback_days: int = field(
        default_factory=lambda: _threshold("psych_screen_lookback_days")
    )
    enabled_rules: frozenset[str] = frozenset(ALL_RULES)
    indicators: Mapping[str, Indicator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Numbers of the right kind, checked here: a guidance file's "4" (a string) passed
        # startup and then failed every call that compared with it.
        for name in WHOLE_NUMBERS:
            value = getattr(self, name)
            # At most a century of days (a million overflowed the date arithmetic).
            if type(value) is not int or not 0 <= value <= 36_500:
                raise ValueError(f"{name} must be a whole number from 0 to 36500")
        threshold = self.beighton_fixed_threshold
        if type(threshold) is not int or not 0 <= threshold <= 9:  # the score runs from 0 to 9
            raise ValueError("beighton_fixed_threshold must be a whole number from 0 to 9")
        bands = self.beighton_age_bands
        if (
            not all(
                isinstance(band, tuple)
                and len(band) == 2
                and all(type(n) is int for n in band)
                and band[0] >= 0
                and 0 <= band[1] <= 9  # the Beighton score runs from 0 to 9
                for band in bands
            )
            or list(bands) != sorted(bands, key=lambda band: -band[0])
            or len({age for age, _ in bands}) != len(bands)
        ):
            raise ValueError(
                "beighton_age_bands must be (minimum age, threshold 0 to 9) pairs of whole "
                "numbers, each minimum age once, highest first"
            )
        hours = self.programme_min_hours
        if type(hours) not in (int, float) or not 0 <= hours < float("inf"):
            raise ValueError("programme_min_hours must be a number, at least 0")
        unknown = set(self.enabled_rules) - set(ALL_RULES)
        if unknown:
            raise ValueError(f"unknown rule ids in enabled_rules: {sorted(unknown)}")
        if self.beighton_threshold_mode not in get_args(ThresholdMode):
            raise ValueError("beighton_threshold_mode must be 'fixed' or 'age-bands'")
        for rule_id, indicator in self.indicators.items():
            if rule_id not in ALL_RULES or indicator not in get_args(Indicator):
                raise ValueError(f"bad indicator override {rule_id}={indicator}")

    def to_mapping(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GuidanceSettings:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown guidance settings: {sorted(unknown)}")
        values = dict(data)
        if "enabled_rules" in values:
            values["enabled_rules"] = frozenset(values["enabled_rules"])
        for name in (*WHOLE_NUMBERS, "beighton_fixed_threshold"):  # JSON may give 365.0
            if name in values:
                values[name] = _whole(values[name])
        if "beighton_age_bands" in values:
            # Highest minimum age first, as threshold_for reads them, whatever the file's order;
            # __post_init__ checks the rest (a value of the wrong type fails here as a TypeError).
            bands = [tuple(_whole(n) for n in band) for band in values["beighton_age_bands"]]
            values["beighton_age_bands"] = tuple(sorted(bands, key=lambda band: -band[0]))
        if "indicators" in values:
            values["indicators"] = dict(values["indicators"])
        return cls(**values)

    def indicator(self, rule_id: str, default: Indicator) -> Indicator:
        return self.indicators.get(rule_id, default)

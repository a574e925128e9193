"""One module per rule of ``rules.md``; :data:`ALL` lists them in catalogue order."""

from cds_service.guidance.rules import (
    assessment_gaps,
    corticosteroid_order,
    imaging_mri_hip,
    imaging_radiograph_first,
    opioid_active,
    opioid_order,
    passive_modality_order,
    possible_hypermobility,
    pots_management,
    rehab_intensity,
    rehab_referral,
)

ALL = (
    rehab_referral.RULE,
    opioid_active.RULE,
    opioid_order.RULE,
    corticosteroid_order.RULE,
    passive_modality_order.RULE,
    rehab_intensity.RULE,
    imaging_radiograph_first.RULE,
    imaging_mri_hip.RULE,
    assessment_gaps.RULE,
    pots_management.RULE,
    possible_hypermobility.RULE,
)

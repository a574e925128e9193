"""One module per rule of ``rules.md``; :data:`ALL` lists them in catalogue order."""

from cds_service.guidance.rules import (
    imaging_radiograph_first,
    opioid_order,
    rehab_referral,
)

ALL = (
    rehab_referral.RULE,
    opioid_order.RULE,
    imaging_radiograph_first.RULE,
)

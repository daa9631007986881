"""Identity resolution: salted hashes of normalised identifiers on the advertiser's side
(`hashing`), Splink linkage of CRM records to each other and to logged user ids (`linkage`),
pairwise precision and recall against labels (`evaluate`), a synthetic CRM (`synthetic`)."""

from openbid.insights.identity.evaluate import Scores, pairwise_scores
from openbid.insights.identity.hashing import (
    hash_identifier,
    hash_records,
    load_salt,
    normalise_email,
    normalise_phone,
)
from openbid.insights.identity.linkage import LinkResult, link, prepare
from openbid.insights.identity.synthetic import synthetic_crm

__all__ = [
    "LinkResult",
    "Scores",
    "hash_identifier",
    "hash_records",
    "link",
    "load_salt",
    "normalise_email",
    "normalise_phone",
    "pairwise_scores",
    "prepare",
    "synthetic_crm",
]

"""Request facts: from the feature map the exchange logs and from the `AuctionContext`
directly, the same facts; an impression's slots and deals."""

from datetime import UTC, datetime

import pytest

from openbid.campaigns.targeting import imp_facts, request_facts, request_facts_from_context
from openbid.domain import Publisher
from openbid.enrich import build_auction_context
from openbid.exchange.features import auction_features
from openbid.openrtb import decode_bid_request
from openbid.sim import Market

NOW = 1_709_726_400_000_000


@pytest.mark.parametrize(
    "publisher", [None, Publisher("pub-9", "P", 0, ("IAB25",), ("x.example",))]
)
def test_facts_from_the_context_equal_facts_from_the_feature_map(publisher):
    batch = Market.load("default").generate(300, seed=11)
    moment = datetime.fromtimestamp(NOW / 1e6, UTC)
    for body in batch.bodies:
        request = decode_bid_request(body)
        context = build_auction_context(request, now=moment)
        features = auction_features(request, context, publisher)
        blocked_categories = list(request.bcat or ()) + list(
            publisher.blocked_categories if publisher else ()
        )
        blocked_adomains = list(request.badv or ()) + list(
            publisher.blocked_adomains if publisher else ()
        )
        assert request_facts_from_context(context, publisher, now_micros=NOW) == request_facts(
            features,
            now_micros=NOW,
            blocked_categories=blocked_categories,
            blocked_adomains=blocked_adomains,
        )


def test_an_impression_offers_every_format_it_accepts():
    request = decode_bid_request(
        b'{"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250, "format":'
        b' [{"w": 300, "h": 250}, {"w": 336, "h": 280}]}, "video": {"mimes": ["video/mp4"]},'
        b' "native": {"request": "{\\"assets\\": [{\\"id\\": 1, \\"title\\": {\\"len\\": 25}}]}"}}]}'
    )
    facts = imp_facts(request.imp[0])
    assert facts.slots == ("banner:300x250", "banner:336x280", "video:", "native")
    assert (facts.deals, facts.private_auction) == ((), False)

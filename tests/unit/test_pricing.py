"""Prices: read from a Price List API answer (GetProducts), else the built-in table, and
every price shown says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msctl import costs, pricing
from msctl.config import load_config
from msctl.pricing import Prices

ROOT = Path(__file__).resolve().parents[2]


def product(sku: str, family: str, service: str, attributes: dict, unit: str, usd: str) -> str:
    """One PriceList entry as GetProducts returns it: a JSON document in a string."""
    term = f"{sku}.JRTCKXETXF"
    return json.dumps(
        {
            "product": {
                "productFamily": family,
                "attributes": {
                    "regionCode": "us-east-1",
                    "location": "US East (N. Virginia)",
                    "locationType": "AWS Region",
                    "servicecode": service,
                    **attributes,
                },
                "sku": sku,
            },
            "serviceCode": service,
            "terms": {
                "OnDemand": {
                    term: {
                        "priceDimensions": {
                            f"{term}.6YS6EN2CT7": {
                                "unit": unit,
                                "endRange": "Inf",
                                "description": f"${usd} per {unit}",
                                "appliesTo": [],
                                "rateCode": f"{term}.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2024-05-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20240508191027",
            "publicationDate": "2024-05-08T19:10:27Z",
        }
    )


RDS = {
    "instanceType": "db.t3.micro",
    "databaseEngine": "PostgreSQL",
    "deploymentOption": "Single-AZ",
}
# (service, sku, product family, usage type, unit, USD, more attributes): the products the
# Price List API answers GetProducts with for msctl's filters in us-east-1, two of them with
# a non-hourly price beside the hourly one.
ROWS = [
    ("AmazonEC2", "M2YSHUBETB3JX4M4", "NAT Gateway", "NatGateway-Bytes", "GB", "0.0450000000", {}),
    ("AmazonEC2", "M2YSHUBETB3JX4M5", "NAT Gateway", "NatGateway-Hours", "Hrs", "0.0460000000", {}),
    ("AmazonVPC", "X8GV4T4QW5XUDQT7", "VpcPublicIPv4Address", "PublicIPv4:IdleAddress", "Hrs",
     "0.0050000000", {}),
    ("AmazonVPC", "X8GV4T4QW5XUDQT8", "VpcPublicIPv4Address", "PublicIPv4:InUseAddress", "Hrs",
     "0.0051000000", {}),
    ("AWSELB", "ZNA7VG7ZWA6RE5T9", "Load Balancer-Application", "LCUUsage", "LCU-Hrs",
     "0.0080000000", {}),
    ("AWSELB", "ZNA7VG7ZWA6RE5TA", "Load Balancer-Application", "LoadBalancerUsage", "Hrs",
     "0.0226000000", {}),
    ("AmazonECS", "8CESGAFWKAJ98PME", "Compute", "Fargate-vCPU-Hours:perCPU", "hours",
     "0.0404800000", {}),
    ("AmazonECS", "PWGPT4UR6UHM2TXB", "Compute", "Fargate-GB-Hours", "hours", "0.0044450000", {}),
    ("AmazonRDS", "3RWTT6X3Y7JD3J4Q", "Database Instance", "InstanceUsage:db.t3.micro", "Hrs",
     "0.0190000000", RDS),
]  # fmt: skip
ANSWERS: dict[str, list[str]] = {}
for service, sku, family, usage, unit, usd, more in ROWS:
    attributes = {"usagetype": usage, **more}
    ANSWERS.setdefault(service, []).append(product(sku, family, service, attributes, unit, usd))


class PriceListClient:
    """GetProducts answering from ANSWERS, in pages of one entry."""

    def __init__(self):
        self.asked: list[tuple[str, dict]] = []

    def get_products(self, ServiceCode, Filters, FormatVersion, NextToken=None):  # noqa: N803
        self.asked.append((ServiceCode, {f["Field"]: f["Value"] for f in Filters}))
        entries = ANSWERS[ServiceCode]
        at = int(NextToken or 0)
        page = {"FormatVersion": FormatVersion, "PriceList": entries[at : at + 1]}
        if at + 1 < len(entries):
            page["NextToken"] = str(at + 1)
        return page


def test_a_price_list_answer_is_read_for_the_hourly_on_demand_price():
    assert pricing.hourly_price(ANSWERS["AmazonEC2"], "NatGateway-Hours") == 0.046
    assert pricing.hourly_price(ANSWERS["AmazonEC2"], "NatGateway-Bytes") is None  # per GB
    assert pricing.hourly_price(ANSWERS["AmazonVPC"], "PublicIPv4:InUseAddress") == 0.0051
    assert pricing.hourly_price([], "NatGateway-Hours") is None


def test_prices_from_the_api():
    client = PriceListClient()
    found = pricing.fetch(client, "us-east-1", ("db.t3.micro",))
    assert (found.nat_gateway, found.public_ipv4, found.alb) == (0.046, 0.0051, 0.0226)
    assert (found.fargate_vcpu, found.fargate_gb) == (0.04048, 0.004445)
    assert found.rds["db.t3.micro"] == 0.019
    assert found.label == "prices: AWS Price List API"
    assert all(filters["regionCode"] == "us-east-1" for _, filters in client.asked)
    rds = next(f for service, f in client.asked if service == "AmazonRDS")
    assert rds["instanceType"] == "db.t3.micro" and rds["databaseEngine"] == "PostgreSQL"

    config = load_config(ROOT / "config" / "lab.yaml")
    items = {b.kind: b.hourly for b in costs.billable(config, found)}
    assert items["NAT gateway"] == 0.046
    assert items["Load balancer"] == pytest.approx(0.0226 + 2 * 0.0051)


class Unreachable:
    def client(self, *args, **kwargs):
        return self

    def get_products(self, **kwargs):
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com/")


def test_the_built_in_table_when_the_api_is_unreachable_and_it_says_so():
    found = pricing.prices(Unreachable(), "eu-west-3", "http://127.0.0.1:1")
    assert found.source == "built-in table"
    assert found.nat_gateway == costs.NAT_GATEWAY
    assert found.label.startswith("prices: built-in table (Price List API unreachable: ")
    assert "api.pricing.us-east-1.amazonaws.com" in found.label
    # One look-up per run: the second answer is the cached one.
    assert pricing.prices(None, "eu-west-3", "http://127.0.0.1:1") is found
    assert Prices().label == "prices: built-in table"

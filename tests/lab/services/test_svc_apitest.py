"""`msctl test-api`'s scenario (msctl.apitest) against the lab in-process behind its API
Gateway (lab_gateway.py): every check passes, with and without the admin, and what it
created is gone afterwards, also when a check failed."""

from __future__ import annotations

import asyncio

import boto3
import pytest
from lab_gateway import World, serve, users_table
from lab_helpers import BUCKET, SESSIONS_TABLE

from msctl import apitest


@pytest.fixture
def world(aws, handlers, products_app, orders_app) -> World:
    return World(handlers, products_app, orders_app)


def everything(world: World) -> dict:
    """What the lab holds, except notifications (no API deletes them)."""
    sessions = boto3.resource("dynamodb").Table(SESSIONS_TABLE).scan()["Items"]
    return {
        "users": sorted(i["userId"] for i in users_table().scan()["Items"]),
        "sessions": sorted(s["sessionId"] for s in sessions),
        "products": world.direct["products"].get("/products").json,
        "orders": world.direct["orders"].get("/orders", headers={"X-Authorized-User-Id": "x"}).json,
    }


def scenario(world: World, admin: bool, **kwargs) -> list[apitest.CheckResult]:
    async def run():
        async with serve(world) as url:
            login = (world.admin.email, world.admin.password) if admin else None
            return await apitest.run_scenario(url, admin=login, **kwargs)

    return asyncio.run(run())


@pytest.mark.parametrize("admin", [True, False], ids=["with the admin", "without"])
def test_every_check_passes_and_nothing_it_made_stays(world, admin):
    before = everything(world)
    results = scenario(world, admin)
    failed = [(r.name, r.detail) for r in results if not r.ok]
    assert not failed, failed
    names = [r.name for r in results]
    assert names[-2:] == ["removed what it created", "no password hash or password in any response"]
    admin_checks = {"admin login (200, role admin)", "admin creates a product (201)"}
    assert admin_checks <= set(names) if admin else not admin_checks & set(names)
    assert len(results) >= 30
    assert everything(world) == before
    keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    assert keys == 0  # its notifications went with the rest


def test_it_cleans_up_after_a_check_went_wrong(world, monkeypatch):
    before = everything(world)

    async def broken(self):  # an order placed, then something unforeseen
        body = {"productId": self.product_id, "quantity": 1}
        placed = await self.check(
            "order", "POST", "/api/orders", 201, body=body, token=self.tokens["alice"]
        )
        self.orders.append(placed.json()["id"])
        raise RuntimeError("half way")

    monkeypatch.setattr(apitest.Scenario, "orders_checks", broken)
    results = {r.name: r for r in scenario(world, admin=True)}
    assert results["the checks ran to their end"].detail == "RuntimeError: half way"
    assert results["removed what it created"].ok, results["removed what it created"].detail
    assert everything(world) == before

"""Finding 1 of issue #13 on the local target: identity headers forged past API Gateway,
straight to the ALB emulation or to a service's own port, read or place nobody's orders;
through the lab's URL the same user's orders still work."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
import urllib.request

import boto3

from msctl.aws.clients import Clients
from msctl.local.edge import Edge

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, headers: dict | None = None, body=None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers or {}, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with NO_PROXY.open(request, timeout=30) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            status, text = error.code, error.read()
    return status, json.loads(text) if text else None


def sign_up(url: str) -> tuple[str, str]:
    """A new user through the lab's URL: (user id, session token)."""
    login = {"email": f"u-{secrets.token_hex(6)}@example.com", "password": "Str0ng-Passw0rd!x"}
    status, _ = call("POST", f"{url}/api/auth/register", body={**login, "name": "U"})
    assert status == 202
    status, body = call("POST", f"{url}/api/auth/login", body=login)
    assert status == 200, body
    return body["user"]["userId"], body["token"]


def service_ports(state, service: str) -> list[int]:
    """Where the data plane runs a service's tasks (gunicorn says so in their logs)."""
    ports = []
    for log in sorted(state.glob(f"{service}-*.log")):
        found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())
        ports.append(int(found[1]))
    assert ports, f"no {service} task logs in {state}"
    return ports


def through_alb(doc: dict, state, method: str, path: str, headers: dict, body) -> tuple:
    """A request to the ALB emulation as the local edge sends it, the services' tasks
    registered as the data plane registers them."""
    target = doc["target"]
    session = boto3.Session(
        region_name=target["region"], aws_access_key_id="t", aws_secret_access_key="t"
    )
    outputs = {name: step["outputs"] for name, step in doc["steps"].items()}
    clients = Clients(session, target["endpoint"])
    edge = Edge(clients, outputs["cloudfront"]["distribution_id"], None, "123456789012")
    dns = outputs["alb"]["dns_name"]
    for service, arn in outputs["alb"]["target_group_arns"].items():
        for port in service_ports(state, service):
            edge.register_target(dns, arn, f"http://127.0.0.1:{port}")

    async def send():
        await edge._start(None)
        try:
            data = b"" if body is None else json.dumps(body).encode()
            sent = [*headers.items(), ("Content-Type", "application/json")]
            return await edge._forward(method, f"http://{dns}{path}", sent, data)
        finally:
            await edge._stop(None)

    answer = asyncio.run(send())
    return answer.status, json.loads(answer.body) if answer.body else None


def test_forged_identity_past_the_gateway_reads_and_places_no_orders(local_lab):
    state = local_lab.state
    url = re.search(r"The lab answers at (http://127\.0\.0\.1:\d+)/", local_lab.up.stdout)[1]
    victim, token = sign_up(url)
    status, listing = call("GET", f"{url}/api/products")
    assert status == 200 and listing
    order = {"productId": listing[0]["id"], "quantity": 1}
    bearer = {"Authorization": f"Bearer {token}"}
    status, placed = call("POST", f"{url}/api/orders", bearer, order)
    assert status == 201, placed
    # Through the lab's URL (edge, API Gateway, ALB, service): the victim's own orders.
    status, mine = call("GET", f"{url}/api/orders", bearer)
    assert (status, [o["id"] for o in mine]) == (200, [placed["id"]])

    forged = {"X-Authorized-User-Id": victim, "X-Authorized-Role": "admin"}
    # Straight to the ALB emulation: the data plane's own forwarding to it (what API Gateway
    # sends the ALB goes there), with the listener as provisioned in the emulator.
    doc = local_lab.status()
    for method, path, body in (("GET", "/orders", None), ("POST", "/orders", order)):
        status, answer = through_alb(doc, state, method, path, forged, body)
        assert (status, answer) == (403, {"error": "Forbidden"}), answer
    # Straight to a service's port.
    for service, path in (("orders", "/orders"), ("products", "/products")):
        for port in service_ports(state, service):
            status, body = call("GET", f"http://127.0.0.1:{port}{path}", forged)
            assert (status, body) == (403, {"error": "forbidden"}), (service, port, body)
    status, body = call(
        "POST", f"http://127.0.0.1:{service_ports(state, 'orders')[0]}/orders", forged, order
    )
    assert status == 403, body

    # Nothing was placed by the forged requests.
    status, mine = call("GET", f"{url}/api/orders", bearer)
    assert (status, [o["id"] for o in mine]) == (200, [placed["id"]])

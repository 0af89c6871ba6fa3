"""API Gateway emulation: path matching, proxy events, authorizer semantics, mappings."""

from __future__ import annotations

import asyncio
import json

import pytest

from msctl.local.alb import LoadBalancer, Rule
from msctl.local.apigw import FunctionFailed, Request, Response, RestApi

FN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
URI = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{}/invocations"


def lambda_method(name, auth=None):
    method = {
        "httpMethod": "X",
        "authorizationType": "CUSTOM" if auth else "NONE",
        "methodIntegration": {
            "type": "AWS_PROXY",
            "httpMethod": "POST",
            "uri": URI.format(FN.format(name)),
        },
    }
    if auth:
        method["authorizerId"] = auth
    return method


def http_method(uri, auth=None, params=None):
    method = {
        "authorizationType": "CUSTOM" if auth else "NONE",
        "methodIntegration": {
            "type": "HTTP_PROXY",
            "httpMethod": "ANY",
            "uri": uri,
            "requestParameters": params or {},
        },
    }
    if auth:
        method["authorizerId"] = auth
    return method


RESOURCES = [
    {"id": "r0", "path": "/"},
    {"id": "r1", "path": "/api"},
    {"id": "r2", "path": "/api/auth"},
    {
        "id": "r3",
        "path": "/api/auth/login",
        "resourceMethods": {
            "POST": lambda_method("auth"),
            "OPTIONS": {
                "authorizationType": "NONE",
                "methodIntegration": {
                    "type": "MOCK",
                    "requestTemplates": {"application/json": '{"statusCode": 200}'},
                    "integrationResponses": {
                        "200": {
                            "statusCode": "200",
                            "responseParameters": {
                                "method.response.header.Access-Control-Allow-Origin": "'*'",
                                "method.response.header.Access-Control-Allow-Methods": "'GET,POST,OPTIONS'",
                            },
                        }
                    },
                },
            },
        },
    },
    {"id": "r4", "path": "/api/users", "resourceMethods": {"GET": lambda_method("users", "az1")}},
    {
        "id": "r5",
        "path": "/api/users/{id}",
        "resourceMethods": {"GET": lambda_method("users", "az1")},
    },
    {"id": "r6", "path": "/api/users/me", "resourceMethods": {"GET": lambda_method("me", "az1")}},
    {
        "id": "r7",
        "path": "/api/products",
        "resourceMethods": {
            "GET": http_method(
                "http://alb.local/products",
                params={
                    "integration.request.header.X-Authorized-User-Id": "''",
                    "integration.request.header.X-Authorized-Role": "''",
                },
            ),
            "POST": http_method(
                "http://alb.local/products",
                "az1",
                {
                    "integration.request.header.X-Authorized-User-Id": "context.authorizer.userId",
                    "integration.request.header.X-Authorized-Role": "context.authorizer.role",
                },
            ),
        },
    },
    {
        "id": "r8",
        "path": "/api/products/{proxy+}",
        "resourceMethods": {
            "ANY": http_method(
                "http://alb.local/products/{proxy}",
                params={"integration.request.path.proxy": "method.request.path.proxy"},
            )
        },
    },
]
AUTHORIZERS = [
    {
        "id": "az1",
        "type": "REQUEST",
        "identitySource": "method.request.header.Authorization",
        "authorizerUri": URI.format(FN.format("authorizer")),
    }
]


@pytest.fixture
def api():
    return RestApi("abc123", "prod", RESOURCES, AUTHORIZERS, "us-east-1", "123456789012")


def req(method, path, headers=(), body=b"", query=()):
    return Request(method, path, list(headers), list(query), body)


class Functions:
    """Stands in for the function runner: records events, answers like the lab's handlers."""

    def __init__(self, authorizer=None):
        self.events = []
        self.authorizer = authorizer or (
            lambda event: {
                "principalId": "u-1",
                "context": {"userId": "u-1", "role": "user"},
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "execute-api:Invoke",
                            "Resource": "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*/*",
                        }
                    ],
                },
            }
        )

    async def invoke(self, arn, event):
        self.events.append((arn.rsplit(":", 1)[1], event))
        if arn.endswith(":authorizer"):
            return self.authorizer(event)
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"fn": arn.rsplit(":", 1)[1]}),
        }


class Upstream:
    def __init__(self):
        self.calls = []

    async def forward(self, method, url, headers, body):
        self.calls.append((method, url, dict(headers), body))
        return Response(200, [("Content-Type", "application/json")], b"[]")


def run(api, request, functions=None, upstream=None):
    functions = functions or Functions()
    upstream = upstream or Upstream()
    return asyncio.run(api.handle(request, functions.invoke, upstream.forward)), functions, upstream


def test_literal_beats_parameter_beats_greedy(api):
    assert api.match("GET", "/api/users/me").resource["path"] == "/api/users/me"
    m = api.match("GET", "/api/users/42")
    assert m.resource["path"] == "/api/users/{id}" and m.path_parameters == {"id": "42"}
    g = api.match("DELETE", "/api/products/7/reviews")
    assert g.resource["path"] == "/api/products/{proxy+}" and g.path_parameters == {
        "proxy": "7/reviews"
    }


def test_unprovisioned_route_is_api_gateways_403(api):
    for method, path in (
        ("GET", "/api/orders"),
        ("DELETE", "/api/users/42"),
        ("GET", "/nope"),
        ("GET", "/api/auth/login"),
    ):
        response, functions, upstream = run(api, req(method, path))
        assert response.status == 403
        assert json.loads(response.body) == {"message": "Missing Authentication Token"}
        assert functions.events == [] and upstream.calls == []


def test_proxy_event_has_the_real_shape(api):
    request = req(
        "POST",
        "/api/auth/login",
        [("Content-Type", "application/json"), ("X-A", "1"), ("X-A", "2")],
        b'{"email": "a@b.c"}',
        [("q", "1"), ("q", "2")],
    )
    response, functions, _ = run(api, request)
    assert response.status == 200 and json.loads(response.body) == {"fn": "auth"}
    ((name, event),) = functions.events
    assert name == "auth"
    assert event["resource"] == "/api/auth/login" and event["path"] == "/api/auth/login"
    assert event["httpMethod"] == "POST"
    assert event["headers"]["X-A"] == "2" and event["multiValueHeaders"]["X-A"] == ["1", "2"]
    assert event["queryStringParameters"] == {"q": "2"}
    assert event["multiValueQueryStringParameters"] == {"q": ["1", "2"]}
    assert event["pathParameters"] is None and event["isBase64Encoded"] is False
    assert event["body"] == '{"email": "a@b.c"}'
    ctx = event["requestContext"]
    assert ctx["stage"] == "prod" and ctx["resourcePath"] == "/api/auth/login"
    assert ctx["path"] == "/prod/api/auth/login" and ctx["requestId"] and ctx["apiId"] == "abc123"


def test_authorizer_missing_identity_is_401_without_calling_it(api):
    response, functions, _ = run(api, req("GET", "/api/users"))
    assert response.status == 401 and json.loads(response.body) == {"message": "Unauthorized"}
    assert functions.events == []


def test_authorizer_unauthorized_is_401(api):
    def deny(event):
        raise FunctionFailed("Unauthorized")

    functions = Functions(authorizer=deny)

    async def invoke(arn, event):
        if arn.endswith(":authorizer"):
            raise FunctionFailed("Unauthorized")
        return await Functions().invoke(arn, event)

    response = asyncio.run(
        api.handle(
            req("GET", "/api/users", [("Authorization", "Bearer x")]), invoke, Upstream().forward
        )
    )
    assert response.status == 401
    assert functions.events == []


def test_authorizer_deny_policy_is_403(api):
    functions = Functions(
        authorizer=lambda e: {
            "principalId": "u",
            "policyDocument": {
                "Statement": [{"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "*"}]
            },
        }
    )
    response, _, _ = run(api, req("GET", "/api/users", [("Authorization", "Bearer x")]), functions)
    assert response.status == 403
    assert "explicit deny" in json.loads(response.body)["Message"]


def test_authorizer_error_is_500(api):
    async def invoke(arn, event):
        raise FunctionFailed("KeyError: boom")

    response = asyncio.run(
        api.handle(
            req("GET", "/api/users", [("Authorization", "Bearer x")]), invoke, Upstream().forward
        )
    )
    assert response.status == 500


def test_authorizer_context_reaches_the_function(api):
    response, functions, _ = run(
        api, req("GET", "/api/users/42", [("Authorization", "Bearer tok")])
    )
    assert response.status == 200
    (az_name, az_event), (fn_name, event) = functions.events
    assert az_name == "authorizer" and az_event["type"] == "REQUEST"
    assert (
        az_event["methodArn"]
        == "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/api/users/{id}"
    )
    assert az_event["headers"]["Authorization"] == "Bearer tok"
    assert event["requestContext"]["authorizer"] == {
        "principalId": "u-1",
        "userId": "u-1",
        "role": "user",
    }
    assert event["pathParameters"] == {"id": "42"}


def test_http_proxy_maps_the_identity_headers_and_they_cannot_be_forged(api):
    forged = [("X-Authorized-User-Id", "admin"), ("X-Authorized-Role", "admin")]
    _, _, upstream = run(
        api, req("POST", "/api/products", [("Authorization", "Bearer tok"), *forged], b"{}")
    )
    method, url, headers, _ = upstream.calls[0]
    assert (method, url) == ("POST", "http://alb.local/products")
    assert (headers["X-Authorized-User-Id"], headers["X-Authorized-Role"]) == ("u-1", "user")
    _, _, upstream = run(api, req("GET", "/api/products", forged))
    assert not {"X-Authorized-User-Id", "X-Authorized-Role"} & set(upstream.calls[0][2])


def test_http_proxy_substitutes_greedy_path_and_query(api):
    _, _, upstream = run(api, req("GET", "/api/products/7", query=[("a", "b c")]))
    assert upstream.calls[0][1] == "http://alb.local/products/7?a=b+c"


def test_mock_answers_cors_preflight(api):
    response, functions, _ = run(api, req("OPTIONS", "/api/auth/login"))
    assert response.status == 200
    assert ("Access-Control-Allow-Origin", "*") in response.headers
    assert functions.events == []


def test_malformed_lambda_answer_is_502(api):
    async def invoke(arn, event):
        return {"body": "no status code"}

    response = asyncio.run(api.handle(req("POST", "/api/auth/login"), invoke, Upstream().forward))
    assert response.status == 502 and json.loads(response.body) == {
        "message": "Internal server error"
    }


def test_alb_rules_route_by_priority_and_fall_back_to_the_default():
    lb = LoadBalancer(
        "arn:lb",
        "alb.local",
        [
            Rule(10, ["/products*"], {"Type": "forward", "TargetGroupArn": "tg-p"}),
            Rule(20, ["/orders*"], {"Type": "forward", "TargetGroupArn": "tg-o"}),
            Rule(
                1_000_000,
                [],
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "application/json",
                        "MessageBody": "{}",
                    },
                },
            ),
        ],
    )
    lb.register("tg-p", "http://127.0.0.1:1")
    lb.register("tg-p", "http://127.0.0.1:2")
    assert [lb.route("/products/3") for _ in range(3)] == [
        ("forward", "http://127.0.0.1:1"),
        ("forward", "http://127.0.0.1:2"),
        ("forward", "http://127.0.0.1:1"),
    ]
    assert lb.route("/orders") == ("unavailable", "tg-o")
    kind, fixed = lb.route("/other")
    assert kind == "fixed" and fixed["status"] == 404


SECRET = "ab" * 32


def test_http_proxy_sends_a_static_header_whatever_the_client_sent():
    params = {"integration.request.header.X-Lab-Origin": f"'{SECRET}'"}
    resources = [
        {"id": "r0", "path": "/"},
        {
            "id": "r1",
            "path": "/orders",
            "resourceMethods": {"GET": http_method("http://alb.local/orders", params=params)},
        },
    ]
    api = RestApi("abc123", "prod", resources, [], "us-east-1", "123456789012")
    _, _, upstream = run(api, req("GET", "/orders", [("x-lab-origin", "guess")]))
    ((_, _, headers, _),) = upstream.calls
    assert [v for k, v in headers.items() if k.lower() == "x-lab-origin"] == [SECRET]


def test_alb_rules_want_their_header_conditions_and_refuse_by_default():
    def rule(priority, conditions, target):
        action = {"Type": "forward", "TargetGroupArn": target}
        return {"Priority": str(priority), "Conditions": conditions, "Actions": [action]}

    origin = {
        "Field": "http-header",
        "HttpHeaderConfig": {"HttpHeaderName": "X-Lab-Origin", "Values": [SECRET]},
    }
    path = {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/orders*"]}}
    forbidden = {
        "Type": "fixed-response",
        "FixedResponseConfig": {
            "StatusCode": "403",
            "ContentType": "application/json",
            "MessageBody": "{}",
        },
    }
    rules = [
        Rule.from_api(rule(10, [path, origin], "tg-o")),
        # A condition the emulation doesn't evaluate: never matches, never forwards.
        Rule.from_api(
            rule(20, [{"Field": "source-ip", "SourceIpConfig": {"Values": ["0.0.0.0/0"]}}], "tg-x")
        ),
        Rule.from_api({"IsDefault": True, "Conditions": [], "Actions": [forbidden]}),
    ]
    lb = LoadBalancer("arn:lb", "alb.local", sorted(rules, key=lambda r: r.priority))
    lb.register("tg-o", "http://127.0.0.1:1")
    lb.register("tg-x", "http://127.0.0.1:2")
    forged = [("X-Authorized-User-Id", "victim")]
    for headers in (forged, [*forged, ("X-Lab-Origin", "wrong")], [("X-Other", SECRET)]):
        kind, fixed = lb.route("/orders", headers)
        assert (kind, fixed["status"]) == ("fixed", 403)
    # Header names and values compare case-insensitively, as on AWS.
    for name, value in (("X-Lab-Origin", SECRET), ("x-lab-origin", SECRET.upper())):
        assert lb.route("/orders/7", [*forged, (name, value)]) == ("forward", "http://127.0.0.1:1")
    kind, fixed = lb.route("/products", [("X-Lab-Origin", SECRET)])
    assert (kind, fixed["status"]) == ("fixed", 403)

"""Sort every AWS error into one of three kinds before deciding what to do."""

from __future__ import annotations

from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError


class ErrorKind(StrEnum):
    THROTTLING = "throttling"  # back off (botocore's standard retry mode does it)
    EVENTUAL = "eventual"  # retry the named error for a bounded time
    TERMINAL = "terminal"  # fail at once with a clear message


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)

# A new EC2 id that isn't visible yet, to reads and to changes that name it (EC2 is
# eventually consistent: AuthorizeSecurityGroupIngress, ModifySubnetAttribute, CreateRoute...
# right after a create can answer these for a short while).
NEW_ID_CODES = (
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidAllocationID.NotFound",
    "NatGatewayNotFound",
    "InvalidNatGatewayID.NotFound",
)

# Errors that go away on their own shortly after a related change; each retry site names the
# ones it expects, this is the union used for classification and reporting.
EVENTUAL_CODES = frozenset(
    {
        *NEW_ID_CODES,
        "DependencyViolation",
        "InvalidParameterValueException",
        "DistributionNotDisabled",
        "ResourceInUseException",
        "ResourceConflictException",
        "IncorrectState",
        "ConflictException",
        "InvalidDBInstanceState",
        "InvalidDBSubnetGroupStateFault",
        "OperationAborted",
    }
)

HINTS = {
    "AccessDenied": "the credentials in use lack this permission; check AWS_PROFILE and the IAM policy",
    "AccessDeniedException": "the credentials in use lack this permission; check AWS_PROFILE and the IAM policy",
    "UnauthorizedOperation": "the credentials in use lack this permission; check AWS_PROFILE and the IAM policy",
    "ExpiredToken": "your session credentials expired; log in again (aws sso login / refresh the profile)",
    "ExpiredTokenException": "your session credentials expired; log in again",
    "InvalidClientTokenId": "the access key is not valid for this endpoint; check AWS_PROFILE/AWS_ENDPOINT_URL",
    "VpcLimitExceeded": "the account's VPC quota is used up; delete an unused VPC or raise the quota",
    "AddressLimitExceeded": "the account's Elastic IP quota is used up; release an unused EIP",
    "NatGatewayLimitExceeded": "the NAT gateway quota is used up; delete an unused NAT gateway",
    "InstanceQuotaExceeded": "the RDS instance quota is used up",
    "DependencyViolation": "something still uses this resource; run `msctl down` again in a minute",
}


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def classify(exc: BaseException) -> ErrorKind:
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return ErrorKind.THROTTLING
    if code in EVENTUAL_CODES:
        return ErrorKind.EVENTUAL
    return ErrorKind.TERMINAL


def is_code(exc: BaseException, *codes: str) -> bool:
    return error_code(exc) in codes


def describe(exc: BaseException) -> tuple[str, str]:
    """A one-line description of an AWS error and a hint of what to do next."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        op = getattr(exc, "operation_name", "call")
        message = err.get("Message") or ""
        kind = classify(exc)
        hint = HINTS.get(code, "")
        if not hint and kind is ErrorKind.THROTTLING:
            hint = "AWS is throttling this account; wait a minute and run the command again"
        return f"{op}: {code}: {message}".rstrip(": "), hint
    if isinstance(exc, EndpointConnectionError):
        return str(
            exc
        ), "the endpoint is not reachable; for the local target run `msctl local start`"
    if isinstance(exc, BotoCoreError):
        return str(exc), ""
    return f"{type(exc).__name__}: {exc}", ""

"""The lab's steps. The runner orders them by `requires`; this order only breaks ties."""

from __future__ import annotations

from .admin import AdminStep
from .alb import AlbStep
from .apigw import ApigwStep
from .base import LabStep
from .cloudfront import CloudFrontStep
from .cloudwatch import CloudWatchStep
from .dynamodb import DynamoDbStep
from .ecr import EcrStep
from .ecs import EcsStep
from .iam import IamStep
from .lambda_ import LambdaStep
from .nat import NatStep
from .rds import RdsStep
from .route53 import Route53Step
from .s3 import S3Step
from .sg import SgStep
from .vpc import VpcStep
from .xray import XrayStep

STEP_CLASSES: tuple[type[LabStep], ...] = (
    VpcStep,
    NatStep,
    SgStep,
    DynamoDbStep,
    AdminStep,
    S3Step,
    RdsStep,
    IamStep,
    LambdaStep,
    EcrStep,
    AlbStep,
    EcsStep,
    ApigwStep,
    Route53Step,
    CloudFrontStep,
    CloudWatchStep,
    XrayStep,
)


def all_steps() -> dict[str, LabStep]:
    return {cls.name: cls() for cls in STEP_CLASSES}

"""ecr: a repository per container service and its image, tagged by source hash (seed 4.3).

The image tag is `src-<hash>` of the service's source, so a re-run with unchanged source
finds its image and pushes nothing. How an image gets there, per service:

1. `ecr.images.<service>` names a prebuilt image: it is used as is (nothing pushed);
2. the repository already holds `src-<hash>`: reused;
3. local target: a reproducible image built from the source without Docker
   (`ecr_image.py`), pushed through ECR's layer-upload API;
4. AWS: `docker build` / `docker push` when a Docker engine answers, else a clear error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import as_list
from ..build.ecr_image import MANIFEST_MEDIA_TYPE, ImageBlobs, build_image, digest, source_hash
from ..engine.model import Pending, is_pending
from ..engine.step import NotSupported, StepError
from ..resources import Resource
from ..resources.base import Part
from ..resources.compute import REPOSITORY
from .base import LabStep
from .run import Fix, StepRun

TAG_PREFIX = "src-"
DOCKER_INFO_TIMEOUT = 5
DOCKER_BUILD_TIMEOUT = 1800
DEFAULT_PART_SIZE = 10 * 1024 * 1024


IMAGE = Part("image", "imageDigest")


class EcrStep(LabStep):
    name = "ecr"
    requires = ()
    services = ("ecr",)
    description = "ECR repositories and the services' images"
    kinds = (REPOSITORY,)  # deleted with force: with their images

    def names(self, config):
        return [(REPOSITORY, name) for name in config.ecr.repositories.values()]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.ecr
        ecr = run.clients.ecr
        repositories: dict[str, str] = {}
        images: dict[str, str] = {}
        tags: dict[str, str | None] = {}
        for service, repo_name in cfg.repositories.items():
            run.ensure(
                REPOSITORY,
                repo_name,
                create=lambda n=repo_name: _create_repository(run, n),
                fixes=lambda repo: _repository_fixes(ecr, repo, cfg.keep_images),
            )
            repo = run.got(REPOSITORY, repo_name)
            uri = repo["repositoryUri"] if repo else Pending(f"URI of repository {repo_name}")
            repositories[service] = uri
            prebuilt = cfg.images.get(service)
            if prebuilt:
                images[service], tags[service] = prebuilt, None
                continue
            svc = run.config.ecs.services[service]
            source = run.config.path(svc.source)
            tag = image_tag(source)
            image_digest = run.ensure(
                IMAGE,
                f"{repo_name}:{tag}",
                after=[uri],
                find=lambda n=repo_name, t=tag: find_image(ecr, n, t),
                create=lambda n=repo_name, u=uri, t=tag, s=source, p=svc.port: _push(
                    run, repo=n, uri=u, tag=t, source=s, port=p
                ),
            )
            tags[service] = tag
            images[service] = (
                Pending(f"image {repo_name}:{tag}")
                if is_pending(uri, image_digest)
                else f"{uri}@{image_digest}"
            )
        return {"repositories": repositories, "images": images, "tags": tags}


# ---------------------------------------------------------------- source hash


def image_tag(source: Path) -> str:
    try:
        return TAG_PREFIX + source_hash(source)
    except FileNotFoundError as exc:
        raise StepError(
            str(exc),
            hint="check ecs.services.<service>.source in the config, or pass a prebuilt image "
            "with --set ecr.images.<service>=<uri>",
        ) from None


# ---------------------------------------------------------------- repositories


def _create_repository(run: StepRun, name: str) -> Resource:
    return run.clients.ecr.create_repository(
        repositoryName=name,
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
        tags=as_list(run.tags(name)),
    )["repository"]


def lifecycle_policy(keep: int) -> dict:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the last {keep} images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": keep,
                },
                "action": {"type": "expire"},
            }
        ]
    }


def _current_lifecycle_policy(ecr, name: str) -> dict | None:
    try:
        text = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
    except ClientError as exc:
        if is_code(exc, "LifecyclePolicyNotFoundException"):
            return None
        raise
    return json.loads(text)


def _repository_fixes(ecr, repo: Resource, keep: int) -> list[Fix]:
    name = repo["repositoryName"]
    fixes = []
    if not repo.get("imageScanningConfiguration", {}).get("scanOnPush"):
        fixes.append(
            Fix(
                "scan on push on",
                lambda: ecr.put_image_scanning_configuration(
                    repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
                ),
            )
        )
    if repo.get("imageTagMutability") != "IMMUTABLE":
        fixes.append(
            Fix(
                f"tag mutability {repo.get('imageTagMutability')} -> IMMUTABLE",
                lambda: ecr.put_image_tag_mutability(
                    repositoryName=name, imageTagMutability="IMMUTABLE"
                ),
            )
        )
    desired = lifecycle_policy(keep)
    if _current_lifecycle_policy(ecr, name) != desired:
        fixes.append(
            Fix(
                f"lifecycle policy: keep the last {keep} images",
                lambda: ecr.put_lifecycle_policy(
                    repositoryName=name, lifecyclePolicyText=json.dumps(desired)
                ),
            )
        )
    return fixes


# ---------------------------------------------------------------- images


def find_image(ecr, repo: str, tag: str) -> Resource | None:
    try:
        details = ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": tag}])[
            "imageDetails"
        ]
    except ClientError as exc:
        if is_code(exc, "ImageNotFoundException", "RepositoryNotFoundException"):
            return None
        raise
    return details[0] if details else None


def _push(run: StepRun, *, repo: str, uri: str, tag: str, source: Path, port: int) -> Resource:
    if push_method(run.ctx.target.is_local, docker_available) == "api":
        push_blobs(run, repo, tag, build_image(source, port))
    else:
        docker_push(run, uri, tag, source)
    image = find_image(run.clients.ecr, repo, tag)
    if image is None:
        raise StepError(
            f"pushed {repo}:{tag} but ECR doesn't list it",
            hint="run the same command again",
        )
    return image


def push_method(is_local: bool, docker_ok) -> str:
    """How to get an image into ECR: the layer-upload API ("api") on the local target,
    "docker" on AWS when an engine answers, else a StepError that names both ways out."""
    if is_local:
        return "api"
    if docker_ok():
        return "docker"
    raise StepError(
        "no Docker engine here: start Docker, or build and push the image yourself and "
        "pass --set ecr.images.<service>=<uri>",
        hint="`docker info` must succeed for msctl to build and push the services' images",
    )


# --- the local target: ECR's layer-upload API


def push_blobs(run: StepRun, repo: str, tag: str, blobs: ImageBlobs) -> None:
    """Upload the layer and the config as blobs, then put the manifest under the tag."""
    ecr = run.clients.ecr
    for blob in (blobs.layer, blobs.config):
        _upload_blob(run, repo, blob)
    ecr.put_image(
        repositoryName=repo,
        imageManifest=blobs.manifest.decode(),
        imageManifestMediaType=MANIFEST_MEDIA_TYPE,
        imageTag=tag,
        imageDigest=blobs.manifest_digest,
    )


def _upload_blob(run: StepRun, repo: str, data: bytes) -> None:
    ecr = run.clients.ecr
    expected = digest(data)
    try:
        upload = ecr.initiate_layer_upload(repositoryName=repo)
    except NotImplementedError as exc:  # moto in-process
        raise _no_layer_api() from exc
    except ClientError as exc:  # moto server: an HTML 500 for a call it doesn't implement
        if run.ctx.target.is_local and _is_server_error(exc):
            raise _no_layer_api() from exc
        raise
    upload_id = upload["uploadId"]
    part_size = upload.get("partSize") or DEFAULT_PART_SIZE
    for first in range(0, len(data), part_size):
        part = data[first : first + part_size]
        ecr.upload_layer_part(
            repositoryName=repo,
            uploadId=upload_id,
            partFirstByte=first,
            partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
    try:
        done = ecr.complete_layer_upload(
            repositoryName=repo, uploadId=upload_id, layerDigests=[expected]
        )
    except ClientError as exc:
        if is_code(exc, "LayerAlreadyExistsException"):
            return
        raise
    if done.get("layerDigest") != expected:
        raise StepError(
            f"ECR computed {done.get('layerDigest')} for a blob of digest {expected}",
            hint="the upload was corrupted; run the same command again",
        )


def _is_server_error(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 500 or exc.response.get("Error", {}).get("Code") == "500"


def _no_layer_api() -> NotSupported:
    return NotSupported(
        "the local emulator lacks ECR's layer-upload API (moto before 5.2.5): upgrade it "
        "(pip install 'moto[server]>=5.2.5', then `msctl local stop` and `msctl local start`) "
        "or pass --set ecr.images.<service>=<uri>"
    )


# --- AWS: Docker


def docker_available() -> bool:
    """Whether a Docker engine answers `docker info` within a few seconds."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=DOCKER_INFO_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def docker_push(run: StepRun, uri: str, tag: str, source: Path) -> None:
    """Log in with an ECR token (password on stdin), build for linux/amd64, push."""
    auth = run.clients.ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    ref = f"{uri}:{tag}"
    run.waiting(f"docker login {auth['proxyEndpoint']}")
    _docker(["login", "--username", user, "--password-stdin", auth["proxyEndpoint"]], password)
    run.waiting(f"docker build {source} as {ref}")
    _docker(["build", "--platform", "linux/amd64", "--tag", ref, str(source)])
    run.waiting(f"docker push {ref}")
    _docker(["push", ref])


def _docker(args: list[str], stdin: str | None = None) -> None:
    # BuildKit otherwise adds a provenance attestation: the repository would hold an image
    # index plus untagged attestation manifests, which the keep-N lifecycle rule counts.
    env = {**os.environ, "BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
    try:
        done = subprocess.run(
            ["docker", *args],
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=DOCKER_BUILD_TIMEOUT,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise StepError(
            f"docker {args[0]} took more than {DOCKER_BUILD_TIMEOUT} s",
            hint="check the Docker engine and the network, then run the same command again",
        ) from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise StepError(
            f"docker {args[0]} failed (exit {done.returncode}): " + " | ".join(tail),
            hint="fix the problem shown, or build and push the image yourself and pass "
            "--set ecr.images.<service>=<uri>",
        )

"""ecr against moto: repositories, the source-hash tag, pushing a real image through the
layer-upload API on the local target, prebuilt images, and the Docker path's decisions."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import boto3
import pytest

from msctl.build.ecr_image import (
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    build_image,
    parse_dockerfile,
)
from msctl.context import Target
from msctl.engine.model import Status
from msctl.engine.step import StepError
from msctl.steps import ecr as ecr_step
from msctl.steps.ecr import push_method, source_hash

from .conftest import Lab, assert_lifecycle

PRODUCTS = "microservices/products"
ORDERS = "microservices/orders"
PUSH_CALLS = {"InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload", "PutImage"}
TEST_PART_SIZE = 4096  # small, so that a layer goes up in several parts

DOCKERFILE = """\
# a service of the lab
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \\
    APP_MODE="lab test"
WORKDIR /app
COPY . .
USER 10001:10001
EXPOSE 8080
HEALTHCHECK CMD ["python", "-c", "print(1)"]
CMD ["gunicorn", "--bind", "0.0.0.0:8080", "app:app"]
"""


# ---------------------------------------------------------------- moto


@pytest.fixture
def aws(aws, monkeypatch):
    """ECR needs no AWS-managed IAM policies: not loading them saves ~2 s per test."""
    monkeypatch.delenv("MOTO_IAM_LOAD_MANAGED_POLICIES")
    yield


def small_layer_parts(monkeypatch) -> None:
    """moto implements ECR's layer-upload API from 5.2.5 on (before, it raises
    NotImplementedError). A small part size makes every layer go up in several parts."""
    from moto.ecr import models

    if not hasattr(models, "DEFAULT_LAYER_PART_SIZE"):
        pytest.fail("moto >= 5.2.5 is needed: older versions lack ECR's layer-upload API")
    monkeypatch.setattr(models, "DEFAULT_LAYER_PART_SIZE", TEST_PART_SIZE)


# ---------------------------------------------------------------- helpers


def ecr():
    return boto3.client("ecr", region_name="us-east-1")


def write_service(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "requirements.txt").write_text("flask==3.0.3\ngunicorn==22.0.0\n")
    # Random bytes so that the gzip'd layer is bigger than one upload part.
    (root / "app.py").write_text(f"# {name}\n" + "".join(f"# {uuid.uuid4()}\n" for _ in range(200)))
    return root


def with_config(lab_config, sources: dict[str, Path], images: dict[str, str] | None = None):
    services = {
        name: svc.model_copy(update={"source": sources[name]})
        for name, svc in lab_config.ecs.services.items()
    }
    ecs = lab_config.ecs.model_copy(update={"services": services})
    ecr_cfg = lab_config.ecr.model_copy(update={"images": images or {}})
    return lab_config.model_copy(update={"ecs": ecs, "ecr": ecr_cfg})


@pytest.fixture
def sources(tmp_path):
    return {
        "products": write_service(tmp_path / "src" / "products", "products"),
        "orders": write_service(tmp_path / "src" / "orders", "orders"),
    }


@pytest.fixture
def lab(aws, lab_config, tmp_path, sources, monkeypatch):
    small_layer_parts(monkeypatch)
    return Lab(with_config(lab_config, sources), tmp_path / "state")


def reconfigure(lab, config) -> None:
    lab.config = config
    lab.ctx.config = config


def images_of(repo: str) -> list[dict]:
    return ecr().describe_images(repositoryName=repo)["imageDetails"]


def push_calls(lab) -> list[str]:
    return [op for svc, op in lab.recorder.calls if svc == "ecr" and op in PUSH_CALLS]


# ---------------------------------------------------------------- the image builder


def test_manifest_names_its_blobs_by_digest(sources):
    blobs = build_image(sources["products"], 8080)
    manifest = json.loads(blobs.manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest["config"] == {
        "mediaType": CONFIG_MEDIA_TYPE,
        "size": len(blobs.config),
        "digest": "sha256:" + hashlib.sha256(blobs.config).hexdigest(),
    }
    assert manifest["layers"] == [
        {
            "mediaType": LAYER_MEDIA_TYPE,
            "size": len(blobs.layer),
            "digest": "sha256:" + hashlib.sha256(blobs.layer).hexdigest(),
        }
    ]
    config = json.loads(blobs.config)
    tar = gzip.decompress(blobs.layer)
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()],
    }
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"] == {
        "Cmd": ["gunicorn", "--bind", "0.0.0.0:8080", "app:app"],
        "Env": ["PYTHONUNBUFFERED=1", "APP_MODE=lab test"],
        "ExposedPorts": {"8080/tcp": {}},
        "User": "10001:10001",
        "WorkingDir": "/app",
    }


def test_layer_holds_the_source_under_app_deterministically(sources, tmp_path):
    src = sources["products"]
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00cache")
    (src / "stray.pyc").write_bytes(b"\x00cache")
    first = build_image(src, 8080)
    with tarfile.open(fileobj=io.BytesIO(first.layer)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "app",
            "app/Dockerfile",
            "app/app.py",
            "app/requirements.txt",
        ]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert tar.extractfile("app/app.py").read() == (src / "app.py").read_bytes()
    # A copy elsewhere, with other timestamps: identical bytes, identical digests.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("Dockerfile", "app.py", "requirements.txt"):
        (copy / name).write_bytes((src / name).read_bytes())
    again = build_image(copy, 8080)
    assert (again.layer, again.config, again.manifest) == (
        first.layer,
        first.config,
        first.manifest,
    )
    assert again.manifest_digest == first.manifest_digest
    assert source_hash(copy) == source_hash(src)


def test_source_hash_changes_with_a_file(sources):
    src = sources["orders"]
    before = source_hash(src)
    assert len(before) == 16 and int(before, 16) >= 0
    (src / "app.py").write_text((src / "app.py").read_text() + "# changed\n")
    assert source_hash(src) != before
    (src / ".pytest_cache").mkdir()
    (src / ".pytest_cache" / "x").write_text("cache")
    changed = source_hash(src)
    (src / "app.py").rename(src / "main.py")
    assert source_hash(src) != changed


def test_dockerfile_parsing_leaves_out_what_it_cannot_read():
    parsed = parse_dockerfile(
        "FROM x\nENV PATH=$PATH:/app\nCMD gunicorn app:app\nENTRYPOINT [not json\n"
    )
    assert parsed == {"Cmd": ["/bin/sh", "-c", "gunicorn app:app"]}
    assert parse_dockerfile("ENV LANG C.UTF-8\n") == {"Env": ["LANG=C.UTF-8"]}


# ---------------------------------------------------------------- the step on the local target


def test_ecr_lifecycle(lab, sources):
    tags = {name: f"src-{source_hash(path)}" for name, path in sources.items()}
    outputs = assert_lifecycle(
        lab,
        "ecr",
        {
            ("ecr-repository", PRODUCTS),
            ("ecr-repository", ORDERS),
            ("image", f"{PRODUCTS}:{tags['products']}"),
            ("image", f"{ORDERS}:{tags['orders']}"),
        },
    )
    uri = outputs["repositories"]["products"]
    assert uri == f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{PRODUCTS}"
    assert outputs["tags"] == tags
    assert outputs["images"]["products"].startswith(f"{uri}@sha256:")
    # Destroy removed the repositories although they held images.
    assert ecr().describe_repositories()["repositories"] == []


def test_image_is_pushed_with_the_source_tag_and_manifest_digest(lab, sources):
    lab.run("apply", ["ecr"])
    calls = push_calls(lab)
    # Per service: two blobs (layer, config), the layer in several parts, one manifest.
    assert calls.count("InitiateLayerUpload") == 4
    assert calls.count("CompleteLayerUpload") == 4
    assert calls.count("UploadLayerPart") > 4
    assert calls.count("PutImage") == 2
    out = lab.state.outputs("ecr")
    for service, repo in (("products", PRODUCTS), ("orders", ORDERS)):
        tag = f"src-{source_hash(sources[service])}"
        (image,) = images_of(repo)
        assert image["imageTags"] == [tag]
        manifest = ecr().batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])[
            "images"
        ][0]["imageManifest"]
        assert manifest.encode() == build_image(sources[service], 8080).manifest
        assert image["imageDigest"] == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
        assert out["images"][service] == f"{out['repositories'][service]}@{image['imageDigest']}"


def test_second_apply_pushes_nothing(lab):
    lab.run("apply", ["ecr"])
    lab.recorder.calls.clear()
    again = lab.run("apply", ["ecr"])
    assert again.results["ecr"].status is Status.NOCHANGE
    assert push_calls(lab) == []
    assert lab.recorder.mutating() == []


def test_changed_source_pushes_a_new_image(lab, sources):
    lab.run("apply", ["ecr"])
    first = lab.state.outputs("ecr")
    (sources["products"] / "app.py").write_text("print('v2')\n")
    lab.recorder.calls.clear()
    lab.run("apply", ["ecr"])
    second = lab.state.outputs("ecr")
    assert push_calls(lab).count("PutImage") == 1  # only products changed
    assert second["tags"]["products"] != first["tags"]["products"]
    assert second["images"]["products"] != first["images"]["products"]
    assert second["images"]["orders"] == first["images"]["orders"]
    assert sorted(t for i in images_of(PRODUCTS) for t in i["imageTags"]) == sorted(
        [first["tags"]["products"], second["tags"]["products"]]
    )


def test_prebuilt_image_is_used_as_is(lab, lab_config, sources):
    prebuilt = "123456789012.dkr.ecr.us-east-1.amazonaws.com/elsewhere/products:v1"
    reconfigure(lab, with_config(lab_config, sources, images={"products": prebuilt}))
    lab.run("apply", ["ecr"])
    out = lab.state.outputs("ecr")
    assert out["images"]["products"] == prebuilt
    assert out["tags"]["products"] is None
    assert images_of(PRODUCTS) == []  # nothing pushed for products
    assert len(images_of(ORDERS)) == 1
    assert push_calls(lab).count("PutImage") == 1


def test_repositories_scan_on_push_immutable_and_lifecycle(lab):
    lab.run("apply", ["ecr"])
    client = ecr()
    for repo in client.describe_repositories(repositoryNames=[PRODUCTS, ORDERS])["repositories"]:
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["imageTagMutability"] == "IMMUTABLE"
        tags = {
            t["Key"]: t["Value"]
            for t in client.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        }
        assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "ecr"
        policy = json.loads(
            client.get_lifecycle_policy(repositoryName=repo["repositoryName"])[
                "lifecyclePolicyText"
            ]
        )
        (rule,) = policy["rules"]
        assert rule["selection"]["countType"] == "imageCountMoreThan"
        assert rule["selection"]["countNumber"] == lab.config.ecr.keep_images == 5
        assert rule["action"] == {"type": "expire"}


def test_drifted_repository_settings_are_fixed(lab):
    lab.run("apply", ["ecr"])
    client = ecr()
    client.put_image_scanning_configuration(
        repositoryName=ORDERS, imageScanningConfiguration={"scanOnPush": False}
    )
    client.delete_lifecycle_policy(repositoryName=ORDERS)
    plan = lab.run("plan", ["ecr"])
    assert sorted((c.action, c.kind, c.name) for c in lab.changes(plan, "ecr")) == [
        ("update", "ecr-repository", ORDERS),
        ("update", "ecr-repository", ORDERS),
    ]
    lab.run("apply", ["ecr"])
    assert lab.changes(lab.run("plan", ["ecr"]), "ecr") == []
    repo = client.describe_repositories(repositoryNames=[ORDERS])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}


def test_foreign_repository_is_neither_adopted_nor_deleted(lab):
    ecr().create_repository(repositoryName=ORDERS)
    result = lab.run("apply", ["ecr"], expect_ok=False)
    assert result.results["ecr"].status is Status.FAILED
    assert "isn't lab microservices's" in result.results["ecr"].error
    lab.run("destroy", ["ecr"])
    assert [r["repositoryName"] for r in ecr().describe_repositories()["repositories"]] == [ORDERS]


def test_emulator_without_layer_api_is_unsupported(lab, monkeypatch):
    from moto.ecr import responses

    def missing(self):
        raise NotImplementedError("ECR.initiate_layer_upload is not yet implemented")

    monkeypatch.setattr(responses.ECRResponse, "initiate_layer_upload", missing)
    result = lab.run("apply", ["ecr"])
    assert result.results["ecr"].status is Status.UNSUPPORTED
    assert "moto[server]>=5.2.5" in result.results["ecr"].reason
    assert "ecr.images.<service>" in result.results["ecr"].reason


# ---------------------------------------------------------------- AWS: the Docker path


def test_push_method_decisions():
    assert push_method(True, lambda: pytest.fail("not asked on the local target")) == "api"
    assert push_method(False, lambda: True) == "docker"
    with pytest.raises(StepError) as err:
        push_method(False, lambda: False)
    assert str(err.value) == (
        "no Docker engine here: start Docker, or build and push the image yourself and "
        "pass --set ecr.images.<service>=<uri>"
    )


def on_aws(lab) -> None:
    lab.ctx.target = Target("aws", lab.config.region, None)


def test_aws_without_docker_fails_with_both_ways_out(lab, monkeypatch):
    on_aws(lab)
    monkeypatch.setattr(ecr_step, "docker_available", lambda: False)
    result = lab.run("apply", ["ecr"], expect_ok=False)
    assert result.results["ecr"].status is Status.FAILED
    assert "start Docker" in result.results["ecr"].error
    assert "--set ecr.images.<service>=<uri>" in result.results["ecr"].error
    assert push_calls(lab) == []


def test_aws_with_docker_logs_in_on_stdin_builds_and_pushes(lab, monkeypatch, sources):
    """A stand-in for the docker CLI: records each command; its `push` puts an image into
    the (moto) repository the way a real push would end."""
    on_aws(lab)
    monkeypatch.setattr(ecr_step, "docker_available", lambda: True)
    commands: list[tuple[list[str], bytes | None]] = []

    class Done:
        returncode = 0
        stderr = b""

    def fake_run(argv, input=None, **_kwargs):
        commands.append((argv, input))
        if argv[1] == "push":
            uri, tag = argv[2].rsplit(":", 1)
            repo = uri.split("/", 1)[1]
            service = repo.rsplit("/", 1)[1]
            manifest = build_image(sources[service], 8080).manifest.decode()
            ecr().put_image(repositoryName=repo, imageManifest=manifest, imageTag=tag)
        return Done()

    monkeypatch.setattr(ecr_step.subprocess, "run", fake_run)
    lab.run("apply", ["ecr"])
    token = ecr().get_authorization_token()["authorizationData"][0]
    password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)[1]
    out = lab.state.outputs("ecr")
    ref = f"{out['repositories']['products']}:{out['tags']['products']}"
    products = [argv for argv, _ in commands if ref in argv or str(sources["products"]) in argv]
    assert products == [
        ["docker", "build", "--platform", "linux/amd64", "--tag", ref, str(sources["products"])],
        ["docker", "push", ref],
    ]
    logins = [(argv, stdin) for argv, stdin in commands if argv[1] == "login"]
    assert logins and all("--password-stdin" in argv for argv, _ in logins)
    assert all(stdin == password.encode() for _, stdin in logins)
    assert not any(password in " ".join(argv) for argv, _ in commands)
    assert out["images"]["products"].startswith(out["repositories"]["products"] + "@sha256:")
    assert push_calls(lab) == []  # the docker CLI pushed; msctl made no push calls itself

"""`msctl state`: make or check the S3 bucket a team shares labs through, remove a stale
lock, and move a lab's state between the local directory and S3."""

from __future__ import annotations

from pathlib import Path

import click

from . import report
from .cli_common import (
    RunFailed,
    UserError,
    _config_path,
    _globals,
    _state_dir,
    _state_url,
    global_options,
    handle_errors,
    set_option,
)
from .config import LabConfig, load_config
from .state import StateError, StateStore, open_store

URL = "s3://BUCKET/PREFIX"


force_option = click.option(
    "--force", is_flag=True, help="Replace a different state already at the destination."
)


def _parse(url: str) -> str:
    from .state_s3 import parse_url

    try:
        parse_url(url)
    except StateError as exc:
        raise UserError(str(exc)) from None
    return url


def _config(overrides=()) -> tuple[Path, LabConfig]:
    path = _config_path()
    return path, load_config(path, list(overrides))


def _s3_client(config: LabConfig, state_dir: Path, *, start: bool = False):
    """An S3 client for the target (--target): the local emulator, or AWS as `up` uses it.
    Returns (client, region)."""
    from .context import Target
    from .state_s3 import client_for

    if (_globals().target or "local") != "local":
        from .lab import check_aws

        target = check_aws(config)
        return client_for(target), target.region
    from .local import emulator

    if start:
        try:
            info, started = emulator.start(state_dir)
        except emulator.EmulatorError as exc:
            raise RunFailed(str(exc)) from None
        if started:
            report.notice(
                report.make_console(stderr=True),
                f"started the local emulator at {info.endpoint} (pid {info.pid}); "
                "`msctl local stop` ends it",
            )
    else:
        info = emulator.status(state_dir)
        if info is None:
            raise UserError(
                f"the local emulator is not running, so it holds no state bucket: "
                f"`msctl state init {URL}` starts it and makes one (or pass --target aws)"
            )
    target = Target("local", config.region, info.endpoint, info.instance_id)
    return client_for(target), target.region


def _open(location: str, config: LabConfig, config_path: Path) -> StateStore:
    if not location.startswith("s3://"):
        return open_store(Path(location), config.lab)
    client, _region = _s3_client(config, _state_dir(config_path))
    return open_store(_parse(location), config.lab, client=client)


def _location(config: LabConfig, config_path: Path) -> str:
    """--state, else the config's `state:`, else the local state directory."""
    return _state_url() or config.state.location or str(_state_dir(config_path))


@click.group()
@global_options
def state():
    """Where labs keep their state: the local directory (default) or S3, shared by a team.

    \b
    Example, a class sharing its labs in one bucket:
      msctl state init s3://my-class-msctl-state/labs --target aws
      msctl state push s3://my-class-msctl-state/labs --target aws
    """


@state.command("init")
@global_options
@set_option
@click.argument("url", metavar=URL)
@click.option(
    "--adopt",
    is_flag=True,
    help="Set what an existing bucket msctl didn't create lacks, and tag it as msctl's.",
)
@handle_errors
def init(overrides, url, adopt):
    """Create the S3 bucket for shared state, or check an existing one.

    The bucket is made in the target's region (on the local target: in the emulator):
    encrypted (SSE-S3), versioned, Block Public Access on, tagged msctl:state=true. An
    existing bucket is checked and each missing property named; msctl sets them only on
    its own bucket (tagged msctl:state=true) or with --adopt. Exits 1 while any is missing.

    \b
    Examples:
      msctl state init s3://my-class-msctl-state/labs --target aws
      msctl state init s3://my-class-msctl-state/labs --target aws --adopt
    """
    from .state_ops import PROPERTIES, init_bucket
    from .state_s3 import parse_url

    bucket, _prefix = parse_url(_parse(url))
    config_path, config = _config(overrides)
    client, region = _s3_client(config, _state_dir(config_path), start=True)
    done = init_bucket(client, bucket, region, adopt=adopt)
    names = ", ".join(PROPERTIES[p] for p in done.fixed)
    if done.created:
        click.echo(f"created bucket {bucket} in {done.region}: {names}")
    elif done.fixed:
        click.echo(f"bucket {bucket} ({done.region}): set {names}")
    if done.missing:
        lacks = ", ".join(PROPERTIES[p] for p in done.missing)
        if done.owned or adopt:
            raise RunFailed(f"bucket {bucket} still lacks {lacks}")
        raise RunFailed(
            f"bucket {bucket} lacks {lacks}; msctl did not create it (no tag msctl:state=true), "
            "so it changed nothing: set these yourself, or pass --adopt to let msctl set them"
        )
    click.echo(f"bucket {bucket} is ready for msctl state; use it with --state {url}")


@state.command("unlock")
@global_options
@set_option
@click.argument("lock_id")
@handle_errors
def unlock(overrides, lock_id):
    """Remove the lab's lock left by a command that no longer runs (killed, or its machine gone).

    Only a lock in S3 outlives its command. It is removed only when its id is LOCK_ID (the id
    a refused command names); otherwise msctl says whose lock it is. The lab is the config's
    (--set lab=NAME for another); the location is --state, else the config's `state:`.

    \b
    Examples:
      msctl state unlock 0b6d...e1 --state s3://my-class-msctl-state/labs --target aws
      msctl state unlock 0b6d...e1 --state s3://my-class-msctl-state/labs --set lab=student07
    """
    config_path, config = _config(overrides)
    store = _open(_location(config, config_path), config, config_path)
    held = store.unlock(lock_id)
    click.echo(
        f"removed lock {lock_id} of lab '{config.lab}' (held by {held.get('holder', '?')}, "
        f"pid {held.get('pid', '?')}, {held.get('command', '?')}, "
        f"started {held.get('started_at', '?')})"
    )


def _transfer(overrides, url: str, force: bool, to_s3: bool) -> None:
    from .state_ops import transfer

    config_path, config = _config(overrides)
    local = open_store(_state_dir(config_path), config.lab)
    remote = _open(_parse(url), config, config_path)
    command = f"state {'push' if to_s3 else 'pull'} {url}"
    source, dest = (local, remote) if to_s3 else (remote, local)
    click.echo(transfer(source, dest, force=force, command=command))


@state.command("push")
@global_options
@set_option
@force_option
@click.argument("url", metavar=URL)
@handle_errors
def push(overrides, force, url):
    """Copy the lab's state from the local state directory to S3.

    Both places are locked while it copies. A different state of the lab already in S3 is
    kept unless --force. The lab is then used from S3 (--state URL) with no resource changes.

    \b
    Examples:
      msctl state push s3://my-class-msctl-state/labs --target aws
      msctl state push s3://my-class-msctl-state/labs --set lab=student07 --force
    """
    _transfer(overrides, url, force, to_s3=True)


@state.command("pull")
@global_options
@set_option
@force_option
@click.argument("url", metavar=URL)
@handle_errors
def pull(overrides, force, url):
    """Copy the lab's state from S3 to the local state directory (--state-dir).

    Both places are locked while it copies. A different local state of the lab is kept
    unless --force. The lab is then used from the local directory with no resource changes.

    \b
    Examples:
      msctl state pull s3://my-class-msctl-state/labs --target aws
      msctl state pull s3://my-class-msctl-state/labs --state-dir /tmp/lab-copy
    """
    _transfer(overrides, url, force, to_s3=False)

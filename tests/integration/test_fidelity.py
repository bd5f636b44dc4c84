"""The fidelity oracle: an upgraded container equals `docker create` of the user's own flags on the new image.

For each row of a matrix of `docker run` flags (Docker CLI 28.2; many compatible flags per row, to keep it
fast), on Engine 20.10 (API 1.41) and 26.1 (API 1.45): the real CLI creates and starts a container on the old
image, `dockwarden update` upgrades it, and the same CLI creates a container with the same flags on the new
image beside it (never started: it would contend with the upgraded one for addresses and ports). The two are
compared field by field over `Config`, `HostConfig`, `NetworkSettings.Networks` and `Mounts`, modulo
identity: the name, the hostname derived from the ID, the creation time, what an engine assigns at start
(addresses, generated MACs, endpoint and network IDs, the short-ID alias), the `dockwarden.replaces` label,
and the names of anonymous volumes, which must instead be the old container's (checked on their own: the
data survived).

The old and new images differ in every field an image defines (Env, Labels, Cmd, Entrypoint, each
Healthcheck sub-field, StopSignal, WorkingDir, User, ExposedPorts, Volumes), so that a value frozen from the
old image, or an image default taken for the user's, shows up as a difference.

Size: 10 rows x 2 engines = 20 upgrades (83 distinct flags), 60-80 s with `-n 4` on the lab's 2 cores, shared
with other tests (see BENCHMARKS.md).

Flags of `docker run` this machine cannot exercise, and why:
- `--gpus`: no GPU and no NVIDIA runtime (start fails: could not select device driver).
- `--runtime` other than runc (`runc`, `io.containerd.runc.v2`, in the matrix): no other runtime installed.
- `--storage-opt size=...`: overlay2 here is not on xfs with pquota (create fails).
- `--cpu-rt-period`, `--cpu-rt-runtime`: the daemons have no real-time CPU budget (start fails).
- `--isolation` other than `default`: Windows only. `--platform` other than this one: no emulation.
- `--privileged` and `--pid host` on Engine 20.10: its runc applies every capability it knows, and this VM's
  bounding set lacks CAP_SYS_RESOURCE (start fails: unable to apply caps); they are in the 26.1 row, and the
  20.10 row keeps `--ipc host`, for which the engine adds `label=disable` just the same.
- `--mac-address` and `--network name=N,mac-address=M` on Engine 20.10: CLI 28 sends them only to API 1.44+
  (it refuses on 1.41); they are in the 26.1 rows. Several `--network` at create on 20.10: the engine refuses,
  so that row connects the second network with `docker network connect`, as a user on 20.10 must.
- `--blkio-weight`, `--blkio-weight-device`: in the matrix, but this kernel has no blkio weight and the
  engine discards them at create (both containers record 0 alike).
- `--rm`: AutoRemove changes the transaction itself (the old container vanishes when stopped); it belongs to
  the container-state tests, not to this matrix.
- `--cidfile`: the path is recorded and carried, but the file is written by the CLI, not the engine; the
  upgraded container's ID is not written to it (README, "what cannot be carried").
- `-a/--attach`, `--sig-proxy`, `--detach-keys`, `-d`, `--pull`, `-q`, `--disable-content-trust`, `--name`:
  client behaviour, not a field of the container (both containers here are made by `docker create`, which
  sets AttachStdout/AttachStderr as `docker run` without `-d` does).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from dockwarden import config as configuration
from dockwarden import recreate, upgrade
from dockwarden.upgrade import Hooks, Result
from tests.conftest import ENGINE26
from tests.integration.helpers import write_config
from tests.integration.upgrade_lab import free_port, run_cycle, update
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry, start_registry

pytestmark = pytest.mark.engine

CLI = "/usr/local/bin/docker"  # Docker CLI 28.2.2
ENGINE20 = "unix:///var/run/docker.sock"
# PID 1 exits at once on every signal a row may stop it with.
APP = "trap 'exit 0' TERM INT USR1 USR2; httpd -f -p 8080 -h /www & wait"
# A command the user gives: not the old image's own, which would be indistinguishable from it.
USER_APP = f"{APP} # given"
OLD_IMAGE = [
    'LABEL fid.shared="same" fid.old="1"',
    "ENV SHARED=same OLD_ONLY=1",
    'ENTRYPOINT ["/bin/env"]',
    f"CMD {json.dumps(['sh', '-c', APP])}",
    "HEALTHCHECK --interval=1s --timeout=2s --start-period=1s --retries=3 "
    "CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1",
    "STOPSIGNAL SIGUSR1",
    "WORKDIR /www",
    "USER 0",
    "EXPOSE 8080 9000/udp",
    'VOLUME ["/vol1", "/shared"]',
]
NEW_IMAGE = [
    'LABEL fid.shared="same" fid.new="1"',
    "ENV SHARED=same NEW_ONLY=1",
    'ENTRYPOINT ["/bin/env", "IMAGE=new"]',
    f"CMD {json.dumps(['sh', '-c', 'true; ' + APP])}",
    "HEALTHCHECK --interval=1200ms --timeout=3s --start-period=2s --retries=4 "
    'CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]',
    "STOPSIGNAL SIGUSR2",
    "WORKDIR /",
    "USER 0:0",
    "EXPOSE 8080 9001",
    'VOLUME ["/vol2", "/shared"]',
]


@dataclass(frozen=True, kw_only=True)
class Pair:
    """The old and new image, and a new image that exits at once, pushed to a registry of their own."""

    old: str  # repo:tag references
    new: str
    broken: str


@dataclass(kw_only=True)
class Ctx:
    """One row's world on one engine: what its flags refer to, created for it and removed after it."""

    engine: str  # "20.10" or "26.1"
    host: str  # DOCKER_HOST for the CLI
    prefix: str
    run_label: str
    tmp: Path
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    peer: str = ""

    @property
    def modern(self) -> bool:
        """API 1.44+: a MAC and an IP per network, several networks at create."""
        return self.engine == "26.1"

    def docker(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        """Run the Docker CLI against this engine; returns its stdout."""
        proc = subprocess.run(
            [CLI, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_HOST": self.host, **(env or {})},
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def inspect(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", "--type", "container", name))
        return found[0]

    def network(self, suffix: str, subnet: str, subnet6: str | None = None) -> str:
        name = f"{self.prefix}-{suffix}"
        extra = ["--ipv6", "--subnet", subnet6] if subnet6 else []
        self.docker(
            "network", "create", "--label", f"{LABEL}={self.run_label}", "--subnet", subnet, *extra, name
        )
        self.networks.append(name)
        return name

    def volume(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.docker("volume", "create", "--label", f"{LABEL}={self.run_label}", name)
        self.volumes.append(name)
        return name

    def start_peer(self, image: str, *flags: str) -> str:
        """A running container for --link, --volumes-from and container: namespaces."""
        self.peer = f"{self.prefix}-peer"
        label = f"{LABEL}={self.run_label}"
        self.docker("run", "-d", "--name", self.peer, "--label", label, "-v", "/peerdata", *flags, image)
        return self.peer

    def cleanup(self) -> None:
        found = self.docker("ps", "-aq", "--filter", f"name={self.prefix}", check=False).split()
        for container in found:
            mounts = self.inspect(container).get("Mounts") or []
            self.volumes.extend(m["Name"] for m in mounts if m.get("Type") == "volume")
            self.docker("rm", "-f", "-v", container, check=False)
        for network in self.networks:
            self.docker("network", "rm", network, check=False)
        for volume in dict.fromkeys(self.volumes):
            self.docker("volume", "rm", "-f", volume, check=False)
        for cgroup in Path("/sys/fs/cgroup").glob(f"*/{self.prefix}"):  # --cgroup-parent on cgroup v1
            with contextlib.suppress(OSError):
                cgroup.rmdir()


@dataclass(frozen=True, kw_only=True)
class Run:
    """What a row gives the CLI: flags before the image, arguments after it, and commands to run after
    create (`{name}` stands for the container), as the user would."""

    flags: list[str]
    args: list[str] = field(default_factory=list)
    after: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # for the CLI process (DOCKER_CONFIG)


def _config_and_labels(ctx: Ctx, image: str) -> Run:
    """Config fields: env (user, override of an image variable, and from a file), labels (also from a file and
    over an image label), hostname, domain, user, workdir, stop signal and timeout, a partial health override,
    ports, TTY, init, restart, DNS, hosts; the image's command and entrypoint apply."""
    env_file, label_file = ctx.tmp / "env", ctx.tmp / "labels"
    env_file.write_text("FROM_FILE=1\n")
    label_file.write_text("fid.fromfile=1\n")
    flags = [
        *(
            "-e",
            "USER_VAR=one",
            "-e",
            "OLD_ONLY=overridden",
            "--env",
            "SHARED=same",
            "--env-file",
            str(env_file),
        ),
        *("--label", "fid.user=1", "-l", "fid.old=user", "--label-file", str(label_file)),
        *(
            "--hostname",
            "fidhost",
            "--domainname",
            "example.test",
            "--user",
            "1000:1000",
            "--workdir",
            "/srv",
        ),
        *(
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "3",
            "--health-interval",
            "1500ms",
            "--health-retries",
            "5",
        ),
        *("--expose", "7000", "--expose", "7001/udp", "-p", "127.0.0.1::8080", "-P", "-t", "-i", "--init"),
        *("--restart", "on-failure:3", "--dns", "10.0.0.53", "--dns-search", "example.test"),
        *("--dns-option", "ndots:2", "--add-host", "db.internal:10.9.9.9", "--add-host", "other:10.9.9.10"),
        *("--platform", "linux/amd64", "--pull", "missing", "-q", "--disable-content-trust"),
    ]
    if ctx.modern:
        flags += ["--mac-address", "02:00:00:0a:00:01"]
    return Run(flags=flags)


def _resources(ctx: Ctx, image: str) -> Run:
    """Resource limits, a read-only root with tmpfs, sysctls, ulimits, log options without a driver; an
    explicit command (the image's entrypoint applies to it)."""
    flags = [
        *("--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--cpuset-mems", "0"),
        *(
            "--memory",
            "64m",
            "--memory-reservation",
            "32m",
            "--memory-swap",
            "128m",
            "--memory-swappiness",
            "10",
        ),
        *("--kernel-memory", "32m", "--pids-limit", "100", "--oom-score-adj", "100", "--oom-kill-disable"),
        *("--blkio-weight", "300", "--blkio-weight-device", "/dev/vda:300"),
        *("--device-read-bps", "/dev/vda:1mb", "--device-write-iops", "/dev/vda:100"),
        *("--ulimit", "nofile=1024:2048", "--ulimit", "nproc=512", "--shm-size", "32m"),
        *("--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.msgmax=65536"),
        *("--read-only", "--tmpfs", "/run:size=1m", "--tmpfs", "/scratch"),
        *("--log-opt", "max-size=1m", "--log-opt", "max-file=2"),
    ]
    return Run(flags=flags, args=["sh", "-c", USER_APP])


def _cfs_and_cleared_entrypoint(ctx: Ctx, image: str) -> Run:
    """CPU CFS period and quota, another log driver, `--entrypoint ""` with a command, a named cgroup parent,
    an explicit runtime."""
    flags = [
        *("--cpu-period", "100000", "--cpu-quota", "50000", "--entrypoint", ""),
        *("--log-driver", "local", "--log-opt", "max-size=2m", "--cgroup-parent", f"/{ctx.prefix}"),
        *("--runtime", "io.containerd.runc.v2", "--memory-swap", "-1", "--memory", "48m"),
    ]
    return Run(flags=flags, args=["sh", "-c", USER_APP])


def _security(ctx: Ctx, image: str) -> Run:
    """Capabilities, security options (systempaths=unconfined clears MaskedPaths and ReadonlyPaths), groups,
    devices, namespaces modes, no health check, and an entrypoint given without arguments."""
    flags = [
        *("--cap-add", "NET_ADMIN", "--cap-add", "SYS_TIME", "--cap-drop", "MKNOD", "--group-add", "123"),
        *("--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined"),
        *("--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined"),
        *("--device", "/dev/null:/dev/xnull:rwm", "--device-cgroup-rule", "c 1:3 r", "--ipc", "shareable"),
        *(
            "--cgroupns",
            "private",
            "--userns",
            "host",
            "--uts",
            "host",
            "--no-healthcheck",
            "--isolation",
            "default",
        ),
        *("--entrypoint", "/bin/sh", "--log-driver", "json-file"),
    ]
    return Run(flags=flags, args=["-c", USER_APP])


def _privileged(ctx: Ctx, image: str) -> Run:
    """A privileged container in the host's PID and IPC namespaces (the engine adds label=disable to it), with
    a full health check override and a command of its own."""
    flags = [
        *("--ipc", "host", "--cgroupns", "host"),
        *("--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/", "--health-interval", "900ms"),
        *("--health-timeout", "2500ms", "--health-retries", "2", "--health-start-period", "500ms"),
    ]
    if ctx.modern:  # Engine 20.10's runc cannot start these on this VM (see the module's docstring)
        flags += ["--privileged", "--pid", "host"]
    return Run(flags=flags, args=["sh", "-c", USER_APP])


def _user_networks(ctx: Ctx, image: str) -> Run:
    """Two user networks with static IPv4 and IPv6 addresses, aliases, per-network MACs (API 1.44+), a
    link-local address, a legacy link on a user network."""
    salt = uuid.uuid4().bytes
    subnet_a, subnet_b = f"10.{100 + salt[0] % 100}.{salt[1]}.0/24", f"10.{200 + salt[2] % 50}.{salt[3]}.0/24"
    subnet6 = f"fd00:{salt[4]:02x}{salt[5]:02x}:{salt[6]:02x}{salt[7]:02x}::/64"
    net_a, net_b = ctx.network("a", subnet_a), ctx.network("b", subnet_b, subnet6)
    ip_a, ip_b, ip6_b = (
        subnet_a.replace(".0/24", ".10"),
        subnet_b.replace(".0/24", ".20"),
        subnet6.replace("::/64", "::20"),
    )
    peer = ctx.start_peer(image)
    ctx.docker("network", "connect", net_a, peer)
    if ctx.modern:
        flags = [
            "--network", f"name={net_a},ip={ip_a},alias=alpha,mac-address=02:00:00:0b:00:01",
            "--network", f"name={net_b},ip={ip_b},ip6={ip6_b},alias=beta,mac-address=02:00:00:0b:00:02",
        ]  # fmt: skip
        return Run(flags=[*flags, "--link", f"{peer}:db", "--link-local-ip", "169.254.10.10"])
    flags = ["--network", net_a, "--ip", ip_a, "--network-alias", "alpha", "--link", f"{peer}:db"]
    connect = ["network", "connect", "--ip", ip_b, "--ip6", ip6_b, "--alias", "beta", net_b, "{name}"]
    return Run(flags=[*flags, "--link-local-ip", "169.254.10.10"], after=[connect])


def _volumes(ctx: Ctx, image: str) -> Run:
    """Named volumes, binds, anonymous volumes by -v and by --mount (one over an image's VOLUME), volume
    options, a tmpfs mount, a volume driver."""
    named, nocopy = ctx.volume("named"), ctx.volume("nocopy")
    host_dir = ctx.tmp / "bind"
    host_dir.mkdir()
    flags = [
        *("-v", f"{named}:/named", "-v", f"{host_dir}:/hostdir:ro", "-v", "/anon"),
        *("--mount", "type=volume,dst=/manon", "--mount", "type=volume,dst=/shared"),
        *("--mount", f"type=volume,src={nocopy},dst=/mnamed,volume-nocopy"),
        *(
            "--mount",
            f"type=bind,src={host_dir},dst=/mbind,readonly",
            "--mount",
            "type=tmpfs,dst=/mtmp,tmpfs-size=1m",
        ),
        *("--volume-driver", "local"),
    ]
    return Run(flags=flags)


def _host_network(ctx: Ctx, image: str) -> Run:
    """The host's network with a hostname of one's own, and volumes from another container beside an
    anonymous volume of its own."""
    peer = ctx.start_peer(image)
    port = str(free_port())  # the host's ports are shared with every other test
    check = f"wget -q -O /dev/null http://127.0.0.1:{port}/"
    flags = ["--network", "host", "--hostname", "fidhost", "--volumes-from", f"{peer}:ro", "-v", "/own"]
    return Run(flags=[*flags, "--health-cmd", check], args=["sh", "-c", USER_APP.replace("8080", port)])


def _shared_namespaces(ctx: Ctx, image: str) -> Run:
    """Another container's network, IPC and PID namespaces."""
    peer = ctx.start_peer(image, "--ipc", "shareable")
    own_port = APP.replace("8080", "8081")  # the peer's server holds 8080 in the shared network namespace
    return Run(
        flags=["--network", f"container:{peer}", "--ipc", f"container:{peer}", "--pid", f"container:{peer}"],
        args=["sh", "-c", own_port],
    )


def _api_socket(ctx: Ctx, image: str) -> Run:
    """`--use-api-socket`: the socket mount, DOCKER_CONFIG, and the credentials file the CLI copies in."""
    config_dir = ctx.tmp / "dockercfg"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5999": {"auth": "ZmlkOmZpZA=="}}})
    )
    return Run(flags=["--use-api-socket", "--no-healthcheck"], env={"DOCKER_CONFIG": str(config_dir)})


ROWS: dict[str, Callable[[Ctx, str], Run]] = {
    "config": _config_and_labels,
    "resources": _resources,
    "cfs-entrypoint": _cfs_and_cleared_entrypoint,
    "security": _security,
    "privileged": _privileged,
    "networks": _user_networks,
    "volumes": _volumes,
    "host-network": _host_network,
    "namespaces": _shared_namespaces,
    "api-socket": _api_socket,
}


@pytest.fixture(scope="module")
def pair(
    docker_client: docker.DockerClient, run_label: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    """The two images, built on Engine 20.10 and pushed to a registry of this module's (26.1 pulls them)."""
    registry: Registry = start_registry(tmp_path_factory.mktemp("fidelity-registry"))
    factory = ImageFactory(docker_client, run_label)
    try:
        old, new, broken = (f"{registry.host}/fid:{tag}" for tag in ("old", "new", "broken"))
        factory.build(old, f"old-{uuid.uuid4().hex[:8]}", cmd=["sh", "-c", APP], lines=OLD_IMAGE)
        factory.build(new, f"new-{uuid.uuid4().hex[:8]}", cmd=["sh", "-c", APP], lines=NEW_IMAGE)
        factory.build(broken, f"broken-{uuid.uuid4().hex[:8]}", lines=[*NEW_IMAGE, 'CMD ["false"]'])
        for tag in (old, new, broken):
            factory.push(tag)
        yield Pair(old=old, new=new, broken=broken)
    finally:
        factory.cleanup()
        registry.stop()


@pytest.fixture(params=["20.10", "26.1"])
def ctx(request: pytest.FixtureRequest, run_label: str, tmp_path: Path) -> Iterator[Ctx]:
    if request.param == "26.1":
        request.getfixturevalue("docker26")  # its leak check covers what this test pulls there
    world = Ctx(
        engine=request.param,
        host=ENGINE20 if request.param == "20.10" else ENGINE26,
        prefix=f"dw-fid-{uuid.uuid4().hex[:8]}",
        run_label=run_label,
        tmp=tmp_path,
    )
    yield world
    world.cleanup()


def _create(ctx: Ctx, name: str, image: str, run: Run) -> None:
    ctx.docker(
        "create",
        "--name",
        name,
        "--label",
        f"{LABEL}={ctx.run_label}",
        *run.flags,
        image,
        *run.args,
        env=run.env,
    )
    for command in run.after:
        ctx.docker(*(part.replace("{name}", name) for part in command))


@pytest.mark.parametrize("row", sorted(ROWS))
def test_upgraded_container_equals_docker_create_on_the_new_image(
    row: str, ctx: Ctx, pair: Pair, tmp_path: Path
) -> None:
    """After an upgrade, every field of Config, HostConfig, the networks and the mounts equals what the same
    `docker create` flags give on the new image, modulo identity; anonymous volumes are the old ones."""
    run = ROWS[row](ctx, pair.old)
    name = f"{ctx.prefix}-{row}"
    _create(ctx, name, pair.old, run)
    ctx.docker("start", name)
    old = ctx.inspect(name)
    anonymous = _anonymous_volumes(old)
    writable = [m["Destination"] for m in old["Mounts"] if m["Destination"] in anonymous and m["RW"]]
    if writable:
        ctx.docker("exec", "-u", "0", name, "sh", "-c", "; ".join(f"echo kept > {d}/.fid" for d in writable))
    extra = f"stability_window: 1s\ndocker_host: {ctx.host}"
    code, rows, err = update(
        write_config(tmp_path / "dw.yaml", {"svc": {"container": name, "image": pair.new}}, extra)
    )
    failures = [line for line in err.splitlines() if '"upgrade.failed"' in line or "rollback" in line]
    assert (code, [r["result"] for r in rows]) == (0, ["upgraded"]), failures or err[-3000:]

    upgraded = ctx.inspect(name)
    oracle_name = f"{ctx.prefix}-oracle"
    _create(ctx, oracle_name, pair.new, run)
    oracle = ctx.inspect(oracle_name)

    differences = _diff(_normal(upgraded, anonymous, ctx), _normal(oracle, {}, ctx))
    assert not differences, "\n".join(differences)
    kept = {m["Destination"]: m["Name"] for m in upgraded["Mounts"] if m.get("Name") in anonymous.values()}
    carried = {d: v for d, v in anonymous.items() if d in kept or d in _volume_paths(oracle)}
    assert kept == carried  # every anonymous volume the new container has at that path is the old one
    for destination in set(carried) & set(writable):  # and its data with it
        assert ctx.docker("exec", name, "cat", f"{destination}/.fid") == "kept"
    if row == "api-socket":  # the credentials the CLI copied in are there, as in a fresh `docker create`
        credentials = _file(ctx, name, recreate.API_SOCKET_CONFIG, tmp_path / "kept")
        assert credentials
        assert credentials == _file(ctx, oracle_name, recreate.API_SOCKET_CONFIG, tmp_path / "fresh")


def test_a_rolled_back_successor_leaves_no_volume_behind(ctx: Ctx, pair: Pair, tmp_path: Path) -> None:
    """A new version that fails its gate is removed with the anonymous volumes made for it (its image's new
    VOLUME), while the old container keeps its own, which the successor had mounted by name."""
    name = f"{ctx.prefix}-rollback"
    run = Run(flags=["-v", "/anon", "--mount", "type=volume,dst=/manon", "--no-healthcheck"])
    _create(ctx, name, pair.old, run)
    ctx.docker("start", name)
    old = ctx.inspect(name)
    successor: dict[str, str] = {}

    def look(step: str) -> None:
        if step == upgrade.Step.GATE:
            mounts = ctx.inspect(name)["Mounts"]
            successor.update({m["Destination"]: m["Name"] for m in mounts if m["Type"] == "volume"})

    extra = f"stability_window: 1s\ndocker_host: {ctx.host}"
    cfg = write_config(tmp_path / "dw.yaml", {"svc": {"container": name, "image": pair.broken}}, extra)
    report = run_cycle(configuration.load(cfg), Hooks(checkpoint=look))

    assert [(o.result, o.step) for o in report.outcomes] == [(Result.ROLLED_BACK, upgrade.Step.GATE)]
    back = ctx.inspect(name)
    assert back["Id"] == old["Id"]
    kept = {m["Destination"]: m["Name"] for m in back["Mounts"] if m["Type"] == "volume"}
    assert {d: successor[d] for d in ("/anon", "/manon", "/shared")} == {
        d: kept[d] for d in ("/anon", "/manon", "/shared")
    }
    made = set(successor.values()) - set(kept.values())
    assert made  # the new image's VOLUME /vol2
    left = [v for v in made if v in ctx.docker("volume", "ls", "-q", "--filter", f"name={v}").split()]
    assert left == []


def _diff(upgraded: Any, fresh: Any, path: str = "") -> list[str]:
    """Every path where the upgraded container differs from the fresh one, with both values."""
    if isinstance(upgraded, dict) and isinstance(fresh, dict):
        return [
            d
            for k in sorted({*upgraded, *fresh})
            for d in _diff(upgraded.get(k), fresh.get(k), f"{path}.{k}")
        ]
    return [] if upgraded == fresh else [f"{path}: upgraded {upgraded!r}, docker create {fresh!r}"]


def _file(ctx: Ctx, container: str, path: str, into: Path) -> bytes:
    """The content of a file in a container (`docker cp`, which works on a container never started)."""
    into.mkdir()
    ctx.docker("cp", f"{container}:{path}", str(into))
    return (into / Path(path).name).read_bytes()


def _anonymous_volumes(container: dict[str, Any]) -> dict[str, str]:
    """Destination -> name of the container's volumes that no flag named."""
    named = {b.split(":")[0] for b in container["HostConfig"].get("Binds") or ()}
    named |= {m.get("Source") for m in container["HostConfig"].get("Mounts") or ()}
    return {
        m["Destination"]: m["Name"]
        for m in container.get("Mounts") or ()
        if m.get("Type") == "volume" and m["Name"] not in named
    }


def _volume_paths(container: dict[str, Any]) -> set[str]:
    return {m["Destination"] for m in container.get("Mounts") or () if m.get("Type") == "volume"}


def _normal(container: dict[str, Any], anonymous: dict[str, str], ctx: Ctx) -> dict[str, Any]:
    """The container's shape without its identity (see the module's docstring)."""
    short, name = container["Id"][:12], container["Name"]
    anon_names = set(anonymous.values())
    config = dict(container["Config"])
    if config.get("Hostname") == short:
        config["Hostname"] = "<own ID>"
    if str(container["HostConfig"].get("NetworkMode")).startswith("container:"):
        config["Hostname"] = "<the other container's>"  # taken from it at start
    # CLI 28 sends the environment through a Go map (proxy settings merged in): in no one's order.
    config["Env"] = sorted(config.get("Env") or ())
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if k != recreate.REPLACES_LABEL}
    host = dict(container["HostConfig"])
    # The CLI sends -v binds in its map's order, which Go randomises: their order is no one's choice.
    host["Binds"] = sorted(b for b in host.get("Binds") or () if b.split(":")[0] not in anon_names) or None
    host["Mounts"] = [
        {k: v for k, v in m.items() if k != "Source" or (v and v not in anon_names)}
        for m in host.get("Mounts") or ()
    ] or None
    host["Links"] = [link.replace(f"{name}/", "<self>/") for link in host.get("Links") or ()] or None
    networks = {
        net: _endpoint(ep, short, ctx) for net, ep in (container["NetworkSettings"]["Networks"] or {}).items()
    }
    mounts = sorted(
        (
            m["Type"],
            m["Destination"],
            "<anonymous>"
            if m.get("Name") in anon_names or _is_anon(m, container)
            else m.get("Name") or m.get("Source"),
            m["RW"],
        )
        for m in container.get("Mounts") or ()
    )
    return {"Config": config, "HostConfig": host, "Networks": networks, "Mounts": mounts}


def _is_anon(mount: dict[str, Any], container: dict[str, Any]) -> bool:
    return mount.get("Type") == "volume" and mount.get("Name") in _anonymous_volumes(container).values()


def _endpoint(endpoint: dict[str, Any], short: str, ctx: Ctx) -> dict[str, Any]:
    """An endpoint's configuration: what the user asked for, not what the engine assigned at start."""
    mac = endpoint.get("MacAddress") or ""
    if mac == recreate.generated_mac(endpoint.get("IPAddress") or "") or not ctx.modern:
        mac = ""  # 20.10 shows a MAC only once started; Config.MacAddress holds the user's there
    return {
        "IPAMConfig": endpoint.get("IPAMConfig") or None,
        "Aliases": [a for a in endpoint.get("Aliases") or () if a != short] or None,
        "Links": endpoint.get("Links") or None,
        "DriverOpts": endpoint.get("DriverOpts") or None,
        "MacAddress": mac,
    }

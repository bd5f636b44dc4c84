"""The create body computed from recorded inspect documents of Engine 20.10 (API 1.41) and 26.1 (API 1.45).

Two recordings: `recreate-engine*.json`, one container made through docker-py with many options, and
`fidelity-engine*.json`, containers made by the Docker CLI 28 with the flags listed in the file, on the old
image of tests/integration/test_fidelity.py (whose new image differs in every field an image defines), with
the engine's own defaults (`Engine.defaults`) read on the same engine.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dockwarden import recreate

DATA = Path(__file__).resolve().parents[1] / "data"
NEW_IMAGE: dict[str, Any] = {"Id": "sha256:" + "b" * 64, "Config": {"Env": ["PATH=/bin", "APP_MARKER=new"]}}


@pytest.fixture(params=["recreate-engine20.json", "recreate-engine26.json"])
def recorded(request: pytest.FixtureRequest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / request.param).read_text())
    return data


@pytest.fixture(params=["fidelity-engine20.json", "fidelity-engine26.json"], scope="module")
def cli(request: pytest.FixtureRequest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / request.param).read_text())
    return data


def _plan(recorded: dict[str, Any], **changes: Any) -> recreate.CreatePlan:
    container = copy.deepcopy(recorded["container"])
    container["Config"].update(changes.pop("config", {}))
    container["HostConfig"].update(changes.pop("host", {}))
    return recreate.plan(container, recorded["image"], NEW_IMAGE, "127.0.0.1:5000/cap:latest")


def _cli_plan(cli: dict[str, Any], name: str, **changes: Any) -> recreate.CreatePlan:
    """The plan for the CLI-made container `name`, on the engine it was recorded on (its defaults)."""
    container = copy.deepcopy(cli["containers"][name])
    container["Config"].update(changes.pop("config", {}))
    container["HostConfig"].update(changes.pop("host", {}))
    defaults = changes.pop("defaults", recreate.EngineDefaults.from_probe(cli["defaults"]))
    new_image = changes.pop("new_image", cli["new_image"])
    return recreate.plan(container, cli["old_image"], new_image, "reg/fid:new", defaults=defaults)


# -- the recorded docker-py container ------------------------------------------------------------


def test_values_from_the_old_image_are_not_frozen_in(recorded: dict[str, Any]) -> None:
    """Env, Cmd, Healthcheck and labels equal to the old image's are left out: the new image's apply."""
    body = _plan(recorded).body
    assert body["Env"] == ["USERVAR=1"]
    for key in ("Cmd", "Healthcheck", "Entrypoint", "WorkingDir", "User"):
        assert key not in body
    assert "marker" not in body["Labels"]
    assert "dockwarden.test" not in body["Labels"]  # equal to the image's label: the new image's applies


def test_user_values_are_kept(recorded: dict[str, Any]) -> None:
    """What the user set survives: env, compose labels, stop signal, MAC, volumes, host config, log option."""
    container = recorded["container"]
    body = _plan(recorded).body
    assert body["Labels"]["com.docker.compose.project"] == "demo"
    assert body["Labels"][recreate.REPLACES_LABEL] == container["Id"]
    assert body["StopSignal"] == "SIGINT"
    assert body["MacAddress"] == "02:42:ac:11:00:99"
    assert body["Volumes"] == {"/anon": {}}
    assert body["Image"] == "127.0.0.1:5000/cap:latest"
    host = body["HostConfig"]
    for key in ("PortBindings", "RestartPolicy", "Memory", "CapAdd", "CapDrop", "Tmpfs"):
        assert host[key] == container["HostConfig"][key], key
    # The user's log option is kept; the driver was the engine's default, so the engine names it again.
    assert host["LogConfig"] == {"Type": "", "Config": {"max-size": "1m"}}


def test_overrides_differing_from_the_image_are_kept(recorded: dict[str, Any]) -> None:
    """A Cmd, Entrypoint or user that differs from the old image's was set by the user, so it is kept."""
    body = _plan(
        recorded, config={"Cmd": ["sleep", "1"], "Entrypoint": ["/bin/sh", "-c"], "User": "1000"}
    ).body
    assert (body["Cmd"], body["Entrypoint"], body["User"]) == (["sleep", "1"], ["/bin/sh", "-c"], "1000")


def test_hostname_equal_to_the_old_id_is_dropped_and_a_chosen_one_kept(recorded: dict[str, Any]) -> None:
    """The default hostname (the old short ID) is not copied; a hostname the user chose is."""
    assert "Hostname" not in _plan(recorded).body
    assert _plan(recorded, config={"Hostname": "web1"}).body["Hostname"] == "web1"


def test_anonymous_volume_is_reattached_by_name(recorded: dict[str, Any]) -> None:
    """The anonymous /anon volume is bound by its name, after the user's own binds."""
    anon = next(m["Name"] for m in recorded["container"]["Mounts"] if m["Destination"] == "/anon")
    assert _plan(recorded).body["HostConfig"]["Binds"] == [
        "dwcapvol:/data",
        "/tmp:/hosttmp:ro",  # noqa: S108 -- a recorded bind, not a temporary file
        f"{anon}:/anon",
    ]


def test_networks_keep_static_ip_aliases_and_mac_but_not_the_old_id(recorded: dict[str, Any]) -> None:
    """The primary network keeps its static IP, alias and user-set MAC, minus the old short-ID alias; the
    default bridge is connected before start, without aliases, and without its engine-made MAC."""
    plan = _plan(recorded)
    endpoint = plan.body["NetworkingConfig"]["EndpointsConfig"]["dwcapnet"]
    assert endpoint == {
        "IPAMConfig": {"IPv4Address": "172.31.77.10"},
        "Aliases": ["webalias"],
        "MacAddress": "02:42:ac:11:00:99",
    }
    assert plan.connect == {"bridge": {}}


@pytest.mark.parametrize("mode", ["host", "none", "container:0123456789ab"])
def test_shared_namespaces_get_no_endpoints_or_mac(recorded: dict[str, Any], mode: str) -> None:
    """host, none and container:X modes are kept as they are, with no networks to connect and no MAC; a
    chosen hostname is kept except under container:X, whose create refuses one."""
    plan = _plan(recorded, host={"NetworkMode": mode}, config={"Hostname": "somehost"})
    assert plan.body["HostConfig"]["NetworkMode"] == mode
    assert "NetworkingConfig" not in plan.body
    assert plan.connect == {}
    assert "MacAddress" not in plan.body
    assert ("Hostname" in plan.body) is not mode.startswith("container:")


def test_published_port_stays_exposed_when_the_image_declared_it(recorded: dict[str, Any]) -> None:
    """A port exposed by the old image but published by the user stays exposed, so it stays published."""
    old_image = copy.deepcopy(recorded["image"])
    old_image["Config"]["ExposedPorts"] = {"8080/tcp": {}, "9090/tcp": {}}
    container = copy.deepcopy(recorded["container"])
    container["Config"]["ExposedPorts"] = {"8080/tcp": {}, "9090/tcp": {}}
    body = recreate.plan(container, old_image, NEW_IMAGE, "x:latest").body
    assert body["ExposedPorts"] == {"8080/tcp": {}}


def test_links_are_rewritten_to_the_create_form(recorded: dict[str, Any]) -> None:
    """Inspect's "/db:/web/database" link becomes create's "db:database"."""
    body = _plan(recorded, host={"Links": ["/db:/dwcap/database"]}).body
    assert body["HostConfig"]["Links"] == ["db:database"]


def test_mode_override_replaces_a_recreated_namespace_owner(recorded: dict[str, Any]) -> None:
    """A container:X child is pointed at the new X."""
    container = copy.deepcopy(recorded["container"])
    container["HostConfig"]["NetworkMode"] = "container:old"
    plan = recreate.plan(container, recorded["image"], NEW_IMAGE, "x:latest", "container:new")
    assert plan.body["HostConfig"]["NetworkMode"] == "container:new"


# -- Config: the user's part of what the image fills in ------------------------------------------------


@pytest.mark.parametrize(
    ("env", "image_env", "users"),
    [
        (["A=1", "B=2"], ["A=1", "B=2"], []),  # all the image's
        (["X=1", "A=1", "B=2"], ["A=1", "B=2"], ["X=1"]),
        (["B=9", "A=1"], ["A=1", "B=2"], ["B=9"]),  # an override takes the image's entry's place
        (["B=2", "X=1", "A=1"], ["A=1", "B=2"], ["B=2", "X=1"]),  # equal to the image's, yet before X: given
        (["X=1"], [], ["X=1"]),
        (["A=1", "X=1"], ["X=2"], ["A=1", "X=1"]),
        (["Z=1", "A=1"], ["A=1", "B=2"], ["Z=1", "A=1"]),  # not merge's shape: every entry is kept
    ],
)
def test_user_env_is_the_prefix_before_the_image_entries(
    env: list[str], image_env: list[str], users: list[str]
) -> None:
    """The engine appends the image's unnamed entries after the user's, which tells them apart."""
    assert recreate.user_env(env, image_env) == users


def test_env_given_equal_to_the_image_is_kept_when_the_order_shows_it(cli: dict[str, Any]) -> None:
    """`-e SHARED=same -e USER_VAR=1` over an image with SHARED=same: both are the user's."""
    assert _cli_plan(cli, "env-order").body["Env"] == ["SHARED=same", "USER_VAR=1"]


def test_image_command_entrypoint_and_scalars_follow_the_new_image(cli: dict[str, Any]) -> None:
    """A plain `docker run IMAGE`: nothing the image defines is frozen into the body."""
    body = _cli_plan(cli, "plain").body
    for key in ("Env", "Cmd", "Entrypoint", "Healthcheck", "StopSignal", "WorkingDir", "User", "Volumes"):
        assert key not in body, key
    assert "ExposedPorts" not in body
    assert set(body["Labels"]) == {recreate.REPLACES_LABEL}


def test_stop_signal_workdir_and_user_given_are_kept(cli: dict[str, Any]) -> None:
    """`--stop-signal`, `-w` and `-u` that differ from the old image's survive."""
    body = _cli_plan(cli, "env-order").body
    assert (body["StopSignal"], body["WorkingDir"], body["User"]) == ("SIGINT", "/srv", "1000")


def test_cleared_entrypoint_stays_cleared(cli: dict[str, Any]) -> None:
    """`--entrypoint ""`: the engine records none while the image has one; it is sent back as the CLI does."""
    body = _cli_plan(cli, "cleared-entrypoint").body
    assert body["Entrypoint"] == [""]
    assert body["Cmd"][:2] == ["sh", "-c"]


def test_a_given_entrypoint_keeps_its_command_even_one_equal_to_the_image(cli: dict[str, Any]) -> None:
    """Once the user names an entrypoint, the engine never fills in the image's Cmd: the Cmd is the user's."""
    image_cmd = cli["old_image"]["Config"]["Cmd"]
    body = _cli_plan(cli, "user-entrypoint", config={"Cmd": image_cmd}).body
    assert (body["Entrypoint"], body["Cmd"]) == (["/bin/sh"], image_cmd)


def test_the_image_entrypoint_given_without_arguments_is_the_users(cli: dict[str, Any]) -> None:
    """Entrypoint equal to the image's but no Cmd although the image has one: the user gave `--entrypoint`."""
    image = cli["old_image"]["Config"]
    body = _cli_plan(cli, "plain", config={"Entrypoint": image["Entrypoint"], "Cmd": None}).body
    assert body["Entrypoint"] == image["Entrypoint"]
    assert "Cmd" not in body


def test_a_partial_health_override_keeps_only_its_own_sub_fields(cli: dict[str, Any]) -> None:
    """`--health-interval --health-retries`: those two; the new image's test, timeout and start period."""
    assert _cli_plan(cli, "partial-health").body["Healthcheck"] == {"Interval": 1500000000, "Retries": 5}


def test_no_healthcheck_is_kept(cli: dict[str, Any]) -> None:
    """`--no-healthcheck` (Test NONE) survives; the intervals the engine merged in do not."""
    assert _cli_plan(cli, "no-healthcheck").body["Healthcheck"] == {"Test": ["NONE"]}


def test_a_healthcheck_over_an_image_without_one_is_the_users() -> None:
    """Every sub-field is the user's when the old image had no HEALTHCHECK."""
    have = {"Test": ["CMD", "true"], "Interval": 10, "Retries": 0}
    assert recreate.user_healthcheck(have, None) == {"Test": ["CMD", "true"], "Interval": 10}


# -- HostConfig: the user's part of what the engine fills in ---------------------------------------------


ENGINE_FILLED = ("ShmSize", "IpcMode", "CgroupnsMode", "Runtime", "MaskedPaths", "ReadonlyPaths", "LogConfig")


def test_engine_defaults_are_not_frozen(cli: dict[str, Any]) -> None:
    """What the engine filled into a plain container is left for the engine to fill in again."""
    host = _cli_plan(cli, "plain").body["HostConfig"]
    assert [key for key in ENGINE_FILLED if key in host] == []


def test_an_older_engines_defaults_follow_a_newer_engine() -> None:
    """A 20.10 container recreated on 26.1 (its defaults, which mask one path more) takes 26.1's."""
    old = json.loads((DATA / "fidelity-engine20.json").read_text())
    new = json.loads((DATA / "fidelity-engine26.json").read_text())
    defaults = recreate.EngineDefaults.from_probe(new["defaults"])
    assert len(new["defaults"]["HostConfig"]["MaskedPaths"]) > len(
        old["defaults"]["HostConfig"]["MaskedPaths"]
    )
    host = _cli_plan(old, "plain", defaults=defaults).body["HostConfig"]
    assert [key for key in ENGINE_FILLED if key in host] == []


def test_builtin_defaults_know_every_releases_masked_paths(cli: dict[str, Any]) -> None:
    """Without a probe, moby's own lists (and a host's thermal_throttle paths) are recognised as defaults."""
    masked = [*cli["defaults"]["HostConfig"]["MaskedPaths"], "/sys/devices/system/cpu/cpu3/thermal_throttle"]
    host = _cli_plan(cli, "plain", host={"MaskedPaths": masked}, defaults=recreate.BUILTIN).body["HostConfig"]
    assert "MaskedPaths" not in host
    assert "ReadonlyPaths" not in host


def test_settings_the_user_gave_over_engine_defaults_are_kept(cli: dict[str, Any]) -> None:
    """systempaths=unconfined (empty lists), --shm-size, --ipc and --log-opt without --log-driver."""
    host = _cli_plan(cli, "systempaths-log").body["HostConfig"]
    assert (host["MaskedPaths"], host["ReadonlyPaths"]) == ([], [])
    assert (host["ShmSize"], host["IpcMode"]) == (32 * 1024 * 1024, "shareable")
    assert host["LogConfig"] == {"Type": "", "Config": {"max-size": "1m"}}


def test_a_masked_path_no_engine_masks_is_the_users(cli: dict[str, Any]) -> None:
    """A list with a path of the user's (set through the API) is kept whole."""
    masked = [*cli["defaults"]["HostConfig"]["MaskedPaths"], "/proc/custom"]
    assert _cli_plan(cli, "plain", host={"MaskedPaths": masked}).body["HostConfig"]["MaskedPaths"] == masked


def test_daemon_log_options_are_the_engines_and_another_driver_the_users(cli: dict[str, Any]) -> None:
    """Options the daemon merged in (log-opts in daemon.json) follow it; `--log-driver local` is kept."""
    probe = copy.deepcopy(cli["defaults"])
    probe["HostConfig"]["LogConfig"] = {"Type": "json-file", "Config": {"max-file": "3"}}
    defaults = recreate.EngineDefaults.from_probe(probe)
    log = {"Type": "json-file", "Config": {"max-file": "3", "max-size": "1m"}}
    host = _cli_plan(cli, "plain", host={"LogConfig": log}, defaults=defaults).body["HostConfig"]
    assert host["LogConfig"] == {"Type": "", "Config": {"max-size": "1m"}}
    assert _cli_plan(cli, "ipc-host").body["HostConfig"]["LogConfig"] == {"Type": "local", "Config": {}}
    # Under another driver the daemon's options are not merged in (but for cache-*): those are the user's.
    local = {"Type": "local", "Config": {"max-file": "3", "cache-max-file": "2"}}
    probe["HostConfig"]["LogConfig"]["Config"]["cache-max-file"] = "2"
    defaults = recreate.EngineDefaults.from_probe(probe)
    host = _cli_plan(cli, "plain", host={"LogConfig": local}, defaults=defaults).body["HostConfig"]
    assert host["LogConfig"] == {"Type": "local", "Config": {"max-file": "3"}}


def test_the_label_option_the_engine_adds_is_dropped_and_the_users_kept(cli: dict[str, Any]) -> None:
    """`--ipc host`: the engine appended label=disable, which it will append again; a user's label stays."""
    assert _cli_plan(cli, "ipc-host").body["HostConfig"]["SecurityOpt"] == []
    given = ["label=level:s0", "label=disable"]
    host = _cli_plan(cli, "ipc-host", host={"SecurityOpt": given}).body["HostConfig"]
    assert host["SecurityOpt"] == given


# -- volumes, networks, files ----------------------------------------------------------------------------


def test_anonymous_volumes_of_every_kind_are_the_old_ones(cli: dict[str, Any]) -> None:
    """`-v /anon`, `--mount type=volume,dst=...` (also over an image VOLUME) and an image VOLUME the new
    image still declares get the old volume; one the new image dropped is not mounted."""
    container = cli["containers"]["anon-volumes"]
    old = {m["Destination"]: m["Name"] for m in container["Mounts"] if m["Type"] == "volume"}
    plan = _cli_plan(cli, "anon-volumes")
    host = plan.body["HostConfig"]
    assert {m["Target"]: m["Source"] for m in host["Mounts"]} == {
        "/manon": old["/manon"],
        "/shared": old["/shared"],
    }
    assert f"{old['/anon']}:/anon" in host["Binds"]
    assert plan.volumes == {d: old[d] for d in ("/named", "/manon", "/shared", "/anon")}
    assert "/vol1" not in plan.volumes  # the new image no longer declares VOLUME /vol1
    assert any("/vol1 not carried" in note for note in plan.notes)


def test_an_image_volume_the_new_image_keeps_is_reattached(cli: dict[str, Any]) -> None:
    """The old image's VOLUME /shared, which the new image declares too, keeps its data."""
    container = cli["containers"]["plain"]
    shared = next(m["Name"] for m in container["Mounts"] if m["Destination"] == "/shared")
    plan = _cli_plan(cli, "plain")
    assert plan.body["HostConfig"]["Binds"] == [f"{shared}:/shared"]
    assert plan.volumes == {"/shared": shared}


def test_own_anonymous_volumes_are_told_from_those_of_volumes_from(cli: dict[str, Any]) -> None:
    """With --volumes-from, the paths the other container lends come back through it; the container's own
    anonymous volumes are re-attached when those paths are known, and left alone when they are not."""
    container = copy.deepcopy(cli["containers"]["anon-volumes"])
    container["HostConfig"]["VolumesFrom"] = ["peer:ro"]
    anon = next(m["Name"] for m in container["Mounts"] if m["Destination"] == "/anon")
    known = recreate.plan(
        container, cli["old_image"], cli["new_image"], "x", lent=frozenset({"/shared", "/vol1"})
    )
    assert f"{anon}:/anon" in known.body["HostConfig"]["Binds"]
    assert not any(b.endswith(":/shared") for b in known.body["HostConfig"]["Binds"])
    unknown = recreate.plan(container, cli["old_image"], cli["new_image"], "x")
    assert f"{anon}:/anon" not in unknown.body["HostConfig"]["Binds"]
    assert recreate.volumes_from(container) == ["peer"]
    assert recreate.mount_paths(container) >= {"/anon", "/shared", "/named"}


def test_host_network_hostname_is_kept_unless_it_is_the_hosts(cli: dict[str, Any]) -> None:
    """`--network host --hostname NAME` keeps NAME; the host's own name is the engine's to give."""
    assert "Hostname" not in _cli_plan(cli, "host-network").body
    assert _cli_plan(cli, "host-hostname").body["Hostname"] == "fidhost"


def test_per_network_macs_and_addresses_survive(cli: dict[str, Any]) -> None:
    """API 1.44+: every network at create, each with its MAC; before: the second network connected after."""
    plan = _cli_plan(cli, "networks")
    endpoints = plan.body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints["dwrecord-a"]["IPAMConfig"] == {"IPv4Address": "10.201.7.10"}
    if cli["api"] == "1.45":
        assert plan.connect == {}
        assert endpoints["dwrecord-b"] == {"Aliases": ["beta"], "MacAddress": "02:00:00:0b:00:02"}
        assert endpoints["dwrecord-a"]["MacAddress"] == "02:00:00:0b:00:01"
    else:
        assert plan.connect == {"dwrecord-b": {"Aliases": ["beta"]}}


def test_an_engine_generated_mac_is_not_copied(cli: dict[str, Any]) -> None:
    """The default bridge's MAC, derived from the address, is the engine's."""
    settings = cli["containers"]["plain"]["NetworkSettings"]["Networks"]["bridge"]
    assert recreate.generated_mac(settings["IPAddress"]) == settings["MacAddress"]
    assert _cli_plan(cli, "plain").body["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}


def test_api_socket_credentials_are_copied_and_nothing_else(cli: dict[str, Any]) -> None:
    """`--use-api-socket`: the credentials file the CLI wrote after create is copied to the successor."""
    assert _cli_plan(cli, "api-socket").files == (recreate.API_SOCKET_CONFIG,)
    assert _cli_plan(cli, "plain").files == ()


# -- verify: the created container against the plan --------------------------------------------------------


def _created_from(plan: recreate.CreatePlan, recorded: dict[str, Any]) -> dict[str, Any]:
    """An inspect document of a container created faithfully from `plan`, as the engine would show it."""
    actual: dict[str, Any] = copy.deepcopy(recorded["container"])
    actual["Id"] = "f" * 64
    actual["Config"].update(
        copy.deepcopy({k: v for k, v in plan.body.items() if k not in ("HostConfig", "NetworkingConfig")})
    )
    actual["Config"]["Env"] = [*plan.body["Env"], "PATH=/bin", "APP_MARKER=new"]
    actual["HostConfig"] = copy.deepcopy(plan.body["HostConfig"])
    actual["HostConfig"]["Links"] = None
    return actual


def test_a_faithful_container_has_no_differences(recorded: dict[str, Any]) -> None:
    """The post-create comparison accepts a container that matches the plan."""
    plan = _plan(recorded)
    assert recreate.differences(plan, _created_from(plan, recorded)) == []


def test_what_the_engine_fills_in_again_is_no_difference(cli: dict[str, Any]) -> None:
    """A cleared entrypoint recorded as none, a health check completed from the image, the daemon's log driver
    and options, and the engine's label=disable do not count as drift."""
    plan = _cli_plan(cli, "ipc-host", config={"Entrypoint": None, "Healthcheck": {"Interval": 7}})
    assert plan.body["Entrypoint"] == [""]
    created = copy.deepcopy(cli["containers"]["ipc-host"])
    created["Config"].update(Entrypoint=None, Healthcheck={"Test": ["CMD", "x"], "Interval": 7, "Retries": 3})
    created["Config"]["Labels"].update(plan.body["Labels"])
    created["Config"]["Image"] = plan.body["Image"]
    created["HostConfig"] = {
        **copy.deepcopy(plan.body["HostConfig"]),
        "LogConfig": {"Type": "local", "Config": {"max-size": "20m"}},
        "SecurityOpt": ["label=disable"],
    }
    created["Mounts"] = [{"Type": "volume", "Destination": d, "Name": n} for d, n in plan.volumes.items()]
    assert recreate.differences(plan, created) == []


def test_every_kind_of_drift_is_reported(recorded: dict[str, Any]) -> None:
    """A lost env entry, label, host setting, network, alias or re-attached volume fails the comparison."""
    plan = _plan(recorded)
    actual = _created_from(plan, recorded)
    actual["Config"]["Env"].remove("USERVAR=1")
    del actual["Config"]["Labels"]["com.docker.compose.project"]
    actual["HostConfig"]["Memory"] = 0
    actual["NetworkSettings"]["Networks"]["dwcapnet"]["Aliases"] = []
    del actual["NetworkSettings"]["Networks"]["bridge"]
    anon = next(m for m in actual["Mounts"] if m["Destination"] == "/anon")
    anon["Name"] = "c" * 64  # a new, empty anonymous volume instead of the old one
    found = "\n".join(recreate.differences(plan, actual))
    for text in (
        "Env: USERVAR",
        "Labels: com.docker.compose.project",
        "HostConfig.Memory",
        "webalias",
        "bridge",
        "/anon mounts volume cccccccccccc",
    ):
        assert text in found


def test_dry_run_description_names_what_changes(recorded: dict[str, Any]) -> None:
    """The plan's description says which values came from the old image and what was re-attached."""
    text = "\n".join(recreate.describe(recorded["container"], _plan(recorded)))
    assert "Env from the old image not copied: PATH, APP_MARKER" in text
    assert "anonymous volume" in text
    assert "networks connected before start: bridge" in text


def test_on_an_engine_with_random_macs_only_the_primary_networks_configured_mac_is_copied() -> None:
    """On API 1.46+ (Engine 27+: random MACs, as Engine 28.5 shows) a MAC in use on a network is not copied,
    since inspect cannot tell it from a generated one; the primary network's `--mac-address`
    (Config.MacAddress) still is, and on 26.1 (MACs derived from the address) both set ones are."""
    cli = json.loads((DATA / "fidelity-engine26.json").read_text())
    container = copy.deepcopy(cli["containers"]["networks"])
    random = recreate.EngineDefaults.from_probe({**cli["defaults"], "ApiVersion": "1.51"})
    plan = recreate.plan(
        container,
        cli["old_image"],
        cli["new_image"],
        "reg/fid:new",
        defaults=random,
    )
    endpoints = plan.body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints["dwrecord-a"]["MacAddress"] == "02:00:00:0b:00:01"
    assert "MacAddress" not in endpoints["dwrecord-b"]
    assert any("02:00:00:0b:00:02" in note for note in plan.notes)
    container["Config"].pop("MacAddress")  # nothing set by the user: the engine's random MAC stays behind
    plan = recreate.plan(
        container,
        cli["old_image"],
        cli["new_image"],
        "reg/fid:new",
        defaults=random,
    )
    assert all("MacAddress" not in e for e in plan.body["NetworkingConfig"]["EndpointsConfig"].values())
    older = recreate.plan(
        copy.deepcopy(cli["containers"]["networks"]),
        cli["old_image"],
        cli["new_image"],
        "reg/fid:new",
        defaults=recreate.EngineDefaults.from_probe(cli["defaults"]),
    )
    assert (
        older.body["NetworkingConfig"]["EndpointsConfig"]["dwrecord-b"]["MacAddress"] == "02:00:00:0b:00:02"
    )

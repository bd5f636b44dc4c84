"""The create body computed from recorded inspect documents of Engine 20.10 (API 1.41) and 26.1 (API 1.45)."""

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


def _plan(recorded: dict[str, Any], **changes: Any) -> recreate.CreatePlan:
    container = copy.deepcopy(recorded["container"])
    container["Config"].update(changes.pop("config", {}))
    container["HostConfig"].update(changes.pop("host", {}))
    return recreate.plan(container, recorded["image"], NEW_IMAGE, "127.0.0.1:5000/cap:latest")


def test_values_from_the_old_image_are_not_frozen_in(recorded: dict[str, Any]) -> None:
    """Env, Cmd, Healthcheck and labels equal to the old image's are left out: the new image's apply."""
    body = _plan(recorded).body
    assert body["Env"] == ["USERVAR=1"]
    for key in ("Cmd", "Healthcheck", "Entrypoint", "WorkingDir", "User"):
        assert key not in body
    assert "marker" not in body["Labels"]
    assert "dockwarden.test" not in body["Labels"]  # equal to the image's label: the new image's applies


def test_user_values_are_kept(recorded: dict[str, Any]) -> None:
    """What the user set survives: env, compose labels, stop signal, MAC, volumes, host config."""
    container = recorded["container"]
    body = _plan(recorded).body
    assert body["Labels"]["com.docker.compose.project"] == "demo"
    assert body["Labels"][recreate.REPLACES_LABEL] == container["Id"]
    assert body["StopSignal"] == "SIGINT"
    assert body["MacAddress"] == "02:42:ac:11:00:99"
    assert body["Volumes"] == {"/anon": {}}
    assert body["Image"] == "127.0.0.1:5000/cap:latest"
    host = body["HostConfig"]
    for key in ("PortBindings", "RestartPolicy", "Memory", "CapAdd", "CapDrop", "LogConfig", "Tmpfs"):
        assert host[key] == container["HostConfig"][key], key


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


def test_networks_keep_static_ip_and_aliases_but_not_the_old_id(recorded: dict[str, Any]) -> None:
    """The primary network keeps its static IP and alias, minus the old short-ID alias; the default bridge
    is connected before start, without aliases."""
    plan = _plan(recorded)
    endpoint = plan.body["NetworkingConfig"]["EndpointsConfig"]["dwcapnet"]
    assert endpoint == {"IPAMConfig": {"IPv4Address": "172.31.77.10"}, "Aliases": ["webalias"]}
    assert plan.connect == {"bridge": {}}


@pytest.mark.parametrize("mode", ["host", "none", "container:0123456789ab"])
def test_shared_namespaces_get_no_endpoints_hostname_or_mac(recorded: dict[str, Any], mode: str) -> None:
    """host, none and container:X modes are kept as they are, with no networks to connect; a MAC or the
    host's hostname would make create fail there."""
    plan = _plan(recorded, host={"NetworkMode": mode}, config={"Hostname": "somehost"})
    assert plan.body["HostConfig"]["NetworkMode"] == mode
    assert "NetworkingConfig" not in plan.body
    assert plan.connect == {}
    assert "MacAddress" not in plan.body
    assert ("Hostname" in plan.body) is (mode == "none")


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


def test_every_kind_of_drift_is_reported(recorded: dict[str, Any]) -> None:
    """A lost env entry, label, host setting, network or alias each fails the comparison."""
    plan = _plan(recorded)
    actual = _created_from(plan, recorded)
    actual["Config"]["Env"].remove("USERVAR=1")
    del actual["Config"]["Labels"]["com.docker.compose.project"]
    actual["HostConfig"]["Memory"] = 0
    actual["NetworkSettings"]["Networks"]["dwcapnet"]["Aliases"] = []
    del actual["NetworkSettings"]["Networks"]["bridge"]
    found = "\n".join(recreate.differences(plan, actual))
    for text in (
        "Env: USERVAR",
        "Labels: com.docker.compose.project",
        "HostConfig.Memory",
        "webalias",
        "bridge",
    ):
        assert text in found


def test_dry_run_description_names_what_changes(recorded: dict[str, Any]) -> None:
    """The plan's description says which values came from the old image and what was re-attached."""
    text = "\n".join(recreate.describe(recorded["container"], _plan(recorded)))
    assert "Env from the old image not copied: PATH, APP_MARKER" in text
    assert "anonymous volume" in text
    assert "networks connected before start: bridge" in text

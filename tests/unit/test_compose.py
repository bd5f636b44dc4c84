"""Compose v2's labels, order and uncarried features, on containers Compose 2.40.3 created on Engine 20.10.

`compose-engine20.json` holds the inspect documents of a project's two containers (`db`, with volumes and a
file-based secret; `web`, depending on db with `restart: true`) and of their image, with the project's
compose.yaml. Compose files for the refusal rules are written to tmp_path.
"""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dockwarden import compose, gate, imageref, recreate, upgrade
from dockwarden.config import Service
from dockwarden.cycle import order
from dockwarden.engine import ContainerView
from tests.support.fakeengine import FakeEngine

DATA = Path(__file__).resolve().parents[1] / "data"
NEW_ID = "sha256:" + "e" * 64
NEW_DIGEST = "sha256:" + "d" * 64
TAG = "127.0.0.1:5000/cexp/app:latest"  # the recorded project's image


@pytest.fixture
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "compose-engine20.json").read_text())
    return data


def _labels(recorded: dict[str, Any], container: str) -> dict[str, str]:
    return dict(recorded[container]["Config"]["Labels"])


def _compose_labels(main: Path, service: str = "app", project: str = "proj") -> dict[str, str]:
    return {
        compose.PROJECT_LABEL: project,
        compose.SERVICE_LABEL: service,
        compose.CONFIG_FILES_LABEL: str(main),
    }


# -- labels ---------------------------------------------------------------------------------------------


def test_recorded_container_is_a_compose_member(recorded: dict[str, Any]) -> None:
    """Compose's project and service labels name the container's place; other containers have none."""
    assert compose.member(_labels(recorded, "db")) == compose.Member(project="rec", service="db")
    assert compose.member({compose.PROJECT_LABEL: "demo"}) is None  # a project label alone is not compose's
    assert compose.member({}) is None


def test_successor_labels_name_the_new_image(recorded: dict[str, Any]) -> None:
    """The successor's compose image label is the new image's ID; every other label is kept as it was."""
    labels = _labels(recorded, "db")
    assert labels[compose.IMAGE_LABEL] == recorded["image"]["Id"]  # what compose set: the image's ID
    kept = compose.successor_labels(labels, NEW_ID)
    assert kept[compose.IMAGE_LABEL] == NEW_ID
    assert {k: v for k, v in kept.items() if k != compose.IMAGE_LABEL} == {
        k: v for k, v in labels.items() if k != compose.IMAGE_LABEL
    }


def test_labels_of_other_containers_are_left_alone() -> None:
    """A container compose did not create gets no compose label from an upgrade."""
    labels = {compose.PROJECT_LABEL: "demo", "user.label": "kept"}
    assert compose.successor_labels(labels, NEW_ID) == labels


def test_plan_keeps_compose_identity_and_follows_the_new_image(recorded: dict[str, Any]) -> None:
    """The create body keeps the config hash, number, project, service and one-off labels, and names the
    new image in compose's image label, so `docker compose up -d` finds nothing to change."""
    old = _labels(recorded, "db")
    new_image = {**copy.deepcopy(recorded["image"]), "Id": NEW_ID}
    body = recreate.plan(recorded["db"], recorded["image"], new_image, TAG).body
    labels = body["Labels"]
    assert labels[compose.IMAGE_LABEL] == NEW_ID
    for key in (
        "com.docker.compose.config-hash",
        "com.docker.compose.container-number",
        "com.docker.compose.project",
        "com.docker.compose.service",
        "com.docker.compose.oneoff",
        "com.docker.compose.project.config_files",
        "com.docker.compose.project.working_dir",
        "com.docker.compose.depends_on",
    ):
        assert labels[key] == old[key], key


def test_dry_run_plan_leaves_the_image_label(recorded: dict[str, Any]) -> None:
    """Planned without the new image (the dry run pulls nothing), the image label is left as it was."""
    body = recreate.plan(recorded["db"], recorded["image"], {}, TAG).body
    assert body["Labels"][compose.IMAGE_LABEL] == recorded["image"]["Id"]


# -- depends_on and order -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("", ()),
        ("db", (("db", compose.LEGACY_CONDITION, False),)),
        (
            "db:service_healthy:false,cache:service_completed_successfully:true",
            (("db", "service_healthy", False), ("cache", "service_completed_successfully", True)),
        ),
        ("db:service_started", (("db", "service_started", False),)),
    ],
)
def test_depends_on_label(label: str, expected: tuple[tuple[str, str, bool], ...]) -> None:
    """SERVICE:CONDITION:RESTART items, comma-separated; older Compose labels without the restart flag
    (2.5-2.16) or the condition too (2.0-2.4) restart nothing."""
    found = compose.depends_on({compose.DEPENDS_ON_LABEL: label})
    assert tuple((d.service, d.condition, d.restart) for d in found) == expected


def test_recorded_depends_on_label(recorded: dict[str, Any]) -> None:
    """Compose 2.40.3 wrote web's `depends_on: {db: {condition: service_started, restart: true}}` as
    db:service_started:true, and an empty label on db."""
    assert compose.depends_on(_labels(recorded, "web")) == (
        compose.Dependency(service="db", condition="service_started", restart=True),
    )
    assert compose.depends_on(_labels(recorded, "db")) == ()


def _views(recorded: dict[str, Any], **changes: dict[str, str]) -> dict[str, ContainerView]:
    views = {}
    for service in ("web", "db"):
        document = copy.deepcopy(recorded[service])
        document["Config"]["Labels"].update(changes.get(service, {}))
        views[service] = ContainerView.from_inspect(document)
    return views


def test_needs_follow_the_depends_on_label_within_the_project(recorded: dict[str, Any]) -> None:
    """web's container depends on the compose service db, which a watched service runs: web needs it."""
    services = [Service(name="web", container="rec-web-1"), Service(name="db", container="rec-db-1")]
    assert compose.needs(services, _views(recorded)) == {"web": {"db"}}


def test_needs_ignore_other_projects_and_unwatched_services(recorded: dict[str, Any]) -> None:
    """A db of another project is no dependency, nor is a dependency no watched service runs."""
    services = [Service(name="web", container="rec-web-1"), Service(name="db", container="rec-db-1")]
    other = _views(recorded, db={compose.PROJECT_LABEL: "other"})
    assert compose.needs(services, other) == {}
    alone = {"web": _views(recorded)["web"]}
    assert compose.needs(services[:1], alone) == {}


def test_order_upgrades_a_compose_dependency_first(recorded: dict[str, Any]) -> None:
    """Listed first in dockwarden's file, web still comes after the db its compose label depends on."""
    services = [Service(name="web", container="rec-web-1"), Service(name="db", container="rec-db-1")]
    needs = compose.needs(services, _views(recorded))
    assert [s.name for s in order(services, {}, needs)] == ["db", "web"]
    assert [s.name for s in order(services, {})] == ["web", "db"]


def test_dependents_with_restart_true_are_restarted(recorded: dict[str, Any]) -> None:
    """web depends on db with `restart: true`, so it is db's dependent; a stopped one, one of another
    project and one whose item says restart false are not, and web has no dependents itself."""
    views = _views(recorded)
    assert compose.dependents(views["db"], views.values()) == ["rec-web-1"]
    assert compose.dependents(views["web"], views.values()) == []
    stopped = copy.deepcopy(recorded["web"])
    stopped["State"]["Status"] = "exited"
    assert compose.dependents(views["db"], [views["db"], ContainerView.from_inspect(stopped)]) == []
    for change in ({compose.PROJECT_LABEL: "other"}, {compose.DEPENDS_ON_LABEL: "db:service_started:false"}):
        assert compose.dependents(views["db"], _views(recorded, web=change).values()) == []
    assert (
        compose.dependents(ContainerView.from_inspect(recorded["image"] | {"Id": "x"}), views.values()) == []
    )


# -- what a recreate cannot carry -----------------------------------------------------------------------


# Compose's schema allows `file`, `environment` (and `external`) for secrets, and `content` too for configs.
PROJECT = """
    services:
      app:
        image: r/app
        secrets: [from_env, {source: from_file}]
        configs: [{source: inline, target: /etc/app.conf}]
      other:
        image: r/other
        secrets: [only_other]
    secrets:
      from_env: {environment: TOKEN}
      from_file: {file: ./token.txt}
      only_other: {environment: OTHER_TOKEN}
    configs:
      inline: {content: "setting=1"}
"""


def _project(tmp_path: Path, *texts: str) -> list[dict[str, Any]]:
    """Compose files given with `-f` (compose.yaml, compose.1.yaml, ...), read as `refusal` reads them."""
    paths = []
    for index, text in enumerate(texts):
        path = tmp_path / ("compose.yaml" if index == 0 else f"compose.{index}.yaml")
        path.write_text(textwrap.dedent(text))
        paths.append(path)
    return compose.read_project(paths)


def test_copied_secrets_and_configs_are_uncarried(tmp_path: Path) -> None:
    """Secrets and configs from `content:` or `environment:` are copied in, so they are named; file-based
    ones (bind mounts) and another service's are not."""
    documents = _project(tmp_path, PROJECT)
    assert compose.uncarried("app", documents) == [
        "secret 'from_env' (environment:)",
        "config 'inline' (content:)",
    ]
    assert compose.uncarried("other", documents) == ["secret 'only_other' (environment:)"]


def test_file_based_secrets_and_configs_are_carried(tmp_path: Path) -> None:
    """A service whose secrets and configs are all files (bind mounts) has nothing uncarried."""
    documents = _project(
        tmp_path,
        """
        services: {app: {secrets: [t], configs: [c]}}
        secrets: {t: {file: ./t}}
        configs: {c: {file: ./c}}
        """,
    )
    assert compose.uncarried("app", documents) == []


def test_post_start_hooks_are_uncarried(tmp_path: Path) -> None:
    """post_start hooks run after compose starts a container; a recreate would not run them."""
    documents = _project(tmp_path, "services: {app: {post_start: [{command: chown -R 1000 /data}]}}")
    assert compose.uncarried("app", documents) == ["post_start hooks"]


def test_an_extended_service_brings_its_secrets(tmp_path: Path) -> None:
    """A secret of the service `app` extends (in another file, then by name there) counts as app's."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.yaml").write_text(
        "services: {base: {extends: root}, root: {secrets: [s]}}\nsecrets: {s: {environment: S}}\n"
    )
    documents = _project(tmp_path, "services: {app: {extends: {service: base, file: lib/base.yaml}}}")
    assert compose.uncarried("app", documents) == ["secret 's' (environment:)"]


def test_files_are_a_union_so_an_override_cannot_hide_a_secret(tmp_path: Path) -> None:
    """A config defined in one file and used in another is found; compose's `!reset` in an override
    still counts it (refusing when in doubt), and compose's YAML tags parse."""
    documents = _project(
        tmp_path,
        "services: {app: {image: r/app}}\nconfigs: {c: {content: x}}",
        "services: {app: {configs: [c]}}",
        "services: {app: {configs: !reset [], environment: !override {A: '1'}}}",
    )
    assert compose.uncarried("app", documents) == ["config 'c' (content:)"]


def test_included_files_are_read_once_each(tmp_path: Path) -> None:
    """`include:` (a path, or a mapping with a list of paths) is followed relative to the including file,
    and files that include each other are read once."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("include: [../compose.yaml]\nsecrets: {s: {environment: S}}\n")
    (tmp_path / "sub" / "b.yaml").write_text("services: {app: {secrets: [s]}}\n")
    documents = _project(tmp_path, "include: [sub/a.yaml, {path: [sub/b.yaml]}]\n")
    assert len(documents) == 3
    assert compose.uncarried("app", documents) == ["secret 's' (environment:)"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("include: [missing.yaml]", "cannot read compose file"),
        ('include: ["${DIR}/x.yaml"]', "only compose can resolve"),
        ("include: [oci://registry/project:1]", "only compose can resolve"),
        ("services: {app: [unclosed", "cannot parse compose file"),
    ],
)
def test_a_project_that_cannot_be_read_is_unreadable(tmp_path: Path, text: str, reason: str) -> None:
    """A missing file, a path only compose can resolve, or broken YAML raises ProjectUnreadable."""
    with pytest.raises(compose.ProjectUnreadable, match=reason):
        _project(tmp_path, text)


def test_refusal_names_the_service_what_is_lost_and_the_way_out(tmp_path: Path) -> None:
    """A compose service with copied secrets and configs is refused with its project, each of them and the
    compose command that does upgrade it."""
    (tmp_path / "compose.yaml").write_text(textwrap.dedent(PROJECT))
    message = compose.refusal(_compose_labels(tmp_path / "compose.yaml"))
    assert message is not None
    assert message.startswith(
        "compose service 'app' of project 'proj' has secret 'from_env' (environment:), config 'inline' "
        "(content:), which compose applies"
    )
    assert "`docker compose pull app && docker compose up -d app`" in message


def test_refusal_when_the_compose_files_cannot_be_read(tmp_path: Path) -> None:
    """Compose files that are gone (or hidden from dockwarden) refuse the service, naming the file."""
    message = compose.refusal(_compose_labels(tmp_path / "gone.yaml"))
    assert message is not None
    assert f"cannot read compose file {tmp_path / 'gone.yaml'}" in message


def test_no_refusal_without_anything_lost(recorded: dict[str, Any], tmp_path: Path) -> None:
    """The recorded project (a file-based secret only), a Compose v1 container (no config_files label)
    and a container compose did not create are all carried."""
    (tmp_path / "compose.yaml").write_text(recorded["compose_yaml"])
    labels = {**_labels(recorded, "db"), compose.CONFIG_FILES_LABEL: str(tmp_path / "compose.yaml")}
    assert compose.refusal(labels) is None
    v1 = {k: v for k, v in labels.items() if k != compose.CONFIG_FILES_LABEL}
    assert compose.refusal(v1) is None
    assert compose.refusal({"user.label": "x"}) is None


# -- the transaction --------------------------------------------------------------------------------------


def _scene(recorded: dict[str, Any], config_files: Path) -> tuple[FakeEngine, str]:
    """A fake engine running the recorded db container, whose labels name `config_files`."""
    new_image = {**copy.deepcopy(recorded["image"]), "Id": NEW_ID, "RepoTags": [], "RepoDigests": []}
    fake = FakeEngine(registry={f"127.0.0.1:5000/cexp/app@{NEW_DIGEST}": new_image})
    fake.add_image(recorded["image"])
    db = copy.deepcopy(recorded["db"])
    db["Config"]["Labels"][compose.CONFIG_FILES_LABEL] = str(config_files)
    return fake, fake.add_container(db)


def _upgrade(fake: FakeEngine) -> upgrade.Outcome:
    target = upgrade.Target(
        service="db",
        container="rec-db-1",
        ref=imageref.parse(TAG),
        from_digest=None,
        to_digest=NEW_DIGEST,
        policy=gate.Policy(stability=0.0, health_timeout_max=5.0),
    )
    return upgrade.Upgrade(fake, target).run()


def test_transaction_refuses_at_plan_and_touches_nothing(recorded: dict[str, Any], tmp_path: Path) -> None:
    """Whoever asks (a cycle, a rollback, a namespace follow-up), a refused compose service is an error at
    plan, and its container keeps running untouched."""
    (tmp_path / "compose.yaml").write_text(
        "services: {db: {secrets: [s]}}\nsecrets: {s: {environment: TOKEN}}\n"
    )
    fake, old_id = _scene(recorded, tmp_path / "compose.yaml")
    before = copy.deepcopy(fake.containers)
    outcome = _upgrade(fake)
    assert (outcome.result, outcome.step, outcome.replaced) == ("error", "plan", None)
    assert "secret 's' (environment:)" in str(outcome.error)
    assert fake.containers == before
    assert fake.names() == ["rec-db-1"]
    assert list(fake.images) == [recorded["image"]["Id"]]  # the pulled image went with its -pulled tag
    assert old_id in fake.containers


def test_transaction_gives_the_successor_the_new_image_label(
    recorded: dict[str, Any], tmp_path: Path
) -> None:
    """An upgraded compose container passes verify with compose's image label naming the new image."""
    (tmp_path / "compose.yaml").write_text(recorded["compose_yaml"])
    fake, _ = _scene(recorded, tmp_path / "compose.yaml")
    outcome = _upgrade(fake)
    assert (outcome.result, outcome.error) == ("upgraded", None)
    new = fake.named("rec-db-1")
    assert new is not None
    assert new["Config"]["Labels"][compose.IMAGE_LABEL] == NEW_ID
    assert (
        new["Config"]["Labels"]["com.docker.compose.config-hash"]
        == _labels(recorded, "db")["com.docker.compose.config-hash"]
    )

"""The registry client against misbehaving registries and token services on 127.0.0.1 (no engine needed):
HEAD without a digest, malformed and oversized answers, dripping answers, TLS as Docker configures it, and
where credentials may go."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import requests
import structlog
from urllib3.exceptions import InsecureRequestWarning

from dockwarden import distribution, registry
from dockwarden.engine import Credentials, CredentialsError, Engine, RegistryConfig
from dockwarden.imageref import ImageRef
from tests.conftest import ENGINE26, Deploy
from tests.integration.helpers import check, run_container, write_config
from tests.support.faultserver import FaultServer, Pki, Reply, Request, Script
from tests.support.registry import Registry

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": distribution.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": 2,
            "digest": "sha256:" + "c" * 64,
        },
        "layers": [],
    }
).encode()
DIGEST = distribution.digest_of(MANIFEST)
USER, PASSWORD = "alice", "s3cret-registry-pw"
SECURE = RegistryConfig(insecure_cidrs=())  # an engine that trusts nothing on loopback without TLS


def ref(server: FaultServer, tag: str = "latest") -> ImageRef:
    return ImageRef(server.host, "team/app", tag)


def client(
    timeout: float = 5.0,
    creds: Credentials | None = None,
    engine_config: RegistryConfig | None = None,
    certs_dir: Path = Path("/nonexistent"),
) -> registry.RegistryClient:
    return registry.RegistryClient(
        lambda _: creds, timeout=timeout, engine_config=engine_config, certs_dir=certs_dir
    )


def serving(manifest: bytes = MANIFEST, head: Callable[[Request], Reply] | None = None) -> Script:
    """A registry serving `manifest` for every tag and by its digest; `head` overrides HEAD answers."""

    def answer(request: Request) -> Reply:
        if "/manifests/" not in request.path:
            return Reply(200)
        if request.method == "HEAD" and head is not None:
            return head(request)
        headers = {"Content-Type": distribution.OCI_MANIFEST, "Docker-Content-Digest": DIGEST}
        return Reply(200, headers, manifest)

    return answer


@pytest.fixture
def servers() -> Iterator[list[FaultServer]]:
    """Fault servers a test starts; stopped when it ends."""
    started: list[FaultServer] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[FaultServer], script: Script, tls: ssl.SSLContext | None = None) -> FaultServer:
    server = FaultServer(script, tls)
    servers.append(server)
    return server


# -- HEAD without a digest ------------------------------------------------------------------------


def test_normal_registry_costs_one_head(servers: list[FaultServer]) -> None:
    """A HEAD that carries the digest is the whole check: no GET, no warning."""
    server = start(servers, serving())
    with structlog.testing.capture_logs() as logged:
        head = client().head_manifest(ref(server))
    assert (head.digest, head.manifest) == (DIGEST, None)
    assert [r.method for r in server.seen()] == ["HEAD"]
    assert logged == []


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (lambda r: Reply(200, {"Content-Type": distribution.OCI_MANIFEST}, MANIFEST), "no-digest"),
        (lambda r: Reply(200, {"Docker-Content-Digest": "sha256:not-a-digest"}, MANIFEST), "no-digest"),
        (lambda r: Reply(405), "head-refused"),
        (lambda r: Reply(501), "head-refused"),
        (lambda r: Reply(404), "head-refused"),
    ],
    ids=["no-header", "bad-header", "405", "501", "404"],
)
def test_head_without_digest_costs_one_get(
    servers: list[FaultServer], head: Callable[[Request], Reply], reason: str
) -> None:
    """Without a usable digest from HEAD, one GET of the tag gives it (the body's sha256) and the manifest
    itself; the warning that this registry's checks cost a GET is logged once, not every check."""
    server = start(servers, serving(head=head))
    own = client()
    with structlog.testing.capture_logs() as logged:
        first = own.head_manifest(ref(server))
        second = own.head_manifest(ref(server, "other"))
    assert first.digest == second.digest == DIGEST
    assert first.manifest is not None
    assert first.manifest.config_digest == "sha256:" + "c" * 64
    assert [r.method for r in server.seen()] == ["HEAD", "GET", "HEAD", "GET"]
    assert [e["event"] for e in logged] == ["registry.get_fallback"]
    assert (logged[0]["registry"], logged[0]["reason"]) == (server.host, reason)


def test_head_and_get_not_found_is_not_found(servers: list[FaultServer]) -> None:
    """A tag both methods say is missing is `not-found`, with no warning about the registry."""
    server = start(servers, lambda r: Reply(404))
    with structlog.testing.capture_logs() as logged, pytest.raises(registry.NotFound):
        client().head_manifest(ref(server))
    assert logged == []


def test_get_whose_body_contradicts_its_digest_header(servers: list[FaultServer]) -> None:
    """A fallback GET whose body does not hash to the digest it announces is a protocol error."""
    other = "sha256:" + "9" * 64

    def answer(request: Request) -> Reply:
        if request.method == "HEAD":
            return Reply(405)
        return Reply(200, {"Docker-Content-Digest": other}, MANIFEST)

    server = start(servers, answer)
    with pytest.raises(registry.ProtocolError, match="does not hash"):
        client().head_manifest(ref(server))


# -- malformed answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"x"', b'{"manifests": {"a": 1}}', b'{"manifests": [{"platform": {"os": "linux"}}]}', b"\x00"],
)
def test_malformed_manifest_is_a_protocol_error(servers: list[FaultServer], body: bytes) -> None:
    """A manifest that hashes right but breaks the schema is a protocol error, by digest and by fallback."""
    digest = distribution.digest_of(body)
    server = start(servers, lambda r: Reply(405) if r.method == "HEAD" else Reply(200, {}, body))
    with pytest.raises(registry.ProtocolError, match="malformed manifest"):
        client().get_manifest(ref(server), digest)
    with pytest.raises(registry.ProtocolError, match="malformed manifest"):
        client().head_manifest(ref(server))


@pytest.mark.parametrize(("header", "backoff"), [("\u00b2", 60.0), ("9" * 30, 3600.0)])
def test_odd_retry_after_is_read_safely(servers: list[FaultServer], header: str, backoff: float) -> None:
    """A 429 with a non-ASCII or absurd Retry-After backs off for the default or at most an hour."""
    server = start(servers, lambda r: Reply(429, {"Retry-After": header}))
    with pytest.raises(registry.RateLimited) as caught:
        client().head_manifest(ref(server))
    assert caught.value.retry_after == backoff


# -- sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "chunked"])
def test_oversized_manifest_is_refused_unread(servers: list[FaultServer], chunked: bool) -> None:
    """A manifest over 4 MiB is refused, announced or not, without reading it whole."""
    size = 256 * 1024 * 1024
    server = start(
        servers, lambda r: Reply(405) if r.method == "HEAD" else Reply(200, stream=size, chunked=chunked)
    )
    started = time.monotonic()
    with pytest.raises(registry.ProtocolError, match="over the 4096 KiB limit"):
        client().head_manifest(ref(server))
    assert time.monotonic() - started < 3
    time.sleep(0.2)  # the server notices the hang-up
    assert server.streamed < 32 * 1024 * 1024


def test_oversized_token_answer_is_refused(servers: list[FaultServer]) -> None:
    """A token answer over 1 MiB is refused as a protocol error of that registry."""
    realm = start(servers, lambda r: Reply(200, stream=64 * 1024 * 1024))
    challenge = {"WWW-Authenticate": f'Bearer realm="http://{realm.host}/token",service="s"'}
    server = start(servers, lambda r: Reply(401, challenge))
    with pytest.raises(registry.ProtocolError, match="over the 1024 KiB limit"):
        client().head_manifest(ref(server))


def test_malformed_token_answer_is_a_protocol_error(servers: list[FaultServer]) -> None:
    """A token answer whose token could not go into a header is refused, and not quoted."""
    realm = start(servers, lambda r: Reply(200, {}, b'{"token": "abc\\r\\nX-Evil: 1"}'))
    challenge = {"WWW-Authenticate": f'Bearer realm="http://{realm.host}/token"'}
    server = start(servers, lambda r: Reply(401, challenge))
    with pytest.raises(registry.ProtocolError, match="no usable token") as caught:
        client().head_manifest(ref(server))
    assert "X-Evil" not in str(caught.value)


# -- the deadline ---------------------------------------------------------------------------------


def _timed_out(call: Callable[[], object], within: float) -> None:
    started = time.monotonic()
    with pytest.raises(registry.Timeout, match="within 1s"):
        call()
    assert time.monotonic() - started < within


def test_dripping_registry_fails_at_the_deadline(servers: list[FaultServer]) -> None:
    """An answer dripped a byte every 50 ms (each read is quick) fails at the 1 s deadline, not after it."""
    server = start(servers, lambda r: Reply(200, {"Docker-Content-Digest": DIGEST}, drip=0.05))
    _timed_out(lambda: client(timeout=1.0).head_manifest(ref(server)), within=1.8)


def test_deadline_covers_the_token_round_trip(servers: list[FaultServer]) -> None:
    """A registry that takes most of the deadline to challenge, then a dripping token service: one deadline
    for both, not one each."""
    realm = start(servers, lambda r: Reply(200, {}, b'{"token": "t"}', drip=0.05))
    challenge = {"WWW-Authenticate": f'Bearer realm="http://{realm.host}/token"'}
    server = start(servers, lambda r: Reply(401, challenge, drip=0.003))  # about 0.4 s for the challenge
    _timed_out(lambda: client(timeout=1.0).head_manifest(ref(server)), within=1.8)
    assert realm.seen(), "the token service was never asked: the test did not test the round trip"


def test_deadline_covers_redirects(servers: list[FaultServer]) -> None:
    """Slow redirects (relative ones, about 0.35 s each), each well within the deadline, add up to it and
    fail there."""
    server = start(servers, lambda r: Reply(307, {"Location": r.path}, drip=0.0035))
    _timed_out(lambda: client(timeout=1.0).head_manifest(ref(server)), within=1.8)
    assert len(server.seen()) >= 2, "no redirect was followed: the test did not test redirects"


def test_absurd_timeout_is_valid(servers: list[FaultServer]) -> None:
    """A registry_timeout of centuries (valid config) still gives working requests, not an OverflowError
    from sockets and locks that cannot wait that long."""
    server = start(servers, serving())
    assert client(timeout=200000 * 86400.0).head_manifest(ref(server)).digest == DIGEST
    server.stop()
    servers.remove(server)
    with pytest.raises(registry.Unreachable):
        client(timeout=200000 * 86400.0).head_manifest(ref(server))


# -- TLS as Docker configures it ------------------------------------------------------------------


def test_private_ca_from_certs_d(servers: list[FaultServer], tmp_path: Path) -> None:
    """An HTTPS registry signed by a private CA fails verification until its CA is in
    certs.d/HOST:PORT/*.crt; then the same client, without a restart, verifies and reaches it."""
    pki = Pki()
    server = start(servers, serving(), tls=pki.server_context(tmp_path / "server"))
    own = client(engine_config=SECURE, certs_dir=tmp_path / "certs.d")
    with pytest.raises(registry.Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        own.head_manifest(ref(server))
    folder = tmp_path / "certs.d" / server.host
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_bytes(pki.ca_pem)
    assert own.head_manifest(ref(server)).digest == DIGEST


def test_client_certificate_from_certs_d(servers: list[FaultServer], tmp_path: Path) -> None:
    """A registry that demands a client certificate gets the certs.d `.cert`/`.key` pair; a `.cert` without
    its `.key` is a clear error."""
    pki, clients = Pki(), Pki("client CA")
    server = start(servers, serving(), tls=pki.server_context(tmp_path / "server", client_ca=clients))
    folder = tmp_path / "certs.d" / server.host
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_bytes(pki.ca_pem)
    cert, key = clients.issue("dockwarden", client=True)
    (folder / "client.cert").write_bytes(cert)
    with pytest.raises(registry.RegistryError, match=r"has no key client\.key"):
        client(engine_config=SECURE, certs_dir=tmp_path / "certs.d").head_manifest(ref(server))
    (folder / "client.key").write_bytes(key)
    head = client(engine_config=SECURE, certs_dir=tmp_path / "certs.d").head_manifest(ref(server))
    assert head.digest == DIGEST


def test_insecure_registry_speaks_unverified_tls(servers: list[FaultServer], tmp_path: Path) -> None:
    """A registry the engine lists as insecure (loopback, here) is reached over TLS without verification
    when it speaks TLS, after plain HTTP failed, as the engine would; with no warning per request."""
    server = start(servers, serving(), tls=Pki().server_context(tmp_path / "server"))
    own = client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert own.head_manifest(ref(server)).digest == DIGEST
        assert own.head_manifest(ref(server)).digest == DIGEST
    assert [r.method for r in server.seen()] == ["HEAD", "HEAD"]
    assert [w.message for w in caught if issubclass(w.category, InsecureRequestWarning)] == []


# -- where credentials may go ---------------------------------------------------------------------


def _bearer_registry(realm: str) -> Script:
    def answer(request: Request) -> Reply:
        if request.headers.get("authorization") == "Bearer good":
            return serving()(request)
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})

    return answer


def _token_service(request: Request) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, b'{"token": "good"}')


def test_https_registry_never_sends_credentials_to_an_http_realm(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    """A verified HTTPS registry naming an http:// realm: with credentials, refused with a clear error and
    the realm never asked; without, the anonymous token it gives is used."""
    pki = Pki()
    realm = start(servers, _token_service)
    server = start(
        servers, _bearer_registry(f"http://{realm.host}/token"), tls=pki.server_context(tmp_path / "server")
    )
    folder = tmp_path / "certs.d" / server.host
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_bytes(pki.ca_pem)
    withcreds = client(
        creds=Credentials(USER, PASSWORD), engine_config=SECURE, certs_dir=tmp_path / "certs.d"
    )
    with pytest.raises(registry.Unauthorized, match=r"refusing to send the credentials .* over plain HTTP"):
        withcreds.head_manifest(ref(server))
    assert realm.seen() == []
    anonymous = client(engine_config=SECURE, certs_dir=tmp_path / "certs.d")
    assert anonymous.head_manifest(ref(server)).digest == DIGEST
    assert [r.headers.get("authorization") for r in realm.seen()] == [None]


def test_plain_http_realm_on_the_registrys_host_gets_credentials(servers: list[FaultServer]) -> None:
    """A loopback plain-HTTP registry's realm on the same host (another port) gets the Basic credentials;
    one on another host name gets nothing and the check says why."""
    realm = start(servers, _token_service)
    port = realm.host.rsplit(":", 1)[1]
    same = start(servers, _bearer_registry(f"http://127.0.0.1:{port}/token"))
    assert client(creds=Credentials(USER, PASSWORD)).head_manifest(ref(same)).digest == DIGEST
    assert realm.seen()[0].headers["authorization"].startswith("Basic ")
    other = start(servers, _bearer_registry(f"http://localhost:{port}/token"))
    with pytest.raises(registry.Unauthorized, match=r"\(another host\)"):
        client(creds=Credentials(USER, PASSWORD)).head_manifest(ref(other))
    assert len(realm.seen()) == 1


def test_redirect_to_another_host_drops_credentials(servers: list[FaultServer]) -> None:
    """Basic credentials go to the registry, not to the host it redirects the request to."""
    target = start(servers, serving())

    def answer(request: Request) -> Reply:
        if request.headers.get("authorization") is None:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return Reply(307, {"Location": f"http://localhost:{target.host.rsplit(':', 1)[1]}{request.path}"})

    server = start(servers, answer)
    assert client(creds=Credentials(USER, PASSWORD)).head_manifest(ref(server)).digest == DIGEST
    assert server.seen()[-1].headers["authorization"].startswith("Basic ")
    assert [r.headers.get("authorization") for r in target.seen()] == [None]


def test_failing_credential_helper_is_unauthorized(servers: list[FaultServer]) -> None:
    """A credential lookup that fails is `unauthorized` for that registry, with the lookup's own message."""

    def lookup(_: str) -> Credentials | None:
        raise CredentialsError("credential helper docker-credential-x for r failed (exit status 1)")

    server = start(servers, lambda r: Reply(401, {"WWW-Authenticate": 'Basic realm="r"'}))
    own = registry.RegistryClient(lookup, timeout=5.0)
    with pytest.raises(registry.Unauthorized, match=r"docker-credential-x .*exit status 1"):
        own.head_manifest(ref(server))


# -- through a check cycle, on the real engine ----------------------------------------------------


def _without_digest(upstream: Registry) -> Script:
    """A front for a real registry whose HEAD answers lose their Docker-Content-Digest."""

    def answer(request: Request) -> Reply:
        got = requests.get(
            f"{upstream.url}{request.path}",
            headers={"Accept": request.headers.get("accept", distribution.ACCEPT)},
            timeout=10,
        )
        headers = {"Content-Type": got.headers.get("Content-Type", "")}
        if request.method == "GET":
            headers["Docker-Content-Digest"] = got.headers.get("Docker-Content-Digest", "")
        return Reply(got.status_code, headers, got.content)

    return answer


@pytest.mark.engine
def test_each_registry_fault_stays_with_its_services(
    deploy: Deploy,
    registry: Registry,
    servers: list[FaultServer],
    docker_client: docker.DockerClient,
    run_label: str,
    containers: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In one cycle: a registry without digest headers costs one GET and still finds the running image up
    to date; a malformed index and a failing credential helper are errors of their own services only; the
    service on a sound registry is checked as usual."""
    name, tag, _image_id, digest = deploy(registry)
    # One container per service (a config may not watch a container twice), all on the same image.
    twins = {s: f"{name}-{s}" for s in ("front", "bad", "locked")}
    for twin in twins.values():
        run_container(docker_client, run_label, twin, tag, containers)
    front = start(servers, _without_digest(registry))
    index = json.dumps({"manifests": [{"platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    bad = start(
        servers, lambda r: Reply(200, {"Docker-Content-Digest": distribution.digest_of(index)}, index)
    )
    locked = start(servers, lambda r: Reply(401, {"WWW-Authenticate": 'Basic realm="r"'}))
    helper = tmp_path / "bin" / "docker-credential-dwfail"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\necho 'lease hunter2-secret'\nexit 1\n")
    helper.chmod(0o755)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credHelpers": {locked.host: "dwfail"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    services = {
        "ok": {"container": name},
        "front": {"container": twins["front"], "image": f"{front.host}/sample:latest"},
        "bad": {"container": twins["bad"], "image": f"{bad.host}/sample:latest"},
        "locked": {"container": twins["locked"], "image": f"{locked.host}/sample:latest"},
    }
    with structlog.testing.capture_logs() as logged:
        found = check(write_config(tmp_path / "dw.yaml", services))
    assert {s: (r.status, r.reason) for s, r in found.items()} == {
        "ok": ("up-to-date", None),
        "front": ("up-to-date", None),
        "bad": ("error", "protocol-error"),
        "locked": ("error", "unauthorized"),
    }
    assert found["front"].registry_digest == digest
    assert [r.method for r in front.seen()] == ["HEAD", "GET"]
    assert "docker-credential-dwfail" in str(found["locked"].error)
    assert "hunter2" not in json.dumps([str(e) for e in logged])


@pytest.mark.engine
@pytest.mark.parametrize("socket_url", [None, ENGINE26], ids=["engine20", "engine26"])
def test_engines_report_their_insecure_registries(lab: None, socket_url: str | None) -> None:
    """Both lab engines answer `docker info` with loopback as an insecure range, read as data."""
    engine = Engine.connect(socket_url)
    try:
        config = engine.registry_config()
    finally:
        engine.close()
    assert ipaddress.ip_network("127.0.0.0/8") in config.insecure_cidrs
    assert config.secure.get("docker.io") is True

"""The memcached fixtures start, flush, kill, restart and pause real servers (raw protocol only)."""

from __future__ import annotations

import socket
import ssl

import os

import pytest

from sqla_memcache.memcached_process import split_address
from support import databases
from support import memcached as memcached_support
from support.databases import MYSQL_ENV, mysql_server_url, require_url
from support.memcached import ENV_SERVERS, ServerPool
from support.raw import raw_command, version


def store(address: str, key: str, value: bytes, **kwargs) -> bytes:
    header = f"set {key} 0 0 {len(value)}\r\n".encode()
    return raw_command(address, header + value + b"\r\n", **kwargs)


def fetch(address: str, key: str, **kwargs) -> bytes:
    return raw_command(address, f"get {key}\r\n".encode(), terminator=b"END\r\n", **kwargs)


def refuses_connections(address: str) -> bool:
    try:
        socket.create_connection(split_address(address), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_memcached_answers_version(memcached):
    assert memcached.servers == [memcached.address]
    assert version(memcached.address)[0].isdigit()


def test_memcached_stores_values(memcached):
    assert store(memcached.address, "fixture-key", b"value") == b"STORED\r\n"
    assert fetch(memcached.address, "fixture-key") == b"VALUE fixture-key 0 5\r\nvalue\r\nEND\r\n"


def test_memcached_is_flushed_between_tests(memcached):
    # Runs after test_memcached_stores_values on the same session server.
    assert fetch(memcached.address, "fixture-key") == b"END\r\n"
    stats = raw_command(memcached.address, b"stats\r\n", terminator=b"END\r\n")
    assert b"STAT cmd_set 0\r\n" in stats


def test_cluster_has_three_distinct_servers(memcached_cluster):
    servers = memcached_cluster.servers
    assert len(set(servers)) == 3
    for index, address in enumerate(servers):
        assert store(address, "which", str(index).encode()) == b"STORED\r\n"
    for index, address in enumerate(servers):
        assert fetch(address, "which") == f"VALUE which 0 1\r\n{index}\r\nEND\r\n".encode()


def test_factory_starts_new_processes(memcached_factory, memcached):
    first, second = memcached_factory(), memcached_factory()
    assert len({first.address, second.address, memcached.address}) == 3
    assert first.pid != second.pid
    store(first.address, "k", b"1")
    assert fetch(second.address, "k") == b"END\r\n"


def test_factory_kill_and_restart_on_same_port(memcached_factory):
    server = memcached_factory()
    port, pid = server.port, server.pid
    store(server.address, "k", b"before")
    server.kill()
    assert refuses_connections(server.address)
    server.start()
    assert server.port == port and server.pid != pid
    assert fetch(server.address, "k") == b"END\r\n"  # a restarted server is empty


def test_factory_stop(memcached_factory):
    server = memcached_factory()
    server.stop()
    assert not server.is_running()
    assert refuses_connections(server.address)


def test_factory_pause_and_resume(memcached_factory):
    server = memcached_factory()
    store(server.address, "k", b"v")
    server.pause()
    # The kernel still accepts the connection but the stopped process never answers.
    with pytest.raises(socket.timeout):
        raw_command(server.address, b"version\r\n", timeout=0.5)
    server.resume()
    assert fetch(server.address, "k") == b"VALUE k 0 1\r\nv\r\nEND\r\n"


def test_factory_extra_args(memcached_factory):
    server = memcached_factory(extra_args=("-I", "2m"), memory_mb=32)
    stats = raw_command(server.address, b"stats settings\r\n", terminator=b"END\r\n")
    assert b"STAT item_size_max 2097152\r\n" in stats
    assert b"STAT maxbytes 33554432\r\n" in stats


def test_factory_processes_are_stopped_after_the_test(memcached_factory):
    server = memcached_factory()
    assert server.is_running() and os.path.exists(f"/proc/{server.pid}")
    test_factory_processes_are_stopped_after_the_test.server = (server, server.pid)  # type: ignore[attr-defined]


def test_previous_factory_process_was_reaped():
    # Runs right after the test above (file order), once its factory was torn down.
    server, pid = getattr(test_factory_processes_are_stopped_after_the_test, "server", (None, None))
    if server is None:
        pytest.skip("the test above did not run (deselected or skipped)")
    assert not server.is_running()
    assert not os.path.exists(f"/proc/{pid}")  # gone and reaped (a zombie would still be listed)


def test_tls_server_speaks_tls_with_the_right_ca(tls_memcached):
    context = ssl.create_default_context(cafile=str(tls_memcached.ca_file))
    assert version(tls_memcached.address, ssl_context=context)
    assert store(tls_memcached.address, "tls", b"x", ssl_context=context) == b"STORED\r\n"


def test_tls_server_is_refused_with_the_wrong_ca(tls_memcached):
    context = ssl.create_default_context(cafile=str(tls_memcached.wrong_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        version(tls_memcached.address, ssl_context=context)


def test_tls_server_rejects_plaintext(tls_memcached):
    with pytest.raises((ConnectionError, OSError)):
        raw_command(tls_memcached.address, b"version\r\n", timeout=2)


def test_tls_files_exist(tls_memcached):
    for path in (tls_memcached.ca_file, tls_memcached.cert_file, tls_memcached.key_file, tls_memcached.wrong_ca_file):
        assert path.read_text().startswith("-----BEGIN")


def test_no_source_explains_how_to_get_memcached(monkeypatch):
    monkeypatch.delenv(ENV_SERVERS, raising=False)
    monkeypatch.setattr(memcached_support, "memcached_binary", lambda: None)
    monkeypatch.setattr(memcached_support, "docker_available", lambda: (False, "no Docker engine reachable"))
    pool = ServerPool()
    assert pool.source == ""
    assert "apt-get install memcached" in pool.unavailable and ENV_SERVERS in pool.unavailable


def test_env_servers_are_used_as_given(monkeypatch, memcached):
    monkeypatch.setenv(ENV_SERVERS, f" {memcached.address} ,")
    pool = ServerPool()
    assert pool.source == "env"
    assert pool.servers(1) == [memcached.address]
    with pytest.raises(LookupError, match=ENV_SERVERS):
        pool.servers(2)
    pool.close()
    assert version(memcached.address)  # a given server is never stopped


def test_env_servers_must_be_host_port(monkeypatch):
    monkeypatch.setenv(ENV_SERVERS, "localhost")
    with pytest.raises(ValueError, match="host:port"):
        ServerPool()


def test_unreachable_database_skips_locally_and_fails_under_ci(monkeypatch):
    found = (None, "database server at mysql+pymysql://root@127.0.0.1:1/ not reachable")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        require_url(found)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_url(found)


def test_unreachable_database_reason_names_the_variable(monkeypatch):
    monkeypatch.setenv(MYSQL_ENV, "mysql+pymysql://root@127.0.0.1:1/")
    databases._server_url.cache_clear()
    try:
        url, reason = mysql_server_url()
    finally:
        databases._server_url.cache_clear()
    assert url is None and MYSQL_ENV in reason


@pytest.mark.mysql
def test_mysql_url_connects(mysql_url):
    import sqlalchemy as sa

    engine = sa.create_engine(mysql_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


@pytest.mark.postgresql
def test_pg_url_connects(pg_url):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()

"""A dead memcached is logged once per outage (WARNING), its return once (INFO), not once per retry."""
from __future__ import annotations

import logging
from typing import Any

from sqla_memcache import Client


def _marked(caplog: Any, level: int) -> int:
    return sum(1 for r in caplog.records if r.levelno == level and "marked dead" in r.getMessage())


def test_one_warning_per_outage_and_one_line_when_the_server_answers_again(memcached_factory: Any, caplog: Any) -> None:
    server = memcached_factory()
    client = Client([server.address], dead_retry=0, socket_timeout=0.5)  # every call retries the server
    assert client.set("k", "v")
    with caplog.at_level(logging.DEBUG, logger="sqla_memcache.connection"):
        server.stop()
        for _ in range(5):
            assert client.get("k") is None  # each call finds the server down again
        assert _marked(caplog, logging.WARNING) == 1 and _marked(caplog, logging.DEBUG) >= 2
        server.start()
        assert client.set("k", "back") and client.get("k") == "back"
        back = [r for r in caplog.records if r.levelno == logging.INFO and "answers again" in r.getMessage()]
        assert len(back) == 1 and server.address in back[0].getMessage()
        server.stop()  # a second outage is its own warning
        assert client.get("k") is None
        assert _marked(caplog, logging.WARNING) == 2
    client.disconnect_all()

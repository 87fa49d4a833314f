"""Helpers of the test suite, one concept per module (importable as ``support.<module>``).

``raw``        the memcached text protocol over a fresh socket: ``raw_command``, ``raw``,
               ``stats``, ``version``, ``reset`` (never through the client under test)
``memcached``  servers for the fixtures: :class:`~support.memcached.ServerPool`, a
               :class:`~support.memcached.MemcachedProcess` tests may kill or pause (built on
               :mod:`sqla_memcache.memcached_process`), the objects fixtures hand to tests,
               ``closed_address()`` (a server that is down)
``tls``        certificates for a TLS memcached
``databases``  where the MariaDB/PostgreSQL servers are; a fresh database per backend
``sql``        :class:`~support.sql.StatementCounter`, the SQL an engine sends
``threads``    :func:`~support.threads.run_threads`, the thread harness
``clients``    ``make_client`` (the ORM tests' client) and ``Blocking``/``ClientMaker``: one call
               surface over ``Client`` and ``AsyncClient`` (the ``make`` fixture of tests/client)

``tests/`` is on ``sys.path`` through ``pythonpath`` in ``pyproject.toml``; spawned
worker processes inherit it.
"""

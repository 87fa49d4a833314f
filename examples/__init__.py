"""Runnable examples: ``python -m examples.<name> [--servers HOST:PORT]``.

* ``client_basics`` -- the bundled client, python-memcached style.
* ``dict_counter``  -- MemcachedDict as a shared counter and CAS-edited record.
* ``mixin_recipe``  -- the MemcachedORMObject mixin recipe on SQLite.
* ``top5_films``    -- the sakila "top 5 films" cache on MySQL/MariaDB.

Without ``--servers`` (or ``$SQLA_MEMCACHE_SERVERS``) each example uses
127.0.0.1:11211 when it answers, and otherwise starts a private memcached on a
free port that stops when the example ends.
"""

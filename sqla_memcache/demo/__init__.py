"""The sakila "top 5 films by rental rate" demo: models, CSV loader and runner.

``python -m sqla_memcache demo`` (or ``sqla-memcache demo``) runs it; see
:mod:`sqla_memcache.demo.runner`.
"""

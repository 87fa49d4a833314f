"""Fault, load and hostile-input tests (a package so its conftest does not shadow the others)."""

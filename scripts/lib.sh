# Shared set-up steps for scripts/test, scripts/demo and .ci/run (source it; bash only).
# Each ensure_* step installs what is missing and does nothing when it is already there.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_MEMCACHED_SERVERS="127.0.0.1:11211,127.0.0.1:11212"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly, or through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else return 1; fi
}

can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; }; }

APT_UPDATED=""
apt_install() {
    can_apt || die "cannot install $* (no apt-get, or not root and no sudo)"
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

docker_reachable() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for_port HOST PORT SECONDS WHAT
wait_for_port() {
    local deadline=$((SECONDS + $3))
    until port_open "$1" "$2"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$4 did not start listening on $1:$2 within $3 s"
        sleep 0.5
    done
}

# memcached: the local binary (installed with apt when missing), else the two
# docker-compose nodes, exported as SQLA_MEMCACHE_TEST_SERVERS / SQLA_MEMCACHE_SERVERS.
ensure_memcached() {
    if command -v memcached >/dev/null || [ -x /usr/bin/memcached ]; then return; fi
    if can_apt; then
        apt_install memcached
        # Debian's package starts a system-wide daemon on 11211; the tests start their own.
        return
    fi
    if docker_reachable; then
        say "no memcached binary and no apt-get: using docker compose (two memcached nodes)"
        (cd "$ROOT" && docker compose up -d memcached-1 memcached-2)
        wait_for_port 127.0.0.1 11211 60 "memcached (docker compose)"
        wait_for_port 127.0.0.1 11212 60 "memcached (docker compose)"
        export SQLA_MEMCACHE_TEST_SERVERS="${SQLA_MEMCACHE_TEST_SERVERS:-$COMPOSE_MEMCACHED_SERVERS}"
        export SQLA_MEMCACHE_SERVERS="${SQLA_MEMCACHE_SERVERS:-$COMPOSE_MEMCACHED_SERVERS}"
        return
    fi
    die "memcached is needed: install it (sudo apt-get install memcached) or start a Docker engine and run: docker compose up -d"
}

# MariaDB for the database tests: when nothing listens on 3306 and Docker is
# reachable, start the compose MariaDB (sakila loaded). Otherwise those tests skip
# with a visible reason (or fail under CI=true).
maybe_compose_mysql() {
    port_open 127.0.0.1 3306 && return
    docker_reachable || { say "no MariaDB/MySQL on 127.0.0.1:3306: the MySQL tests will be skipped"; return; }
    say "starting MariaDB with sakila via docker compose"
    (cd "$ROOT" && docker compose up -d mysql)
    wait_for_port 127.0.0.1 3306 180 "MariaDB (docker compose)"
}

# Pick the Python to use and export PYTHON: an active virtualenv, the project's
# .venv, or the system python3 -- unless that one is "externally managed"
# (PEP 668, Debian 12+/Ubuntu 23.04+), in which case .venv is created.
ensure_python() {
    if [ -n "${PYTHON:-}" ]; then return; fi
    if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"; export PYTHON; return; fi
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; export PYTHON; return; fi
    command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
    if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        say "system python is externally managed: creating $ROOT/.venv"
        python3 -m venv "$ROOT/.venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$ROOT/.venv"; }
        PYTHON="$ROOT/.venv/bin/python"
    else
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        PYTHON="$(command -v python3)"
    fi
    export PYTHON
}

# pip_install EXTRAS: editable install of the project with those extras ("" for none).
pip_install() {
    local target="$ROOT"
    [ -n "$1" ] && target="$ROOT[$1]"
    say "pip install -e '$target'"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e "$target"
}

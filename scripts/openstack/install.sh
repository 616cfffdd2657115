#!/bin/bash
# Installs what the OpenStack test fixture needs, once per machine: MariaDB and RabbitMQ
# from Debian (not started here; up.sh starts them on loopback) and the real OpenStack
# 2025.1 services from PyPI into a venv at $B/venv (default ~/.cache/swell/openstack,
# outside the clone so that CI on a machine that ran before reuses it). Idempotent: a
# marker records what was installed; a changed constraints file reinstalls.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${B:-$HOME/.cache/swell/openstack}
mkdir -p "$B"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ] || ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "openstack fixture: installing mariadb-server rabbitmq-server (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server rabbitmq-server >/dev/null
fi
for c in curl openssl; do command -v $c >/dev/null 2>&1 || { $SUDO apt-get install -y -qq $c >/dev/null; }; done
WANT=$(cat "$HERE/upper-constraints-2025.1.txt" "$HERE/noopmech/pyproject.toml" "$HERE/noopmech/noopmech/__init__.py" "$0" | sha256sum | cut -c1-16)
if [ "$(cat "$B/venv/.swell-installed" 2>/dev/null)" != "$WANT" ]; then
  echo "openstack fixture: installing Keystone, Nova, Placement, Glance, Neutron, Octavia into $B/venv (about a minute)"
  rm -rf "$B/venv"
  python3 -m venv "$B/venv"
  "$B/venv/bin/pip" install -q -U pip wheel setuptools
  "$B/venv/bin/pip" install -q -c "$HERE/upper-constraints-2025.1.txt" "keystone>=27,<28" "nova>=31,<32" \
    "openstack-placement>=13,<14" "glance>=30,<31" "neutron>=26,<27" "octavia>=16,<17" \
    python-openstackclient gunicorn PyMySQL
  "$B/venv/bin/pip" install -q --no-build-isolation "$HERE/noopmech"
  echo "$WANT" > "$B/venv/.swell-installed"
fi
echo "openstack fixture: installed in $B"

#!/bin/sh
# Seed 3's business cloud on one Swell server, set up by the service's admin.
#
#   swell serve &
#   examples/seed3-business-cloud/setup.sh ADMIN_PASSWORD_FILE [PASSWORDS_DIR]
#
# It creates the business `acme` (a tenant with a quota and a listen range of its own),
# applies desktops.yaml in it, creates one user per employee with a generated password
# (written to PASSWORDS_DIR, default ./acme-passwords, mode 0600), and binds each
# employee to one desktop. An employee then sees only their own desktop and pauses or
# resumes it, with the CLI or in the dashboard (http://127.0.0.1:7700/):
#
#   swell login --user asha --tenant acme --password-file acme-passwords/asha --context asha
#   swell instance list desktops --context asha      # one line: asha's desktop
#   swell instance pause desktops ID --context asha
#
# The server's address comes from SWELL_URL (default http://127.0.0.1:7700).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
admin_password=${1:?usage: setup.sh ADMIN_PASSWORD_FILE [PASSWORDS_DIR]}
passwords=${2:-./acme-passwords}
employees="asha ravi meena"

# The business: a tenant with room for its three desktops and nothing else. Granting
# `process` trusts the tenant's documents with the host; here the admin applies them.
swell login --user admin --password-file "$admin_password" --context seed3-admin
swell tenant create acme --display-name "Acme Traders" --context seed3-admin
swell tenant update acme --max-instances 3 --providers process \
  --listen 127.0.0.1:8120-8129 --context seed3-admin

# The admin acts in the tenant to apply its document and bind its employees.
swell login --user admin --tenant acme --password-file "$admin_password" --context seed3-acme
swell apply -f "$here/desktops.yaml" --wait=2m --context seed3-acme

mkdir -p "$passwords"
chmod 700 "$passwords"
ids=$(swell instance list desktops -o json --context seed3-acme |
  grep -o '"id": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
for employee in $employees; do
  id=${ids%%[[:space:]]*}
  ids=${ids#"$id"}
  ids=${ids#[[:space:]]}
  umask 077
  head -c 18 /dev/urandom | base64 >"$passwords/$employee"
  swell user create "$employee" --password-file "$passwords/$employee" --context seed3-admin
  swell owner add desktops "$id" "$employee" --context seed3-acme
  echo "$employee owns desktop $id (password in $passwords/$employee)"
done

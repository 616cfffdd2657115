#!/bin/bash
# The OpenStack test fixture: a minimal real OpenStack (2025.1 Epoxy) on 127.0.0.1 —
# keystone, placement, glance, nova (fake driver), neutron (ML2 + no-op binder), octavia
# (no-op drivers). See README.md beside it for how it was built and the pitfalls
# solved below. Every run starts from fresh databases. Prereqs: install.sh.
# Stop it with down.sh (by recorded PIDs).
set -euo pipefail
B=${B:-$HOME/.cache/swell/openstack}; mkdir -p $B; cd $B; export PATH=$B/venv/bin:$PATH
L=$B/logs; mkdir -p $L $B/run etc/{keystone,placement,glance,nova,neutron/plugins/ml2} state/{fernet,cred,images,staging,tasks,nova,nlocks,qlocks}
DB=mysql+pymysql://os:ospass@127.0.0.1
KS=http://127.0.0.1:5000/v3
auth() { # $1 = user -> keystoneauth password section body
cat <<EOF
auth_url = $KS
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = $1
password = servpass
region_name = RegionOne
EOF
}
wait_http() { for i in $(seq 1 240); do curl -s -m 5 -o /dev/null "$1" && return 0; sleep 0.25; done; echo "timeout $1"; return 1; }
t() { echo "[$(( $(date +%s%N)/1000000 - T0 )) ms] $*"; }
T0=$(( $(date +%s%N)/1000000 ))

# --- infra: MariaDB + RabbitMQ, loopback only
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 --skip-name-resolve >$L/mariadb.log 2>&1 </dev/null & echo $! >run/mariadb.pid
# RabbitMQ drops to the rabbitmq user, which cannot enter a state dir under /root: its own
# files live under /var/lib/rabbitmq.
RB=/var/lib/rabbitmq/swell-fixture
rm -rf $RB state; mkdir -p state/{fernet,cred,images,staging,tasks,nova,nlocks,qlocks} $RB/mnesia $RB/log && chown -R rabbitmq:rabbitmq $RB
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost \
  RABBITMQ_MNESIA_BASE=$RB/mnesia RABBITMQ_LOG_BASE=$RB/log RABBITMQ_DIST_PORT=25672 \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
setsid rabbitmq-server >$L/rabbit.log 2>&1 </dev/null & echo $! >run/rabbit.pid
for i in $(seq 1 120); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.25; done
mysql -uroot -e 'DROP DATABASE IF EXISTS keystone; DROP DATABASE IF EXISTS placement; DROP DATABASE IF EXISTS nova_api; DROP DATABASE IF EXISTS nova; DROP DATABASE IF EXISTS nova_cell0; DROP DATABASE IF EXISTS glance; DROP DATABASE IF EXISTS neutron;'  # fresh cloud each run
mysql -uroot <<'EOF'
CREATE DATABASE IF NOT EXISTS keystone; CREATE DATABASE IF NOT EXISTS placement; CREATE DATABASE IF NOT EXISTS nova_api;
CREATE DATABASE IF NOT EXISTS nova; CREATE DATABASE IF NOT EXISTS nova_cell0; CREATE DATABASE IF NOT EXISTS glance; CREATE DATABASE IF NOT EXISTS neutron;
CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY 'ospass'; GRANT ALL PRIVILEGES ON *.* TO 'os'@'127.0.0.1'; FLUSH PRIVILEGES;
EOF
t "mariadb ready"

# --- keystone
cat >etc/keystone/keystone.conf <<EOF
[DEFAULT]
log_file = $L/keystone.log
[database]
connection = $DB/keystone
[fernet_tokens]
key_repository = $B/state/fernet
[fernet_receipts]
key_repository = $B/state/fernet
[credential]
key_repository = $B/state/cred
EOF
KC="--config-file etc/keystone/keystone.conf"
keystone-manage $KC db_sync
keystone-manage $KC fernet_setup --keystone-user root --keystone-group root
keystone-manage $KC credential_setup --keystone-user root --keystone-group root
keystone-manage $KC bootstrap --bootstrap-password adminpass --bootstrap-region-id RegionOne \
  --bootstrap-admin-url $KS/ --bootstrap-internal-url $KS/ --bootstrap-public-url $KS/
# shims: keystone/nova/placement parse sys.argv with oslo.config -> strip gunicorn's argv
mkdir -p shims
for m in "ks_app keystone.wsgi.api" "nova_app nova.wsgi.osapi_compute" "placement_app placement.wsgi.api"; do set -- $m
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom %s import application  # noqa\n' $2 > shims/$1.py; done
OS_KEYSTONE_CONFIG_FILES=$B/etc/keystone/keystone.conf PYTHONPATH=$B/shims setsid gunicorn -b 127.0.0.1:5000 -w 1 --threads 4 ks_app:application >$L/keystone-g.log 2>&1 </dev/null & echo $! >run/keystone.pid
wait_http $KS; t "keystone up"

cat >admin-openrc <<EOF
export OS_AUTH_URL=$KS OS_USERNAME=admin OS_PASSWORD=adminpass OS_PROJECT_NAME=admin OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
EOF
. ./admin-openrc
{ echo "project create --domain default service"
  for u in nova placement glance neutron; do echo "user create --domain default --password servpass $u"; echo "role add --project service --user $u admin"; echo "role add --project service --user $u service"; done
  for s in "nova compute 8774/v2.1" "placement placement 8778" "glance image 9292" "neutron network 9696"; do set -- $s
    echo "service create --name $1 $2"; for i in public internal; do echo "endpoint create --region RegionOne $2 $i http://127.0.0.1:$3"; done; done
} | openstack >$L/catalog.log 2>&1 || true  # cliff batch mode exits 1 at EOF
t "catalog done"

# --- placement
cat >etc/placement/placement.conf <<EOF
[DEFAULT]
log_file = $L/placement.log
[placement_database]
connection = $DB/placement
[api]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = $KS
$(auth placement)
EOF
placement-manage --config-file etc/placement/placement.conf db sync
OS_PLACEMENT_CONFIG_DIR=$B/etc/placement PYTHONPATH=$B/shims setsid gunicorn -b 127.0.0.1:8778 -w 1 --threads 4 placement_app:application >$L/placement-g.log 2>&1 </dev/null & echo $! >run/placement.pid

# --- glance (file store)
cp venv/etc/glance/glance-api-paste.ini etc/glance/
cat >etc/glance/glance-api.conf <<EOF
[DEFAULT]
log_file = $L/glance.log
bind_host = 127.0.0.1
bind_port = 9292
enabled_backends = fs:file
workers = 1
[database]
connection = $DB/glance
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $B/state/images
[os_glance_staging_store]
filesystem_store_datadir = $B/state/staging
[os_glance_tasks_store]
filesystem_store_datadir = $B/state/tasks
[paste_deploy]
flavor = keystone
config_file = $B/etc/glance/glance-api-paste.ini
[keystone_authtoken]
www_authenticate_uri = $KS
$(auth glance)
EOF
glance-manage --config-file etc/glance/glance-api.conf db_sync >$L/glance-dbsync.log 2>&1
setsid glance-api --config-file etc/glance/glance-api.conf >$L/glance-stdout.log 2>&1 </dev/null & echo $! >run/glance.pid

# --- neutron: ML2, local+flat types, 'noop_bind' mech driver (binds every port, vif_type other), L3 router plugin, no agents
cp venv/etc/neutron/api-paste.ini etc/neutron/
cat >etc/neutron/neutron.conf <<EOF
[DEFAULT]
log_file = $L/neutron-server.log
bind_host = 127.0.0.1
bind_port = 9696
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = rabbit://guest:guest@127.0.0.1:5672/
api_paste_config = $B/etc/neutron/api-paste.ini
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
dhcp_agent_notification = false
[database]
connection = $DB/neutron
[keystone_authtoken]
www_authenticate_uri = $KS
$(auth neutron)
[nova]
$(auth nova)
[oslo_concurrency]
lock_path = $B/state/qlocks
EOF
cat >etc/neutron/plugins/ml2/ml2_conf.ini <<EOF
[ml2]
type_drivers = local,flat
tenant_network_types = local
mechanism_drivers = noop_bind
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
[securitygroup]
firewall_driver = noop
EOF
QC="--config-file etc/neutron/neutron.conf --config-file etc/neutron/plugins/ml2/ml2_conf.ini"
neutron-db-manage $QC upgrade head >$L/neutron-dbsync.log 2>&1
setsid neutron-server $QC >$L/neutron-stdout.log 2>&1 </dev/null & echo $! >run/neutron.pid

# --- nova: fake virt driver
cp venv/etc/nova/api-paste.ini etc/nova/
cat >etc/nova/nova.conf <<EOF
[DEFAULT]
log_dir = $L
state_path = $B/state/nova
transport_url = rabbit://guest:guest@127.0.0.1:5672/
compute_driver = fake.FakeDriver
host = fakehost1
my_ip = 127.0.0.1
# start periodic tasks (host discovery, resource tracker) immediately instead of after up to 60 s
periodic_fuzzy_delay = 0
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $B/etc/nova/api-paste.ini
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 2
[keystone_authtoken]
www_authenticate_uri = $KS
$(auth nova)
[service_user]
send_service_user_token = true
$(auth nova)
[placement]
$(auth placement)
[neutron]
$(auth neutron)
[glance]
region_name = RegionOne
[oslo_concurrency]
lock_path = $B/state/nlocks
[vnc]
enabled = false
[oslo_messaging_notifications]
driver = noop
EOF
NC="--config-file $B/etc/nova/nova.conf"
nova-manage $NC api_db sync
nova-manage $NC cell_v2 map_cell0 --database_connection $DB/nova_cell0
nova-manage $NC cell_v2 list_cells | grep -q ' cell1 ' || nova-manage $NC cell_v2 create_cell --name cell1
nova-manage $NC db sync
t "all db syncs done"
for i in $(seq 1 120); do rabbitmqctl -q -n rabbit@localhost status >/dev/null 2>&1 && break; sleep 0.5; done
t "rabbit ready"
for s in conductor scheduler compute; do setsid nova-$s $NC >$L/nova-$s-stdout.log 2>&1 </dev/null & echo $! >run/nova-$s.pid; done
OS_NOVA_DISABLE_EVENTLET_PATCHING=1 OS_NOVA_CONFIG_DIR=$B/etc/nova PYTHONPATH=$B/shims setsid gunicorn -b 127.0.0.1:8774 -w 1 --threads 4 --timeout 120 nova_app:application >$L/nova-api-g.log 2>&1 </dev/null & echo $! >run/nova-api.pid
wait_http http://127.0.0.1:8778/; wait_http http://127.0.0.1:9292/; wait_http http://127.0.0.1:9696/; wait_http http://127.0.0.1:8774/
t "all APIs answering"

# --- seed: flavor, image, networks, router, security group
head -c 1048576 /dev/zero > state/tiny.img
{ echo "flavor create --id 1 --ram 512 --disk 1 --vcpus 1 m1.tiny"
  echo "image create --disk-format raw --container-format bare --public --file $B/state/tiny.img tiny"
  # shared: every project may attach servers to it (Swell resolves a template's networks
  # among the project's own and the shared ones; the tests' quota project uses it)
  echo "network create --share private"; echo "subnet create --network private --subnet-range 10.10.0.0/24 private-subnet"
  echo "network create --external --provider-network-type flat --provider-physical-network public public"
  echo "subnet create --network public --subnet-range 203.0.113.0/24 --no-dhcp public-subnet"
  echo "router create router1"; echo "router set --external-gateway public router1"; echo "router add subnet router1 private-subnet"
} | openstack >$L/seed.log 2>&1 || true
t "seeded"
# wait until nova-compute has created its compute node in cell1, then map it (discover_hosts)
for i in $(seq 1 240); do [ "$(mysql -N -uroot -e 'select count(*) from nova.compute_nodes')" -gt 0 ] && break; sleep 0.5; done
nova-manage $NC cell_v2 discover_hosts >/dev/null
# --- optional: Octavia with noop amphora/compute/network drivers (LB objects go ACTIVE, nothing is provisioned)
if [ "${OCTAVIA:-1}" = 1 ]; then
mysql -uroot -e 'DROP DATABASE IF EXISTS octavia; CREATE DATABASE octavia'
{ echo "user create --domain default --password servpass octavia"; echo "role add --project service --user octavia admin"
  echo "service create --name octavia load-balancer"
  for i in public internal; do echo "endpoint create --region RegionOne load-balancer $i http://127.0.0.1:9876"; done; } | openstack >$L/octavia-catalog.log 2>&1 || true
mkdir -p etc/octavia state/octcerts state/olocks
openssl req -x509 -newkey rsa:2048 -nodes -keyout state/octcerts/ca.key -out state/octcerts/ca.pem -days 30 -subj "/CN=octavia-test-ca" 2>/dev/null
cat state/octcerts/ca.key state/octcerts/ca.pem > state/octcerts/client.pem
cat >etc/octavia/octavia.conf <<EOF
[DEFAULT]
log_file = $L/octavia.log
transport_url = rabbit://guest:guest@127.0.0.1:5672/
[api_settings]
bind_host = 127.0.0.1
bind_port = 9876
auth_strategy = keystone
enabled_provider_drivers = amphora:Amphora noop
default_provider_driver = amphora
[database]
connection = $DB/octavia
[controller_worker]
client_ca = $B/state/octcerts/ca.pem
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
network_driver = network_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
amp_boot_network_list = 00000000-0000-0000-0000-000000000000
amp_flavor_id = 1
amp_image_tag = amphora
[task_flow]
jobboard_enabled = False
[certificates]
ca_certificate = $B/state/octcerts/ca.pem
ca_private_key = $B/state/octcerts/ca.key
server_certs_key_passphrase = insecure-key-do-not-use-this-key
[haproxy_amphora]
client_cert = $B/state/octcerts/client.pem
server_ca = $B/state/octcerts/ca.pem
[keystone_authtoken]
www_authenticate_uri = $KS
$(auth octavia)
[service_auth]
$(auth octavia)
[oslo_concurrency]
lock_path = $B/state/olocks
EOF
octavia-db-manage --config-file etc/octavia/octavia.conf upgrade head >$L/octavia-dbsync.log 2>&1
setsid octavia-api --config-file etc/octavia/octavia.conf >$L/octavia-api-stdout.log 2>&1 </dev/null & echo $! >run/octavia-api.pid
setsid octavia-worker --config-file etc/octavia/octavia.conf >$L/octavia-worker-stdout.log 2>&1 </dev/null & echo $! >run/octavia-worker.pid
wait_http http://127.0.0.1:9876/
t "octavia up"
fi
# Nova's default quota (10 instances) is below what the scale-out tests need.
openstack quota set --instances 50 --cores 100 --ram 102400 admin >$L/quota.log 2>&1 || true
# --- a second project, tenant-b, as one tenant's own project: its user (member role
# only) and application credential, network, security group, key pair and (with
# Octavia) load balancer and pool, all owned by tenant-b. The tests check that a
# provider of the first project (admin) can use none of them and never sees its servers.
{ echo "project create --domain default tenant-b"
  echo "user create --domain default --password tenantbpass tenant-b"
  echo "role add --project tenant-b --user tenant-b member"
  echo "role create load-balancer_member"
  echo "role add --project tenant-b --user tenant-b load-balancer_member"
  echo "network create --project tenant-b net-b"
  echo "subnet create --project tenant-b --network net-b --subnet-range 10.20.0.0/24 subnet-b"
  echo "security group create --project tenant-b sg-b"
} | openstack >$L/tenant-b.log 2>&1 || true
# As tenant-b itself (REST: one CLI call costs seconds): token, key pair, application credential.
TB=$(curl -si -m 30 -H 'Content-Type: application/json' -d '{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "tenant-b", "domain": {"id": "default"}, "password": "tenantbpass"}}}, "scope": {"project": {"name": "tenant-b", "domain": {"id": "default"}}}}}' $KS/auth/tokens | tr -d '\r')
TBT=$(echo "$TB" | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p')
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
TBU=$(echo "$TB" | sed -n '/^{/p' | field '["token"]["user"]["id"]')
rest() { curl -s -m 60 -H "X-Auth-Token: $TBT" -H 'Content-Type: application/json' -H 'OpenStack-API-Version: compute 2.79' "$@"; }
rest -d '{"keypair": {"name": "key-b"}}' http://127.0.0.1:8774/v2.1/os-keypairs >>$L/tenant-b.log
rest -d '{"application_credential": {"name": "swell-b", "secret": "tenant-b-app-secret"}}' $KS/users/$TBU/application_credentials >>$L/tenant-b.log
if [ "${OCTAVIA:-1}" = 1 ]; then
  OCT=http://127.0.0.1:9876/v2/lbaas
  lb_wait() { for i in $(seq 1 240); do [ "$(rest $OCT/loadbalancers/$1 | field '["loadbalancer"]["provisioning_status"]')" = ACTIVE ] && return 0; sleep 0.5; done; echo "lb $1 not ACTIVE"; return 1; }
  SUBB=$(rest "http://127.0.0.1:9696/v2.0/subnets?name=subnet-b" | field '["subnets"][0]["id"]')
  LBB=$(rest -d '{"loadbalancer": {"name": "lb-b", "vip_subnet_id": "'$SUBB'"}}' $OCT/loadbalancers | field '["loadbalancer"]["id"]')
  lb_wait $LBB
  LIB=$(rest -d '{"listener": {"name": "lb-b", "loadbalancer_id": "'$LBB'", "protocol": "HTTP", "protocol_port": 8080}}' $OCT/listeners | field '["listener"]["id"]')
  lb_wait $LBB
  rest -d '{"pool": {"name": "pool-b", "listener_id": "'$LIB'", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}' $OCT/pools >>$L/tenant-b.log
  lb_wait $LBB
fi
# tenant-b's credentials, as the tests use them (application credential swell-b)
cat >tenant-b-openrc <<EOF
export OS_AUTH_URL=$KS OS_AUTH_TYPE=v3applicationcredential OS_APPLICATION_CREDENTIAL_NAME=swell-b OS_USERNAME=tenant-b OS_USER_DOMAIN_ID=default OS_APPLICATION_CREDENTIAL_SECRET=tenant-b-app-secret OS_REGION_NAME=RegionOne
EOF
t "tenant-b ready"
t "READY"

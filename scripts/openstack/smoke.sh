#!/bin/bash
# REST-level smoke test: the calls an autoscaler makes (token+catalog, create server, poll ACTIVE, FIP, SG, pause/unpause, delete).
set -euo pipefail
B=${B:-$HOME/.cache/swell/openstack}; J() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
ms() { echo $(( $(date +%s%N)/1000000 )); }
R=$(curl -si -X POST http://127.0.0.1:5000/v3/auth/tokens -H 'Content-Type: application/json' -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"adminpass"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}')
TOKEN=$(echo "$R" | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r')
echo "$R" | sed -n '/^{/,$p' | J '"catalog: " + ", ".join(s["type"] for s in d["token"]["catalog"])'
H=(-H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json')
NOVA=http://127.0.0.1:8774/v2.1; NEU=http://127.0.0.1:9696/v2.0
IMG=$(curl -s "${H[@]}" "http://127.0.0.1:9292/v2/images?name=tiny" | J 'd["images"][0]["id"]')
NET=$(curl -s "${H[@]}" "$NEU/networks?name=private" | J 'd["networks"][0]["id"]')
PUB=$(curl -s "${H[@]}" "$NEU/networks?name=public" | J 'd["networks"][0]["id"]')
SG=$(curl -s "${H[@]}" -X POST $NEU/security-groups -d '{"security_group":{"name":"smoke-sg"}}' | J 'd["security_group"]["id"]')
curl -s "${H[@]}" -X POST $NEU/security-group-rules -d "{\"security_group_rule\":{\"security_group_id\":\"$SG\",\"direction\":\"ingress\",\"protocol\":\"tcp\",\"port_range_min\":80,\"port_range_max\":80}}" >/dev/null
T0=$(ms)
SID=$(curl -s "${H[@]}" -H 'OpenStack-API-Version: compute 2.79' -X POST $NOVA/servers -d "{\"server\":{\"name\":\"smoke\",\"imageRef\":\"$IMG\",\"flavorRef\":\"1\",\"networks\":[{\"uuid\":\"$NET\"}],\"security_groups\":[{\"name\":\"smoke-sg\"}]}}" | J 'd["server"]["id"]')
until [ "$(curl -s "${H[@]}" $NOVA/servers/$SID | J 'd["server"]["status"]')" = ACTIVE ]; do sleep 0.2; done
echo "server $SID ACTIVE after $(( $(ms)-T0 )) ms"
PORT=$(curl -s "${H[@]}" "$NEU/ports?device_id=$SID" | J 'd["ports"][0]["id"]')
FIP=$(curl -s "${H[@]}" -X POST $NEU/floatingips -d "{\"floatingip\":{\"floating_network_id\":\"$PUB\",\"port_id\":\"$PORT\"}}" | J 'd["floatingip"]["floating_ip_address"]+" "+d["floatingip"]["id"]')
echo "floating ip: $FIP"
curl -s "${H[@]}" -X POST $NOVA/servers/$SID/action -d '{"pause":null}' -o /dev/null -w "pause %{http_code}\n"
until [ "$(curl -s "${H[@]}" $NOVA/servers/$SID | J 'd["server"]["status"]')" = PAUSED ]; do sleep 0.2; done; echo PAUSED
curl -s "${H[@]}" -X POST $NOVA/servers/$SID/action -d '{"unpause":null}' -o /dev/null -w "unpause %{http_code}\n"
until [ "$(curl -s "${H[@]}" $NOVA/servers/$SID | J 'd["server"]["status"]')" = ACTIVE ]; do sleep 0.2; done; echo ACTIVE again
curl -s "${H[@]}" $NOVA/servers/$SID | J '"addresses: %s" % d["server"]["addresses"]'
curl -s "${H[@]}" -X DELETE $NEU/floatingips/${FIP#* } -o /dev/null -w "fip delete %{http_code}\n"
T1=$(ms); curl -s "${H[@]}" -X DELETE $NOVA/servers/$SID -o /dev/null -w "server delete %{http_code}\n"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" $NOVA/servers/$SID)" = 404 ]; do sleep 0.2; done
echo "server gone after $(( $(ms)-T1 )) ms"
curl -s "${H[@]}" -X DELETE $NEU/security-groups/$SG -o /dev/null -w "sg delete %{http_code}\n"
echo "SMOKE OK"

#!/bin/bash
# Stops only what up.sh started (by recorded PID), then RabbitMQ (by node name) and its epmd (by PID).
B=${B:-$HOME/.cache/swell/openstack}; cd $B
for s in octavia-api octavia-worker nova-api nova-compute nova-scheduler nova-conductor neutron glance placement keystone; do
  [ -f run/$s.pid ] && kill $(cat run/$s.pid) 2>/dev/null; done
sleep 2
RABBITMQ_NODENAME=rabbit@localhost rabbitmqctl -q -n rabbit@localhost stop 2>/dev/null
EPMD=$(ss -ltnpH 'sport = :4369' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2); [ -n "$EPMD" ] && kill $EPMD
[ -f run/mariadb.pid ] && kill $(cat run/mariadb.pid)

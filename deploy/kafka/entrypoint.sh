#!/bin/sh
# Kafka for docker compose, as scripts/services.sh runs it (docs/SECURITY.md):
# one KRaft node whose client listener is SASL_SSL (SCRAM-SHA-512, and PLAIN
# for the admin only) with the stack's server certificate (certs volume),
# the controller listener SASL_SSL with PLAIN for the quorum's own user,
# KRaft's StandardAuthorizer denying what no ACL allows, and the admin
# bootstrapped at storage format (KIP-900). `iotpipe init --kafka-acls`
# creates the stages' principals. Runs as root to read the server key
# (0600 for the certs job's user); it is copied, 0600, off the volume.
set -eu
# The passwords come from Docker secret files (KAFKA_*_PASSWORD_FILE), or
# from the variables themselves outside compose.
if [ -n "${KAFKA_ADMIN_PASSWORD_FILE:-}" ]; then KAFKA_ADMIN_PASSWORD=$(cat "$KAFKA_ADMIN_PASSWORD_FILE"); fi
if [ -n "${KAFKA_CONTROLLER_PASSWORD_FILE:-}" ]; then KAFKA_CONTROLLER_PASSWORD=$(cat "$KAFKA_CONTROLLER_PASSWORD_FILE"); fi
: "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_CONTROLLER_PASSWORD:?}" "${CLUSTER_ID:?}"
d=/var/lib/kafka
mkdir -p "$d/data" "$d/tls"
umask 077
cat /certs/server/server.key /certs/server/server.crt >"$d/tls/server.pem"
cat >"$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:9093
listeners=SASL_SSL://:9092,CONTROLLER://:9093
advertised.listeners=SASL_SSL://kafka:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD" user_admin="$KAFKA_ADMIN_PASSWORD";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$KAFKA_CONTROLLER_PASSWORD" user_controller="$KAFKA_CONTROLLER_PASSWORD";
ssl.keystore.type=PEM
ssl.keystore.location=$d/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=/certs/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
cat >"$d/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=/certs/ca.crt
PROPS
if [ -f "$d/data/meta.properties" ] && [ ! -f "$d/data/iotpipe-sasl-ssl" ]; then
  echo "kafka: the kafka-data volume holds a PLAINTEXT cluster of an older iotpipe, without SCRAM credentials;" \
    "remove it (docker compose down; docker volume rm iotpipe_kafka-data) and start again" >&2
  exit 1
fi
if [ ! -f "$d/data/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$d/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=\"admin\",password=\"$KAFKA_ADMIN_PASSWORD\"]"
  touch "$d/data/iotpipe-sasl-ssl"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$d/server.properties"

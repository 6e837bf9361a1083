// Package testenv gives integration tests clients for the real services
// that scripts/services.sh runs (Mosquitto, Kafka, PostgreSQL, versitygw),
// a unique topic, consumer group, bucket, schema or MQTT topic prefix per
// test, and polling helpers to use instead of sleeps.
//
// The services are found through the IOTPIPE_* variables printed by
// `scripts/services.sh env`. When one is missing, the test fails with a
// message saying how to start them: integration tests are never skipped.
//
// PostgreSQL and S3 are reached over TLS, as the env gives them: the DSNs
// carry sslmode=verify-full and sslrootcert, Env.S3Config has the https
// endpoint, IOTPIPE_S3_CA_FILE and the lake sink's scoped key; Env.S3Admin
// holds the root key (IOTPIPE_S3_ADMIN_*), used only to make and remove
// buckets: Bucket makes one with it and hands it to the lake's key, as
// `iotpipe init --s3-bucket-owner` does. Env.Environ and Env.S3Vars pass
// all of it to child processes.
//
// Kafka is SASL_SSL (docs/SECURITY.md): Env.Kafka is a client of the admin
// (a super user); a stage gets its own principal with KafkaConfig(t,
// Bridge|Processor|SinkLake|SinkTimescale), or KafkaEnv for a child
// process: a test principal with that stage's operations only, created
// once per cluster and test process. Never build a Kafka client from the
// brokers alone.
//
// Child processes: StartProc runs the iotpipe binary (built once per test
// binary by Binary) as a Proc with an explicit environment (PATH and the
// like, plus the variables the test passes; Env.Environ gives the
// services' settings), waits for log lines with a deadline, stops it with
// SIGTERM within a bound and reports the exit code, kills it with SIGKILL,
// and prints the tail of its log when the test failed. The process
// mechanics are in internal/proc, which bench/e2e uses without testing.T.
package testenv

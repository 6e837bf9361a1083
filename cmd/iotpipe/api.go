package main

// `iotpipe api`: flags → api.Config → api.New → service.Run.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/internal/service"
)

const apiSummary = "the device API: registry, shadows and configuration over REST (/v1), published to devices over MQTT"

var apiCmd = stageCmd[api.Config, *api.API]{
	name: "api",
	help: `Serve the device API and relay shadow changes to devices.

REST under /v1 (the OpenAPI 3.1 document is at /v1/openapi.json): devices and
groups of the registry, each device's shadow (desired, reported, delta,
version) and configuration. Requests carry a bearer token made with
'iotpipe tokens create --role admin|operator|viewer'; writes need If-Match.
Every shadow change is committed together with its MQTT messages (outbox);
the relay publishes them at QoS 1 with the API's own identity (iotpipe ca
client iotpipe-api): the delta, retained, on devices/<id>/shadow/update/delta
and desired.config, retained, on devices/<id>/config.

SIGTERM/SIGINT: stop taking requests, finish those in flight, stop the relay,
exit 0 (within --shutdown-timeout).`,
	addr:     ":9106",
	config:   api.DefaultConfig,
	newFunc:  api.New,
	shutdown: func(c *api.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *api.Config) {
		f.Group("HTTP")
		f.String(&c.Listen, "listen", "address of the API (host:port)")
		f.String(&c.TLSCertFile, "tls-cert-file", "the API's server certificate (PEM; iotpipe ca server)")
		f.String(&c.TLSKeyFile, "tls-key-file", "the key of --tls-cert-file (PEM)")
		f.Bool(&c.Insecure, "insecure-http", "serve plain HTTP (behind a TLS-terminating proxy, or on loopback for tests)")
		f.Float(&c.RatePerToken, "rate-per-token", "requests per second one token may make (0: no limit)")
		f.Int(&c.RateBurst, "rate-burst", "requests one token may make at once above --rate-per-token")
		f.Int(&c.DefaultPageSize, "page-size", "items per page of list endpoints when the request gives no limit")
		f.Int(&c.MaxPageSize, "max-page-size", "largest limit a list request may ask for")
		f.Group("Database")
		f.Secret(&c.DSN, "pg-registry-dsn", "database URL of a member of the registry role iotpipe_registry")
		f.String(&c.Schema, "pg-schema", "schema that holds the registry and shadows (created by iotpipe init)")
		f.Int(&c.MaxConns, "pg-max-conns", "most database connections")
		f.Group("Shadow limits")
		f.Int(&c.Limits.MaxBytes, "shadow-max-bytes", "largest desired or reported document, and largest patch, in bytes")
		f.Int(&c.Limits.MaxDepth, "shadow-max-depth", "deepest nesting of objects and arrays in a document")
		f.Int(&c.Limits.MaxKeys, "shadow-max-keys", "most keys in a document, counted through every level")
		f.Group("Certificates and broker")
		f.String(&c.CADir, "ca-dir", "the CA that signs device certificates on POST /v1/devices (empty: device creation is refused)")
		f.Duration(&c.CertValidity, "cert-validity", "validity of a device certificate")
		f.String(&c.CRLFile, "crl-file", "the broker's crlfile, rewritten when a device is revoked (empty: skipped)")
		f.String(&c.ACLFile, "mqtt-acl-file", "the broker's acl_file, whose deny section is rewritten when a device is disabled or revoked (empty: skipped)")
		f.String(&c.BrokerPIDFile, "mqtt-broker-pid-file", "file with the broker's process id, sent SIGHUP after such a change (empty: skipped)")
		f.Group("Relay (outbox → MQTT)")
		f.Bool(&c.Relay.Disabled, "relay-disabled", "do not publish the outbox (another iotpipe api does)")
		f.List(&c.Relay.URLs, "mqtt-url", "comma-separated broker URLs, mqtts://host:port (or mqtt://), tried in order")
		f.String(&c.Relay.ClientID, "mqtt-client-id", "MQTT client id of the relay")
		f.String(&c.Relay.Username, "mqtt-username", "MQTT user name (brokers without client certificates)")
		f.Secret(&c.Relay.Password, "mqtt-password", "MQTT password")
		f.String(&c.Relay.CAFile, "mqtt-ca-file", "mqtts://: PEM file of the CA the broker's certificate must chain to (empty: the system's roots)")
		f.String(&c.Relay.CertFile, "mqtt-cert-file", "mqtts://: the API's client certificate, CN iotpipe-api (iotpipe ca client iotpipe-api)")
		f.String(&c.Relay.KeyFile, "mqtt-key-file", "mqtts://: the key of --mqtt-cert-file")
		f.String(&c.Relay.ServerName, "mqtt-server-name", "mqtts://: the name the broker's certificate must hold (empty: the URL's host)")
		f.Int(&c.Relay.Batch, "relay-batch", "most outbox messages the relay holds at a time (read, not yet acknowledged and deleted)")
		f.Int(&c.Relay.InFlight, "relay-in-flight", "publishers of the relay: up to this many messages (of different devices) in flight at once; one device's messages stay in order")
		f.Duration(&c.Relay.Poll, "relay-poll", "how often the outbox is read when no change notice came")
		f.Duration(&c.Relay.ConnectTimeout, "mqtt-connect-timeout", "timeout of one connection attempt")
		f.Duration(&c.Relay.DebugDelay, "debug-relay-delay", "testing only: hold every outbox batch this long before publishing it")
	},
	describe: func(c *api.Config, o *service.Options) string {
		scheme := "https"
		if c.Insecure {
			scheme = "http"
		}
		relay := "relay disabled"
		if !c.Relay.Disabled {
			relay = fmt.Sprintf("relay to %s as %s", strings.Join(c.Relay.URLs, ","), c.Relay.ClientID)
		}
		return fmt.Sprintf("api on %s://%s/v1/ (schema %s), %s; metrics on %q", scheme, c.Listen, c.Schema, relay, listenAddr(o))
	},
}

func runAPI(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &apiCmd, env, args)
}

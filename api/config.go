package api

import (
	"net"
	"net/url"
	"os"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/shadow"
)

// Config configures the API server and its outbox relay. Start from
// DefaultConfig: a zero field means zero (or is refused), never a default.
type Config struct {
	// Listen is the API's address (host:port).
	Listen string
	// TLSCertFile and TLSKeyFile are the server's certificate and key
	// (iotpipe ca server). Both empty only with Insecure.
	TLSCertFile, TLSKeyFile string
	// Insecure serves plain HTTP: for a TLS-terminating proxy in front,
	// or a test on loopback.
	Insecure bool

	// DSN is the database URL of a member of the registry role; Schema
	// holds the registry and shadow tables.
	DSN    string
	Schema string
	// MaxConns bounds the database connections.
	MaxConns int

	// CADir holds the CA (ca.crt, ca.key) that signs device
	// certificates on POST /v1/devices; empty: device creation is refused
	// (503).
	CADir string
	// CertValidity is the validity of a device certificate.
	CertValidity time.Duration
	// Broker files rewritten when a device is disabled, enabled or
	// revoked (see registry.BrokerFiles); empty ones are skipped.
	CRLFile, ACLFile, BrokerPIDFile string

	// Limits bound shadow documents.
	Limits shadow.Limits
	// RatePerToken is the sustained requests per second one token may
	// make, with bursts of RateBurst; 0 turns the limit off.
	RatePerToken float64
	RateBurst    int
	// MaxPageSize bounds the limit parameter of list endpoints;
	// DefaultPageSize is used when the request has none.
	MaxPageSize, DefaultPageSize int

	// Relay publishes the outbox over MQTT.
	Relay RelayConfig

	// ShutdownTimeout bounds the soft stop: requests in flight finish,
	// the relay finishes the message it is publishing.
	ShutdownTimeout time.Duration
}

// RelayConfig is how the relay reaches the MQTT broker, with the API's
// own identity (iotpipe ca client iotpipe-api).
type RelayConfig struct {
	// Disabled runs the API without publishing (another process relays).
	Disabled bool
	// URLs are the brokers, mqtts://host:port (or mqtt:// on a trusted
	// network), tried in order.
	URLs []string
	// ClientID is the MQTT client id.
	ClientID string
	// Username and Password, for a broker without client certificates.
	Username, Password string
	// CAFile, CertFile, KeyFile and ServerName: as the bridge's.
	CAFile, CertFile, KeyFile, ServerName string
	// Batch bounds the outbox rows the relay holds at a time (read and
	// not yet deleted).
	Batch int
	// InFlight is how many publishers pipeline the outbox: each owns a
	// share of the devices and publishes their messages in order, one
	// PUBACK at a time, so up to InFlight messages are in flight (and no
	// more than the broker's Receive Maximum).
	InFlight int
	// Poll is how often the outbox is read when no change notice came.
	Poll time.Duration
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration
	// DebugDelay, for tests only, holds every batch this long before it
	// is published (to kill the process between commit and publish).
	DebugDelay time.Duration
}

// DefaultConfig returns the defaults: listen on :8443 with TLS, schema
// iotpipe, 8 KiB/6 levels/200 keys per document, 50 requests/s per
// token (burst 100), pages of 100 (at most 1000), the relay on
// mqtts://localhost:8883 as iotpipe-api.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "local"
	}
	return Config{
		Listen:          ":8443",
		Schema:          "iotpipe",
		MaxConns:        8,
		CertValidity:    certs.DefaultClientValidity,
		Limits:          shadow.DefaultLimits(),
		RatePerToken:    50,
		RateBurst:       100,
		MaxPageSize:     1000,
		DefaultPageSize: 100,
		Relay: RelayConfig{
			URLs:           []string{"mqtts://localhost:8883"},
			ClientID:       "iotpipe-api-" + host,
			Batch:          500,
			InFlight:       64,
			Poll:           time.Second,
			ConnectTimeout: 10 * time.Second,
		},
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate reports every invalid field as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Add("Listen", "%q is not host:port: %v", c.Listen, err)
	}
	switch {
	case c.Insecure && (c.TLSCertFile != "" || c.TLSKeyFile != ""):
		p.Add("Insecure", "plain HTTP was asked for together with {TLSCertFile}/{TLSKeyFile}; choose one")
	case !c.Insecure && (c.TLSCertFile == "" || c.TLSKeyFile == ""):
		p.Add("TLSCertFile", "the API serves HTTPS: give the server's certificate and {TLSKeyFile} (iotpipe ca server), or {Insecure} behind a TLS proxy")
	}
	if c.DSN == "" {
		p.Add("DSN", "no database URL: give a member of the registry role (iotpipe_registry)")
	}
	p.Check(c.Schema == "", "Schema", "must not be empty")
	p.Check(c.MaxConns < 1, "MaxConns", "must be at least 1")
	p.Check(c.CertValidity <= 0, "CertValidity", "must be positive")
	p.Check(c.Limits.MaxBytes < 64, "Limits.MaxBytes", "must be at least 64")
	p.Check(c.Limits.MaxDepth < 1, "Limits.MaxDepth", "must be at least 1")
	p.Check(c.Limits.MaxKeys < 1, "Limits.MaxKeys", "must be at least 1")
	p.Check(c.RatePerToken < 0, "RatePerToken", "must not be negative (0 turns the limit off)")
	p.Check(c.RatePerToken > 0 && c.RateBurst < 1, "RateBurst", "must be at least 1")
	p.Check(c.MaxPageSize < 1, "MaxPageSize", "must be at least 1")
	if c.DefaultPageSize < 1 || c.DefaultPageSize > c.MaxPageSize {
		p.Add("DefaultPageSize", "%d must be between 1 and {MaxPageSize}", c.DefaultPageSize)
	}
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	if !c.Relay.Disabled {
		r := &c.Relay
		if len(r.URLs) == 0 {
			p.Add("Relay.URLs", "no MQTT broker given (or disable the relay)")
		}
		for _, s := range r.URLs {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "mqtt" && u.Scheme != "mqtts") || u.Port() == "" {
				p.Add("Relay.URLs", "%q is not mqtt://host:port or mqtts://host:port", s)
			}
		}
		p.Check(r.ClientID == "", "Relay.ClientID", "must not be empty")
		p.Check(r.Batch < 1, "Relay.Batch", "must be at least 1")
		p.Check(r.InFlight < 1, "Relay.InFlight", "must be at least 1")
		p.Check(r.Poll <= 0, "Relay.Poll", "must be positive")
		p.Check(r.ConnectTimeout <= 0, "Relay.ConnectTimeout", "must be positive")
		p.Check(r.DebugDelay < 0, "Relay.DebugDelay", "must not be negative")
		if err := r.files().Check(); err != nil {
			for _, fe := range fileErrors(err) {
				p.Add("Relay."+fe.Field, "%v", fe.Err)
			}
		}
	}
	return p.Err()
}

func (r *RelayConfig) files() certs.ClientFiles {
	return certs.ClientFiles{CAFile: r.CAFile, CertFile: r.CertFile, KeyFile: r.KeyFile, ServerName: r.ServerName}
}

// fileErrors unpacks the *certs.FileError of a joined error.
func fileErrors(err error) []*certs.FileError {
	var out []*certs.FileError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*certs.FileError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
		}
	}
	walk(err)
	return out
}

// Package kafkax holds the Kafka connection settings shared by every stage
// and turns them into franz-go client options.
//
// Contract: Config is how every stage, init, the simulator and the
// benchmarks reach Kafka: brokers, SASL (SCRAM-SHA-512 by default, PLAIN
// for brokers that only offer it) and TLS (a CA file, an optional client
// certificate and key, the server name). Validate reports each problem as a
// *config.FieldError naming the field ("SASL.Password", "TLS.CAFile"); Opts
// applies them. Explain turns what Kafka answered at run time (wrong
// password, unknown CA, name mismatch, an ACL that denies an operation) into
// a *config.FieldError on the setting at fault, so that a command names
// its flag and variable. The password is never part of any message.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
)

// SASL mechanisms.
const (
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
	MechanismPlain       = "PLAIN"
)

// Config is how a stage reaches Kafka.
type Config struct {
	// Brokers are the seed brokers, host:port each.
	Brokers []string
	// ClientID names this process in broker logs and quotas.
	ClientID string
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// SASL authenticates the client; off when Username is empty.
	SASL SASL
	// TLS encrypts the connection and checks the brokers' certificate.
	TLS TLS
	// Fetch tunes a consumer's fetch requests (zero values: franz-go's
	// defaults, an answer as soon as one byte is there).
	Fetch Fetch
}

// Fetch tunes how a consumer batches its reads: the broker answers a fetch
// once MinBytes are there or MaxWait has passed. A consumer of a steady
// stream then makes a few large fetches a second instead of hundreds of
// small ones (CPU on both sides, each over TLS), at the cost of up to
// MaxWait of latency.
type Fetch struct {
	// MinBytes is the least a broker gathers before answering (0: 1 byte).
	MinBytes int
	// MaxWait is the longest a broker waits for MinBytes (0: 5s; at least
	// 10ms).
	MaxWait time.Duration
}

// SASL is the client's Kafka principal.
type SASL struct {
	// Mechanism is SCRAM-SHA-512 (default) or PLAIN (send PLAIN only over
	// TLS: the password travels as it is).
	Mechanism string
	// Username is the principal's name (User:<Username> in ACLs); empty
	// turns SASL off.
	Username string
	// Password is the principal's secret. Never logged or printed.
	Password string
}

// TLS are the client's TLS settings.
type TLS struct {
	// Enabled dials the brokers with TLS.
	Enabled bool
	// CAFile holds the CA certificates the brokers' certificates must chain
	// to; empty uses the system's roots.
	CAFile string
	// CertFile and KeyFile are an optional client certificate and key
	// (PEM), both or neither, read again at every connection (rotation).
	CertFile, KeyFile string
	// ServerName is the name the brokers' certificates must hold; empty
	// uses the host of each broker address.
	ServerName string
}

// Enabled reports whether the client authenticates with SASL.
func (s SASL) Enabled() bool { return s.Username != "" }

// HostInstanceID is the default static group member id of a stage: the
// host name (a pod name in Kubernetes, the container id in Compose), so a
// restarted process takes its partitions back at once (KIP-345). Two
// copies on one host need their own --instance-id.
func HostInstanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// ParseBrokers splits a comma-separated broker list, trimming blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// DefaultConfig is the default connection of a stage that names itself
// clientID to the brokers: localhost:9092, 5 s dial timeout, SCRAM-SHA-512
// when a username is given, no TLS unless enabled.
func DefaultConfig(clientID string) Config {
	return Config{Brokers: []string{"localhost:9092"}, ClientID: clientID, DialTimeout: 5 * time.Second,
		SASL: SASL{Mechanism: MechanismSCRAMSHA512}}
}

// Validate checks that every broker is a host:port pair, that the dial
// timeout is positive, that the SASL settings are complete and that the
// TLS files can be read; each problem is a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	if len(c.Brokers) == 0 {
		p.Add("Brokers", "no Kafka broker given")
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			p.Add("Brokers", "broker %q is not host:port", b)
		}
	}
	p.Check(c.DialTimeout <= 0, "DialTimeout", "must be positive")
	p.Check(c.Fetch.MinBytes < 0 || c.Fetch.MinBytes > 64<<20, "Fetch.MinBytes", "must be between 0 and 64 MiB")
	p.Check(c.Fetch.MaxWait != 0 && (c.Fetch.MaxWait < 10*time.Millisecond || c.Fetch.MaxWait > time.Minute), "Fetch.MaxWait",
		"must be 0 (default) or between 10ms and 1m")
	switch c.SASL.Mechanism {
	case MechanismSCRAMSHA512, MechanismPlain:
	default:
		p.Add("SASL.Mechanism", "%q is not a SASL mechanism iotpipe speaks: want %s or %s", c.SASL.Mechanism, MechanismSCRAMSHA512, MechanismPlain)
	}
	p.Check(c.SASL.Username == "" && c.SASL.Password != "", "SASL.Username", "a SASL password is given without a username")
	p.Check(c.SASL.Username != "" && c.SASL.Password == "", "SASL.Password", "a SASL username is given without a password")
	t := c.TLS
	if !t.Enabled {
		p.Check(t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "", "TLS.Enabled",
			"TLS files or a server name are given but TLS is off")
		p.Check(c.SASL.Enabled() && c.SASL.Mechanism == MechanismPlain, "SASL.Mechanism",
			"PLAIN sends the password as it is: turn on {TLS.Enabled}")
	} else if err := c.tlsFiles().Check(); err != nil {
		for _, e := range splitJoin(err) {
			var fe *certs.FileError
			if errors.As(e, &fe) {
				p.Add("TLS."+fe.Field, "%v", fe.Err)
			} else {
				p.Add("TLS.CAFile", "%v", e)
			}
		}
	}
	return p.Err()
}

func splitJoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c *Config) tlsFiles() certs.ClientFiles {
	return certs.ClientFiles{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, ServerName: c.TLS.ServerName}
}

// Mechanism returns the SASL mechanism of c, nil when SASL is off.
func (c *Config) Mechanism() sasl.Mechanism {
	if !c.SASL.Enabled() {
		return nil
	}
	if c.SASL.Mechanism == MechanismPlain {
		return plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()
	}
	return scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()
}

// Opts returns the franz-go options for c, followed by extra. A TLS file
// that cannot be read (Validate reports it first) makes every dial fail
// with that *config.FieldError.
func (c *Config) Opts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.DialTimeout > 0 { // zero only in configs that skipped Validate (tests)
		opts = append(opts, kgo.DialTimeout(c.DialTimeout))
	}
	if c.TLS.Enabled {
		// ServerName stays empty unless set: franz-go then checks each
		// broker against the host it dials.
		cfg, err := c.tlsFiles().Config("")
		if err == nil {
			opts = append(opts, kgo.DialTLSConfig(cfg))
		} else {
			var fe *certs.FileError
			ferr := &config.FieldError{Field: "TLS.CAFile", Err: err}
			if errors.As(err, &fe) {
				ferr = &config.FieldError{Field: "TLS." + fe.Field, Err: fe.Err}
			}
			opts = append(opts, kgo.Dialer(func(context.Context, string, string) (net.Conn, error) { return nil, ferr }))
		}
	}
	if m := c.Mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	if c.Fetch.MinBytes > 0 {
		opts = append(opts, kgo.FetchMinBytes(int32(c.Fetch.MinBytes)))
	}
	if c.Fetch.MaxWait > 0 {
		opts = append(opts, kgo.FetchMaxWait(c.Fetch.MaxWait))
	}
	return append(opts, extra...)
}

// Describe summarises c for --check-config and logs: brokers, TLS and the
// principal, never the password.
func (c *Config) Describe() string {
	s := "kafka=" + strings.Join(c.Brokers, ",")
	if c.TLS.Enabled {
		s += " tls=on"
	} else {
		s += " tls=off"
	}
	if c.SASL.Enabled() {
		s += " sasl=" + c.SASL.Mechanism + " principal=" + c.SASL.Username
	} else {
		s += " sasl=off"
	}
	return s
}

// Ping asks the cluster for its metadata and returns a clear error when no
// broker answers within the context's deadline.
func Ping(ctx context.Context, adm *kadm.Client) (kadm.BrokerDetails, error) {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	return md.Brokers, nil
}

// authorization errors Kafka answers when an ACL denies an operation, and
// what was denied.
var denied = []struct {
	err  *kerr.Error
	what string
}{
	{kerr.TopicAuthorizationFailed, "access to a topic"},
	{kerr.GroupAuthorizationFailed, "access to the consumer group"},
	{kerr.TransactionalIDAuthorizationFailed, "use of the transactional id"},
	{kerr.ClusterAuthorizationFailed, "a cluster operation"},
	{kerr.DelegationTokenAuthorizationFailed, "a delegation token"},
}

// ErrDenied is matched (errors.Is) by the error Explain returns when an ACL
// of the cluster denied the principal an operation.
var ErrDenied = errors.New("denied by a Kafka ACL")

// IsAuthorization reports whether err is Kafka denying an operation by ACL.
func IsAuthorization(err error) bool {
	for _, d := range denied {
		if isCode(err, d.err) {
			return true
		}
	}
	return false
}

// isCode reports whether err is the Kafka error code of target: franz-go
// also returns errors of a code in values of their own (with the broker's
// message), which errors.Is does not match.
func isCode(err error, target *kerr.Error) bool {
	var ke *kerr.Error
	return errors.Is(err, target) || (errors.As(err, &ke) && ke.Code == target.Code)
}

// IsSecurity reports whether err is a failure of the security settings
// that retrying does not cure: an ACL denied an operation, Kafka refused
// the SASL credentials or mechanism, or the brokers' certificate is not
// trusted or not for the expected name. Stages stop on it (Explain names
// the setting) instead of waiting for Kafka.
func IsSecurity(err error) bool {
	return IsAuthorization(err) || isCode(err, kerr.SaslAuthenticationFailed) ||
		isCode(err, kerr.UnsupportedSaslMechanism) || isCode(err, kerr.IllegalSaslState) ||
		certs.IsUnknownAuthority(err) || certs.IsNameMismatch(err)
}

// FetchError names what a consumer of group was doing when err came in a
// fetch: reading topic, or joining the group when topic is empty.
func FetchError(group, topic string, err error) error {
	if topic == "" {
		return fmt.Errorf("join consumer group %s: %w", group, err)
	}
	return fmt.Errorf("read (consume) topic %s in consumer group %s: %w", topic, group, err)
}

// Explain returns err as a *config.FieldError on the setting at fault when
// it is a failure of the security settings, nil-safe and otherwise
// unchanged:
//   - Kafka refused the SASL credentials: SASL.Password (the principal is
//     named, the password never);
//   - the brokers' certificate is not signed by the CA file: TLS.CAFile;
//   - the certificate does not hold the expected name: TLS.ServerName;
//   - an ACL denied an operation (topic, group, transactional id, cluster):
//     SASL.Username, with what was denied; the operation and resource come
//     from the caller's wrapping (say "produce to telemetry.raw: %w").
//
// A TLS handshake against a plaintext listener (or the reverse) shows up
// as a broken connection, which is returned unchanged.
func (c *Config) Explain(err error) error {
	if err == nil {
		return nil
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return err
	}
	switch {
	case isCode(err, kerr.SaslAuthenticationFailed):
		return &config.FieldError{Field: "SASL.Password", Err: fmt.Errorf("Kafka refused the credentials of principal %q ({SASL.Username}, mechanism %s): %w", c.SASL.Username, c.SASL.Mechanism, err)}
	case isCode(err, kerr.UnsupportedSaslMechanism):
		return &config.FieldError{Field: "SASL.Mechanism", Err: fmt.Errorf("the brokers do not offer SASL mechanism %s: %w", c.SASL.Mechanism, err)}
	case isCode(err, kerr.IllegalSaslState):
		return &config.FieldError{Field: "SASL.Username", Err: fmt.Errorf("the brokers' listener does not expect SASL (is it PLAINTEXT or SSL?): %w", err)}
	case certs.IsUnknownAuthority(err):
		return &config.FieldError{Field: "TLS.CAFile", Err: fmt.Errorf("the brokers' certificate is not signed by a CA in %q: %w", c.TLS.CAFile, err)}
	case certs.IsNameMismatch(err):
		return &config.FieldError{Field: "TLS.ServerName", Err: fmt.Errorf("the brokers' certificate does not hold the expected name (%q; {TLS.ServerName} or the broker's host): %w", c.TLS.ServerName, err)}
	}
	for _, d := range denied {
		if isCode(err, d.err) {
			return &config.FieldError{Field: "SASL.Username", Err: fmt.Errorf("%w: Kafka denied principal %q %s (give each stage its own principal; iotpipe init --kafka-acls grants what it needs): %w",
				ErrDenied, c.SASL.Username, d.what, err)}
		}
	}
	return err
}

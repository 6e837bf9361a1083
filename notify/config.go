package notify

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Defaults of Config, used by DefaultConfig.
const (
	DefaultGroup       = "iotpipe-notify"
	DefaultTopicAlerts = "telemetry.alerts"
	DefaultDSN         = "postgres://iotpipe_sink@localhost:5432/iotpipe?sslmode=disable"
)

// Config configures a Notifier. Start from DefaultConfig.
type Config struct {
	// Kafka is how the stage reaches Kafka.
	Kafka kafkax.Config
	// Group is the Kafka consumer group and the key of the stage's offsets
	// in notify_offsets.
	Group string
	// InstanceID makes this process a static group member (KIP-345);
	// empty: dynamic membership.
	InstanceID string
	// SessionTimeout is the consumer group session timeout.
	SessionTimeout time.Duration
	// TopicAlerts is the input topic; TopicDLQ receives records that do
	// not decode.
	TopicAlerts, TopicDLQ string
	// DSN is the database URL of a member of the writer role; Schema holds
	// the notifications tables (iotpipe init).
	DSN, Schema string
	// PollInterval is how often the deliverer looks for due notifications.
	PollInterval time.Duration
	// GroupWait: after a message to a recipient, its next notifications
	// wait until the oldest is GroupWait old, for others, and are then sent
	// together as one digest; a recipient that got no message in the last
	// GroupWait is told at once. 0 never waits (still grouping what is due
	// together when Digest is set).
	GroupWait time.Duration
	// Digest groups every due notification of a recipient into one message;
	// false sends one message per event.
	Digest bool
	// RateLimit messages per RatePeriod per recipient at most (per notify
	// process); beyond it notifications wait and go out as one digest when
	// the limit allows. 0: no limit.
	RateLimit  int
	RatePeriod time.Duration
	// RetryMin and RetryMax bound the exponential backoff between delivery
	// attempts of a notification; MaxAttempts is its retry budget: after
	// that many failed attempts it is marked failed and counted
	// (iotpipe_notify_undeliverable_total).
	RetryMin, RetryMax time.Duration
	MaxAttempts        int
	// SendTimeout bounds one delivery attempt.
	SendTimeout time.Duration
	// Concurrency is how many recipients are delivered to at once.
	Concurrency int
	// WebhookSecret signs webhooks (Standard Webhooks): "whsec_" followed
	// by the base64 key. Empty: webhooks are refused (not sent unsigned).
	WebhookSecret string
	// NtfyURL is the ntfy server (https://ntfy.sh or your own); NtfyToken
	// its access token (Authorization: Bearer), optional.
	NtfyURL, NtfyToken string
	// SMTPAddr (host:port), SMTPUser/SMTPPassword (PLAIN auth, optional) and
	// SMTPFrom configure email. Empty SMTPAddr: email recipients fail.
	SMTPAddr, SMTPUser, SMTPPassword, SMTPFrom string
	// MQTTURL is the broker for mqtt recipients (mqtt://host:1883 or
	// mqtts://...); MQTTUser/MQTTPassword optional. Empty: mqtt recipients
	// fail.
	MQTTURL, MQTTUser, MQTTPassword string
	// ShutdownTimeout bounds the soft stop.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Kafka:           kafkax.DefaultConfig("iotpipe-notify"),
		Group:           DefaultGroup,
		InstanceID:      kafkax.HostInstanceID(),
		SessionTimeout:  45 * time.Second,
		TopicAlerts:     DefaultTopicAlerts,
		TopicDLQ:        schemas.TopicDLQ,
		DSN:             DefaultDSN,
		Schema:          migrations.DefaultSchema,
		PollInterval:    200 * time.Millisecond,
		GroupWait:       2 * time.Second,
		Digest:          true,
		RateLimit:       10,
		RatePeriod:      time.Minute,
		RetryMin:        time.Second,
		RetryMax:        5 * time.Minute,
		MaxAttempts:     25,
		SendTimeout:     10 * time.Second,
		Concurrency:     8,
		NtfyURL:         "https://ntfy.sh",
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate reports every invalid field as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.SessionTimeout <= 0, "SessionTimeout", "must be positive")
	p.Check(c.TopicAlerts == "", "TopicAlerts", "must name a topic")
	p.Check(c.TopicDLQ == "" || c.TopicDLQ == c.TopicAlerts, "TopicDLQ", "must name a topic other than {TopicAlerts}")
	if c.DSN == "" {
		p.Add("DSN", "must not be empty")
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		p.Add("DSN", "invalid database URL: %v", err)
	}
	p.Check(c.Schema == "" || strings.ToLower(c.Schema) != c.Schema || len(c.Schema) > 63, "Schema", fmt.Sprintf("%q is not a lower-case SQL identifier", c.Schema))
	p.Check(c.PollInterval <= 0, "PollInterval", "must be positive")
	p.Check(c.GroupWait < 0, "GroupWait", "must not be negative")
	p.Check(c.RateLimit < 0, "RateLimit", "must not be negative (0: no limit)")
	p.Check(c.RateLimit > 0 && c.RatePeriod <= 0, "RatePeriod", "must be positive with a {RateLimit}")
	p.Check(c.RetryMin <= 0, "RetryMin", "must be positive")
	p.Check(c.RetryMax < c.RetryMin, "RetryMax", "must be at least {RetryMin}")
	p.Check(c.MaxAttempts < 1, "MaxAttempts", "must be at least 1")
	p.Check(c.SendTimeout <= 0, "SendTimeout", "must be positive")
	p.Check(c.Concurrency < 1, "Concurrency", "must be at least 1")
	if c.WebhookSecret != "" {
		if _, err := decodeSecret(c.WebhookSecret); err != nil {
			p.Add("WebhookSecret", "%v", err)
		}
	}
	if c.NtfyURL != "" {
		if u, err := url.Parse(c.NtfyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Add("NtfyURL", "must be an http or https URL")
		}
	}
	if c.SMTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.SMTPAddr); err != nil {
			p.Add("SMTPAddr", "must be host:port: %v", err)
		}
		if _, err := mail.ParseAddress(c.SMTPFrom); err != nil {
			p.Add("SMTPFrom", "must be an email address when {SMTPAddr} is set: %v", err)
		}
	}
	if c.MQTTURL != "" {
		if u, err := url.Parse(c.MQTTURL); err != nil || (u.Scheme != "mqtt" && u.Scheme != "tcp") || u.Host == "" {
			p.Add("MQTTURL", "must be mqtt://host:port")
		}
	}
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	return p.Err()
}

// decodeSecret returns the key of a Standard Webhooks secret
// ("whsec_<base64>", the prefix optional).
func decodeSecret(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	if err != nil {
		return nil, fmt.Errorf("not whsec_ followed by base64: %w", err)
	}
	if len(k) < 16 {
		return nil, fmt.Errorf("key of %d bytes is too short (want at least 16; the spec suggests 24-64)", len(k))
	}
	return k, nil
}

// Package kafkax holds the Kafka connection settings shared by every stage
// and turns them into franz-go client options.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config is how a stage reaches Kafka.
type Config struct {
	// Brokers are the seed brokers, host:port each.
	Brokers []string
	// ClientID names this process in broker logs and quotas.
	ClientID string
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
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

// Validate checks that every broker is a host:port pair.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("no Kafka broker given")
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("broker %q is not host:port", b)
		}
	}
	return nil
}

// Opts returns the franz-go options for c, followed by extra.
func (c *Config) Opts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.DialTimeout > 0 {
		opts = append(opts, kgo.DialTimeout(c.DialTimeout))
	}
	return append(opts, extra...)
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

package timescale

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotpipe/iotpipe/internal/config"
)

// TestSettingProblem: failures no wait can cure (certificate, pg_hba,
// password) become a problem on DSN; outages stay errors to retry.
func TestSettingProblem(t *testing.T) {
	for _, tc := range []struct {
		err     error
		setting bool
	}{
		{fmt.Errorf("connect: %w", x509.UnknownAuthorityError{}), true},
		{fmt.Errorf("connect: %w", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "db"}), true},
		{fmt.Errorf("connect: %w", &pgconn.PgError{Code: "28000", Message: "pg_hba.conf rejects connection"}), true},
		{fmt.Errorf("connect: %w", &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}), true},
		{fmt.Errorf("connect: %w", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}), false},
		{errors.New("connection refused"), false},
	} {
		err := settingProblem(tc.err)
		var fe *config.FieldError
		got := errors.As(err, &fe) && fe.Field == "DSN"
		if got != tc.setting {
			t.Errorf("settingProblem(%v) = %v; want a DSN problem: %v", tc.err, err, tc.setting)
		}
	}
	if settingProblem(nil) != nil {
		t.Error("settingProblem(nil) != nil")
	}
}

// TestConfigTopicAlerts: the alerts topic is on by default, "-" skips it,
// and an empty or clashing name is a problem on TopicAlerts.
func TestConfigTopicAlerts(t *testing.T) {
	c := DefaultConfig()
	if c.TopicAlerts != DefaultTopicAlerts || !c.alerts() {
		t.Fatalf("default TopicAlerts %q", c.TopicAlerts)
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{{"-", true}, {"pipe.alerts", true}, {"", false}, {c.TopicMetrics, false}, {c.TopicDLQ, false}, {c.TopicRaw, false}} {
		c := DefaultConfig()
		c.TopicAlerts = tc.topic
		err := c.Validate()
		var fe *config.FieldError
		bad := errors.As(err, &fe) && fe.Field == "TopicAlerts"
		if bad == tc.ok || (tc.ok && err != nil) {
			t.Errorf("TopicAlerts %q: %v", tc.topic, err)
		}
	}
}

package objstore

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotpipe/iotpipe/internal/config"
)

func TestValidateCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{filepath.Join(dir, "missing.crt"), notPEM} {
		c := DefaultConfig()
		c.Endpoint, c.AccessKey, c.SecretKey, c.CAFile = "https://s3:7070", "a", "b", ca
		fields := config.Fields(c.Validate())
		if len(fields) != 1 || fields[0].Field != "CAFile" {
			t.Errorf("CA file %s: want one problem on CAFile, got %v", ca, c.Validate())
		}
		if _, err := New(c); err == nil {
			t.Errorf("CA file %s: New accepted it", ca)
		}
	}
}

func TestExplainTLSErrors(t *testing.T) {
	c := Config{Endpoint: "https://s3:7070", CAFile: "/ca.crt"}
	for _, tc := range []struct {
		err   error
		field string
	}{
		{x509.UnknownAuthorityError{}, "CAFile"},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "s3"}, "Endpoint"},
	} {
		var fe *config.FieldError
		if !errors.As(c.Explain(tc.err), &fe) || fe.Field != tc.field {
			t.Errorf("Explain(%T) = %v, want a problem on %s", tc.err, c.Explain(tc.err), tc.field)
		}
	}
	other := errors.New("connection refused")
	if c.Explain(other) != other {
		t.Errorf("Explain changed an outage error")
	}
}

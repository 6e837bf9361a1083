package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/certs"
)

// ca setup makes the CA once, then keeps every current certificate and
// issues only what is missing or no longer matches (a new server name).
func TestCASetupIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	args := []string{"ca", "setup", "--ca-dir", caDir, "--out", out, "--dns", "mosquitto,localhost", "--client", "iotpipe-bridge", "--devices", "3"}
	code, first, errOut := runCLI(t, nil, args...)
	if code != ExitOK {
		t.Fatalf("ca setup: %d %s", code, errOut)
	}
	for _, want := range []string{"created the CA", "issued the server certificate", "(1 issued, 0 kept)", "dev-000000 … dev-000002", "(3 issued, 0 kept)"} {
		if !strings.Contains(first, want) {
			t.Errorf("first run lacks %q:\n%s", want, first)
		}
	}
	key, _ := os.ReadFile(filepath.Join(caDir, certs.CAKeyFile))
	if strings.Contains(first+errOut, string(key[30:60])) {
		t.Fatal("ca setup printed the CA key")
	}
	for _, f := range []string{"ca.crt", "crl.pem", "server/server.crt", "clients/iotpipe-bridge.crt", "devices/dev-000002.crt", "devices/ca.crt"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, f := range []string{"server/server.key", "clients/iotpipe-bridge.key", "devices/dev-000000.key"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v (want mode 0600)", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, certs.CAKeyFile)); err == nil {
		t.Error("the CA key is in --out")
	}
	c0, err := certs.LoadCertFile(filepath.Join(out, "devices", "dev-000000.crt"))
	if err != nil || c0.Subject.CommonName != "dev-000000" {
		t.Fatalf("device certificate: %v", err)
	}

	args[7] = "mosquitto,localhost,mqtt.example.com"
	args[len(args)-1] = "4"
	code, second, errOut := runCLI(t, nil, args...)
	if code != ExitOK {
		t.Fatalf("ca setup again: %d %s", code, errOut)
	}
	for _, want := range []string{"kept the CA", "issued the server certificate", "(0 issued, 1 kept)", "(1 issued, 3 kept)"} {
		if !strings.Contains(second, want) {
			t.Errorf("second run lacks %q:\n%s", want, second)
		}
	}
	c1, err := certs.LoadCertFile(filepath.Join(out, "devices", "dev-000000.crt"))
	if err != nil || c1.SerialNumber.Cmp(c0.SerialNumber) != 0 {
		t.Errorf("dev-000000 was issued again: %v", err)
	}
	srv, err := certs.LoadCertFile(filepath.Join(out, "server", "server.crt"))
	if err != nil || len(srv.DNSNames) != 3 {
		t.Errorf("server certificate names: %v (%v)", srv.DNSNames, err)
	}

	if code, _, errOut := runCLI(t, nil, "ca", "setup", "--ca-dir", caDir, "--out", caDir); code != ExitUsage || !strings.Contains(errOut, "--out (IOTPIPE_OUT)") {
		t.Errorf("--out = --ca-dir: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "ca", "setup", "--ca-dir", caDir, "--out", out, "--devices", "2", "--device-prefix", "a/"); code != ExitUsage || !strings.Contains(errOut, "--device-prefix") {
		t.Errorf("bad --device-prefix: %d %q", code, errOut)
	}
}

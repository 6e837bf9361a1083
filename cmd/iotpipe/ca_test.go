package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/certs"
)

func runCLI(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, args)
	return code, out.String(), errOut.String()
}

func TestCACommands(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	vars := map[string]string{"IOTPIPE_CA_DIR": caDir}
	if code, _, errOut := runCLI(t, nil, "ca", "init"); code != ExitUsage || !strings.Contains(errOut, "--ca-dir (IOTPIPE_CA_DIR)") {
		t.Fatalf("ca init without --ca-dir: %d %q", code, errOut)
	}
	code, out, errOut := runCLI(t, vars, "ca", "init")
	if code != ExitOK {
		t.Fatalf("ca init: %d %s", code, errOut)
	}
	key, _ := os.ReadFile(filepath.Join(caDir, certs.CAKeyFile))
	if strings.Contains(out+errOut, string(key[30:60])) {
		t.Fatal("ca init printed the key")
	}
	if code, _, errOut := runCLI(t, vars, "ca", "server", "--ip", "not-an-ip"); code != ExitUsage || !strings.Contains(errOut, "IOTPIPE_IP") {
		t.Fatalf("bad --ip: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, vars, "ca", "server"); code != ExitUsage || !strings.Contains(errOut, "--dns") {
		t.Fatalf("no names: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, vars, "ca", "server", "--dns", "localhost,mqtt.example", "--ip", "127.0.0.1", "--out", dir); code != ExitOK {
		t.Fatalf("ca server: %d %s", code, errOut)
	}
	srv, err := certs.LoadCertFile(filepath.Join(dir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.VerifyHostname("mqtt.example"); err != nil || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Fatalf("server certificate: %v %v", err, srv.ExtKeyUsage)
	}
	if code, _, errOut := runCLI(t, vars, "ca", "client", "iotpipe-bridge", "--out", dir); code != ExitOK {
		t.Fatalf("ca client: %d %s", code, errOut)
	}
	cl, err := certs.LoadCertFile(filepath.Join(dir, "iotpipe-bridge.crt"))
	if err != nil || cl.Subject.CommonName != "iotpipe-bridge" || cl.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("client certificate: %v %+v", err, cl)
	}
	if st, _ := os.Stat(filepath.Join(dir, "iotpipe-bridge.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode %v", st.Mode().Perm())
	}
	if code, _, errOut := runCLI(t, vars, "ca", "client"); code != ExitUsage || !strings.Contains(errOut, "common name") {
		t.Fatalf("ca client without a name: %d %q", code, errOut)
	}
	if code, out, _ := runCLI(t, vars, "ca", "client", "--help"); code != ExitOK || !strings.Contains(out, "iotpipe-bridge") {
		t.Fatalf("ca client --help: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, vars, "devices", "add", "--help"); code != ExitOK || !strings.Contains(out, "--attr") {
		t.Fatalf("devices add --help: %d %q", code, out)
	}
}

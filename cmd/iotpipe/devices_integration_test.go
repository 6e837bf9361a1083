//go:build integration

package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"crypto/rand"
	"crypto/x509/pkix"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

type cli struct {
	t    *testing.T
	vars map[string]string
}

func (c *cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code := Run(testenv.Context(c.t, time.Minute), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return c.vars[k] }}, args)
	c.t.Logf("iotpipe %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != ExitOK {
		c.t.Fatalf("iotpipe %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func TestDevicesCommands(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("pattern write devices/%u/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, vars: map[string]string{
		"IOTPIPE_PG_REGISTRY_DSN": dsn, "IOTPIPE_PG_SCHEMA": schema, "IOTPIPE_CA_DIR": caDir,
		"IOTPIPE_MQTT_ACL_FILE": acl,
	}}

	// Without --ca-dir: a usage error naming the setting.
	noCA := &cli{t: t, vars: map[string]string{"IOTPIPE_PG_REGISTRY_DSN": dsn, "IOTPIPE_PG_SCHEMA": schema}}
	if code, _, errOut := noCA.run("devices", "add", "x1"); code != ExitUsage || !strings.Contains(errOut, "IOTPIPE_CA_DIR") {
		t.Fatalf("no --ca-dir: exit %d %q", code, errOut)
	}
	c.ok("ca", "init")
	if st, err := os.Stat(filepath.Join(caDir, certs.CAKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st.Mode(), err)
	}
	if code, _, errOut := c.run("ca", "init"); code != ExitFailed || !strings.Contains(errOut, "already exists") {
		t.Fatalf("second ca init: exit %d %q", code, errOut)
	}

	out := filepath.Join(dir, "out")
	c.ok("devices", "add", "sensor-1", "--attr", "site=lyon", "--attr", "floor=2", "--group", "building-a", "--type", "th1", "--out", out)
	crt, err := certs.LoadCertFile(filepath.Join(out, "sensor-1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if crt.Subject.CommonName != "sensor-1" {
		t.Fatalf("CN %q", crt.Subject.CommonName)
	}
	if st, err := os.Stat(filepath.Join(out, "sensor-1.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("device key mode: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	// Again: refused, and the existing files are untouched.
	if code, _, errOut := c.run("devices", "add", "sensor-1", "--out", filepath.Join(dir, "other")); code != ExitFailed || !strings.Contains(errOut, "already registered") {
		t.Fatalf("second add: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "other", "sensor-1.key")); !os.IsNotExist(err) {
		t.Fatalf("a refused add left its key behind: %v", err)
	}
	if code, _, errOut := c.run("devices", "add", "bad/id"); code != ExitUsage || !strings.Contains(errOut, "invalid device id") {
		t.Fatalf("bad id: exit %d %q", code, errOut)
	}

	// From a CSR: no key written, the CSR's key certified.
	key, _ := certs.NewKey()
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "sensor-2"}}, key)
	csrPath := filepath.Join(dir, "sensor-2.csr")
	_ = os.WriteFile(csrPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644)
	c.ok("devices", "add", "sensor-2", "--csr", csrPath, "--attr", "site=paris", "--out", out)
	if _, err := os.Stat(filepath.Join(out, "sensor-2.key")); !os.IsNotExist(err) {
		t.Fatal("a key was written for a CSR")
	}
	crt2, _ := certs.LoadCertFile(filepath.Join(out, "sensor-2.crt"))
	if !key.PublicKey.Equal(crt2.PublicKey) {
		t.Fatal("CSR certificate does not certify the CSR's key")
	}

	// Import: a bad file is refused whole, with line numbers.
	bad := filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(bad, []byte("device_id,attributes,groups\nimp-1,site=lyon,building-a\nbad id,,\nimp-1,,\nimp-3,noequals,\n"), 0o644)
	code, _, errOut := c.run("devices", "import", bad, "--out", out)
	if code != ExitUsage || !strings.Contains(errOut, "line 3") || !strings.Contains(errOut, "line 4") || !strings.Contains(errOut, "line 5") {
		t.Fatalf("bad import: exit %d %q", code, errOut)
	}
	good := filepath.Join(dir, "good.csv")
	_ = os.WriteFile(good, []byte("device_id,display_name,type,attributes,groups\nimp-1,Pump 1,pump,site=lyon;floor=1,building-a;pumps\nimp-2,Pump 2,pump,site=lyon,pumps\n"), 0o644)
	c.ok("devices", "import", good, "--out", out)

	// Nested groups: building-a inside campus (set through SQL; the API
	// will manage groups).
	st, err := registry.Open(testenv.Context(t, time.Minute), dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := testenv.Context(t, time.Minute)
	if _, err := st.Pool().Exec(ctx, "INSERT INTO "+schema+".device_groups (group_id) VALUES ('campus'); UPDATE "+schema+".device_groups SET parent_id = 'campus' WHERE group_id = 'building-a'"); err != nil {
		t.Fatal(err)
	}
	ids := func(args ...string) []string {
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(c.ok(append([]string{"devices", "list", "--json"}, args...)...)), "\n") {
			if line == "" {
				continue
			}
			var d registry.Device
			if err := json.Unmarshal([]byte(line), &d); err != nil {
				t.Fatal(err)
			}
			got = append(got, d.ID)
		}
		return got
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "imp-1,imp-2,sensor-1,sensor-2"},
		{[]string{"--attr", "site=lyon"}, "imp-1,imp-2,sensor-1"},
		{[]string{"--attr", "site=lyon", "--attr", "floor=2"}, "sensor-1"},
		{[]string{"--group", "pumps"}, "imp-1,imp-2"},
		{[]string{"--group", "campus"}, "imp-1,sensor-1"},
	} {
		if got := strings.Join(ids(tc.args...), ","); got != tc.want {
			t.Errorf("list %v = %s, want %s", tc.args, got, tc.want)
		}
	}
	if out := c.ok("devices", "list"); !strings.Contains(out, "4 device(s)") {
		t.Errorf("list table: %q", out)
	}
	show := c.ok("devices", "show", "sensor-1")
	if !strings.Contains(show, certs.SerialHex(crt.SerialNumber)) || !strings.Contains(show, "building-a") {
		t.Errorf("show: %q", show)
	}

	// disable → ACL deny; enable → gone; revoke → CRL + deny; enable refused.
	c.ok("devices", "disable", "sensor-1")
	if b, _ := os.ReadFile(acl); !strings.Contains(string(b), "user sensor-1\ntopic deny #") || !strings.HasPrefix(string(b), "pattern write devices/%u/#") {
		t.Fatalf("ACL after disable:\n%s", b)
	}
	if got := strings.Join(ids("--status", "disabled"), ","); got != "sensor-1" {
		t.Fatalf("disabled: %s", got)
	}
	c.ok("devices", "enable", "sensor-1")
	if b, _ := os.ReadFile(acl); strings.Contains(string(b), "user sensor-1") {
		t.Fatalf("ACL after enable:\n%s", b)
	}
	c.ok("devices", "revoke", "sensor-2")
	b, _ := os.ReadFile(filepath.Join(caDir, certs.CRLFile))
	crl, err := certs.ParseCRL(b)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := certs.Load(caDir)
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(crt2.SerialNumber) != 0 {
		t.Fatalf("CRL: %+v", crl.RevokedCertificateEntries)
	}
	if b, _ := os.ReadFile(acl); !strings.Contains(string(b), "user sensor-2\ntopic deny #") {
		t.Fatalf("ACL after revoke:\n%s", b)
	}
	if code, _, errOut := c.run("devices", "enable", "sensor-2"); code != ExitFailed || !strings.Contains(errOut, "revoked") {
		t.Fatalf("enable revoked: exit %d %q", code, errOut)
	}
	if code, _, errOut := c.run("devices", "show", "nope"); code != ExitFailed || !strings.Contains(errOut, "no such device") {
		t.Fatalf("show unknown: exit %d %q", code, errOut)
	}
	// Rotation of a device: reissue, then retire the earlier certificate.
	rot := filepath.Join(dir, "rot")
	c.ok("devices", "reissue", "sensor-1", "--out", rot)
	newCrt, err := certs.LoadCertFile(filepath.Join(rot, "sensor-1.crt"))
	if err != nil || newCrt.SerialNumber.Cmp(crt.SerialNumber) == 0 {
		t.Fatalf("reissued certificate: %v", err)
	}
	if out := c.ok("devices", "revoke", "sensor-1", "--previous"); !strings.Contains(out, "revoked 1 earlier") {
		t.Fatalf("revoke --previous: %q", out)
	}
	b, _ = os.ReadFile(filepath.Join(caDir, certs.CRLFile))
	crl, _ = certs.ParseCRL(b)
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[certs.SerialHex(e.SerialNumber)] = true
	}
	if len(listed) != 2 || !listed[certs.SerialHex(crt.SerialNumber)] || listed[certs.SerialHex(newCrt.SerialNumber)] {
		t.Fatalf("CRL after revoke --previous: %v", listed)
	}
	if got := strings.Join(ids("--status", "active"), ","); !strings.Contains(got, "sensor-1") {
		t.Fatalf("sensor-1 is no longer active after revoke --previous: %s", got)
	}
	if b, _ := os.ReadFile(acl); strings.Contains(string(b), "user sensor-1") {
		t.Fatalf("revoke --previous denied the device in the ACL:\n%s", b)
	}
	if code, _, errOut := c.run("devices", "reissue", "sensor-2", "--out", rot); code != ExitFailed || !strings.Contains(errOut, "revoked") {
		t.Fatalf("reissue of a revoked device: exit %d %q", code, errOut)
	}

	// The reader role sees the registry, and may not write it.
	reader := env.PGReaderDSN
	if reader != "" {
		rp, err := registry.Open(ctx, reader, schema)
		if err != nil {
			t.Fatal(err)
		}
		defer rp.Close()
		if _, err := rp.List(ctx, registry.Filter{}); err != nil {
			t.Fatalf("reader SELECT: %v", err)
		}
		if _, err := rp.Pool().Exec(ctx, "UPDATE "+schema+".devices SET status = 'active'"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("reader UPDATE: %v, want permission denied", err)
		}
	}
}

// The bridge command stops on a broker certificate with another name,
// naming the setting, and on a CA file that is not the broker's.
func TestBridgeCommandRefusesBrokerName(t *testing.T) {
	p := testenv.StartPrivate(t, "mqtt")
	tl := p.MQTTTLS(t)
	env := p.Env
	raw, dlq := env.Topic(t, 1, nil), env.Topic(t, 1, nil)
	c := &cli{t: t, vars: map[string]string{
		"IOTPIPE_MQTT_URL": tl.URL, "IOTPIPE_MQTT_CA_FILE": tl.CAFile,
		"IOTPIPE_MQTT_CERT_FILE": tl.BridgeCertFile, "IOTPIPE_MQTT_KEY_FILE": tl.BridgeKeyFile,
		"IOTPIPE_MQTT_SERVER_NAME": "mqtt.example.com",
		"IOTPIPE_TOPIC_RAW":        raw, "IOTPIPE_TOPIC_DLQ": dlq,
		"IOTPIPE_MQTT_CLIENT_ID": testenv.Name(t, "bridge"), "IOTPIPE_HTTP_ADDR": "127.0.0.1:0",
	}}
	maps.Copy(c.vars, env.KafkaVars(t, testenv.Bridge))
	code, _, errOut := c.run("bridge")
	if code != ExitUsage || !strings.Contains(errOut, "--mqtt-server-name (IOTPIPE_MQTT_SERVER_NAME)") || !strings.Contains(errOut, "valid for localhost") {
		t.Fatalf("bridge with a wrong broker name: exit %d %q", code, errOut)
	}
	// A key that does not belong to the certificate: refused before connecting.
	c.vars["IOTPIPE_MQTT_SERVER_NAME"] = ""
	c.vars["IOTPIPE_MQTT_KEY_FILE"] = filepath.Join(filepath.Dir(tl.BridgeKeyFile), "server.key")
	code, _, errOut = c.run("bridge")
	if code != ExitUsage || !strings.Contains(errOut, "--mqtt-key-file (IOTPIPE_MQTT_KEY_FILE)") {
		t.Fatalf("bridge with a foreign key: exit %d %q", code, errOut)
	}
}

//go:build integration

package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

// iotpipe tokens and iotpipe devices shadow|config against a running API
// (HTTPS with a certificate of the project CA).
func TestDevicesShadowCommands(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	ctx := testenv.Context(t, 2*time.Minute)
	dir := t.TempDir()
	ca, err := certs.Init(dir, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss, key, _ := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	crt, k, err := certs.WriteKeyPair(dir, "server", certs.EncodeCert(iss.Cert.Raw), key)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	dk, _ := certs.NewKey()
	dc, _ := ca.IssueClient("cli-dev", &dk.PublicKey, time.Hour)
	if err := reg.Add(ctx, registry.NewDevice{ID: "cli-dev", Cert: dc.Cert}); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cfg := api.DefaultConfig()
	cfg.Listen, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.DSN, cfg.Schema = addr, crt, k, dsn, schema
	cfg.Relay.Disabled = true
	a, err := api.New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testenv.WaitPort(t, addr, 30*time.Second)

	c := &cli{t: t, vars: map[string]string{"IOTPIPE_PG_REGISTRY_DSN": dsn, "IOTPIPE_PG_SCHEMA": schema}}
	if code, _, errOut := c.run("tokens", "create", "--role", "boss"); code != ExitUsage || !strings.Contains(errOut, "--role (IOTPIPE_ROLE)") {
		t.Fatalf("bad role: exit %d: %s", code, errOut)
	}
	tok := strings.TrimSpace(c.ok("tokens", "create", "--role", "operator", "--name", "cli test"))
	c.vars["IOTPIPE_API_URL"], c.vars["IOTPIPE_API_TOKEN"], c.vars["IOTPIPE_API_CA_FILE"] = "https://"+addr, tok, dir+"/ca.crt"

	if out := c.ok("devices", "shadow", "set", "cli-dev", "--patch", `{"led":"on"}`); !strings.Contains(out, `"version": 1`) {
		t.Fatalf("shadow set: %s", out)
	}
	if out := c.ok("devices", "config", "set", "cli-dev", "--json", `{"rate":2}`); !strings.Contains(out, `"version": 2`) {
		t.Fatalf("config set: %s", out)
	}
	out := c.ok("devices", "shadow", "get", "cli-dev")
	if !strings.Contains(out, `"rate": 2`) || !strings.Contains(out, `"led": "on"`) {
		t.Fatalf("shadow get: %s", out)
	}
	if code, _, errOut := c.run("devices", "shadow", "set", "cli-dev", "--patch", `{"led":"off"}`, "--if-match", "1"); code != ExitFailed || !strings.Contains(errOut, "version_conflict") {
		t.Fatalf("stale --if-match: exit %d: %s", code, errOut)
	}
	if code, _, errOut := c.run("devices", "shadow", "set", "cli-dev", "--patch", `[1]`); code != ExitFailed || !strings.Contains(errOut, "malformed") {
		t.Fatalf("malformed patch: exit %d: %s", code, errOut)
	}
	list := c.ok("tokens", "list")
	id := strings.SplitN(tok, "_", 3)[1]
	if !strings.Contains(list, id) || !strings.Contains(list, "operator") {
		t.Fatalf("tokens list: %s", list)
	}
	c.ok("tokens", "revoke", id)
	if code, _, errOut := c.run("devices", "shadow", "get", "cli-dev"); code != ExitFailed || !strings.Contains(errOut, "unauthorized") {
		t.Fatalf("revoked token: exit %d: %s", code, errOut)
	}
}

//go:build integration

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

// The demo registers its fleet once, keeps current certificates on later
// runs, reissues a device whose files are gone, registers devices added to
// the fleet, and refuses a device the broker would refuse.
func TestDemoIdentitiesKeptReissuedRefused(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	ctx := testenv.Context(t, time.Minute)
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ca, err := certs.Init(caDir, "test CA", time.Hour*24*30)
	if err != nil {
		t.Fatal(err)
	}
	tls := &demoTLS{caDir: caDir, registryDSN: dsn, devicePrefix: "d-"}
	out := filepath.Join(dir, "devices")
	check := func(devices int, want identityCounts) {
		t.Helper()
		got, err := demoIdentities(ctx, tls, schema, devices, out)
		if err != nil || got != want {
			t.Fatalf("%d devices: %+v (%v), want %+v", devices, got, err, want)
		}
	}
	check(5, identityCounts{registered: 5})
	check(5, identityCounts{reused: 5})
	if err := os.Remove(filepath.Join(out, "d-000001.key")); err != nil {
		t.Fatal(err)
	}
	check(5, identityCounts{reissued: 1, reused: 4})
	check(7, identityCounts{registered: 2, reused: 5})

	s, err := registry.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dev, cs, err := s.Get(ctx, "d-000001")
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.LoadCertFile(filepath.Join(out, "d-000001.crt"))
	if err != nil || certs.SerialHex(c.SerialNumber) != dev.CertSerial || len(cs) != 2 || c.CheckSignatureFrom(ca.Cert) != nil {
		t.Fatalf("d-000001 after reissue: file serial %v, registry %s, %d certificates (%v)", c.SerialNumber, dev.CertSerial, len(cs), err)
	}
	all, err := s.List(ctx, registry.Filter{Group: demoGroup})
	if err != nil || len(all) != 7 || all[0].Attributes["source"] != "iotpipe-demo" {
		t.Fatalf("group %s: %d devices (%v)", demoGroup, len(all), err)
	}
	if _, err := s.SetStatus(ctx, "d-000002", registry.Disabled); err != nil {
		t.Fatal(err)
	}
	_, err = demoIdentities(ctx, tls, schema, 7, out)
	if err == nil || !strings.Contains(err.Error(), "d-000002 is disabled") || !strings.Contains(err.Error(), "iotpipe devices enable d-000002") {
		t.Fatalf("disabled device: %v", err)
	}
}

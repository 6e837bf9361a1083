//go:build integration

package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

// --require-registered: a registered, active device's readings reach
// telemetry.raw; an unknown device's go to the DLQ as unknown_device; a
// device added or disabled while the bridge runs is seen through the
// change notice (the periodic refresh is set to an hour, so only the
// notice can explain it), never through a query per message.
func TestBridgeRequireRegistered(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	ctx := testenv.Context(t, 2*time.Minute)
	st, err := registry.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ca, err := certs.New("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string) {
		t.Helper()
		key, _ := certs.NewKey()
		iss, err := ca.IssueClient(id, &key.PublicKey, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Add(ctx, registry.NewDevice{ID: id, Cert: iss.Cert}); err != nil {
			t.Fatal(err)
		}
	}
	known, unknown, later := testenv.Name(t, "k"), testenv.Name(t, "u"), testenv.Name(t, "l")
	add(known)

	s := newSetup(t, env)
	cfg := s.config(t, "")
	cfg.Registry = RegistryConfig{Require: true, DSN: dsn, Schema: schema, Refresh: time.Hour}
	view := watchKafka(t, env, s.raw, s.dlq)
	r := startBridge(t, cfg)
	dev := env.MQTTClient(t, env.MQTTUsername, env.MQTTPassword, nil)
	pub := func(id string, seq int) {
		t.Helper()
		if _, err := dev.Publish(ctx, &paho.Publish{Topic: s.prefix + "/" + id + "/telemetry", QoS: 1, Payload: reading(seq)}); err != nil {
			t.Fatal(err)
		}
	}
	inDLQ := func(id string) int {
		_, topics := view.devices()
		n := 0
		for _, tp := range topics {
			if tp == s.prefix+"/"+id+"/telemetry" {
				n++
			}
		}
		return n
	}
	pub(known, 1)
	pub(unknown, 1)
	view.waitFor(t, known, 1)
	testenv.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		if inDLQ(unknown) != 1 {
			return fmt.Errorf("the unknown device's reading is not in the DLQ")
		}
		return nil
	})
	if view.count(unknown) != 0 {
		t.Fatal("an unknown device's reading reached the raw topic")
	}
	reloads := r.b.active.Reloads.Load()

	// Registered while running: accepted once the notice is handled.
	start := time.Now()
	add(later)
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !r.b.active.Has(later) {
			return fmt.Errorf("the bridge has not seen %s yet", later)
		}
		return nil
	})
	t.Logf("a new device was accepted %s after it was registered (reloads %d → %d, refresh period 1h)",
		time.Since(start).Round(time.Millisecond), reloads, r.b.active.Reloads.Load())
	pub(later, 1)
	view.waitFor(t, later, 1)

	// Disabled while running: refused again.
	if _, err := st.SetStatus(ctx, known, registry.Disabled); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if r.b.active.Has(known) {
			return fmt.Errorf("the bridge still takes %s", known)
		}
		return nil
	})
	pub(known, 2)
	testenv.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		if inDLQ(known) != 1 {
			return fmt.Errorf("the disabled device's reading is not in the DLQ")
		}
		return nil
	})
	if view.has(known, 2) {
		t.Fatal("a disabled device's reading reached the raw topic")
	}
}

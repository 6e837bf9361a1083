//go:build integration

package devicesim

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// The fleet publishes every message once, in seq order per device, and
// counts exactly the PUBACKs it got.
func TestSimPublishesInOrder(t *testing.T) {
	env := testenv.Load(t)
	prefix := env.MQTTPrefix(t)
	var got, outOfOrder atomic.Int64
	sub := env.MQTTClient(t, env.MQTTUsername, env.MQTTPassword, func(pr paho.PublishReceived) (bool, error) {
		got.Add(1)
		return true, nil
	})
	ctx := testenv.Context(t, time.Minute)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: prefix + "/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	var ackMu sync.Mutex
	seqs := map[string]int64{}
	sim, err := New(func() Config {
		c := DefaultConfig()
		c.URL = env.MQTTURL
		c.Username = env.MQTTUsername
		c.Password = env.MQTTPassword
		c.Devices = 50
		c.DevicesPerConn = 20
		c.MessagesPerDevice = 100
		c.InvalidFraction = 0.05
		c.TopicTemplate = prefix + "/{device_id}/telemetry"
		c.OnAck = func(m *Message) {
			ackMu.Lock()
			defer ackMu.Unlock()
			if seqs[m.DeviceID] != m.Seq {
				outOfOrder.Add(1)
			}
			seqs[m.DeviceID] = m.Seq + 1
		}
		c.Rate = 0
		c.ValidKinds = AllValidKinds()
		return c
	}(), service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := sim.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := sim.Stats()
	t.Logf("stats %+v in %s", st, time.Since(start))
	if st.Acked != 5000 || st.Published != 5000 || st.Unconfirmed != 0 || outOfOrder.Load() != 0 {
		t.Fatalf("stats %+v, out of order acks %d", st, outOfOrder.Load())
	}
	testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if n := got.Load(); n != 5000 {
			return fmt.Errorf("subscriber got %d of 5000", n)
		}
		return nil
	})
}

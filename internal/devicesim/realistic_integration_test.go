//go:build integration

package devicesim

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// A realistic fleet with duplicates, out-of-order and late messages: the
// subscriber sees each modification as counted, duplicates are exact
// repeats of the device's previous message, and the event times are
// shifted by OutOfOrderBy or LateBy.
func TestSimImperfections(t *testing.T) {
	env := testenv.Load(t)
	prefix := env.MQTTPrefix(t)
	dec, err := schemas.NewDecoder(func() schemas.DecodeOptions {
		o := schemas.DefaultDecodeOptions()
		o.Topic = schemas.MustParseTopicTemplate(prefix + "/{device_id}/telemetry")
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got, dups, late, ooo, bad int
	last := map[string]string{} // device topic → previous payload
	seen := map[string]bool{}   // topic + seq
	sub := env.MQTTClient(t, env.MQTTUsername, env.MQTTPassword, func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		var r schemas.Reading
		if err := dec.Decode(p.Topic, p.Payload, time.Now(), &r); err != nil {
			mu.Lock()
			bad++
			mu.Unlock()
			return true, nil
		}
		mu.Lock()
		defer mu.Unlock()
		got++
		key := fmt.Sprintf("%s/%d", p.Topic, r.Seq)
		if seen[key] {
			dups++
			if last[p.Topic] != string(p.Payload) {
				t.Errorf("duplicate %s differs from the previous message %s", p.Payload, last[p.Topic])
			}
		}
		if !seen[key] { // a duplicate repeats the event time too: count it once
			switch age := time.Since(r.EventTime); {
			case age > 90*time.Second:
				late++
			case age > 2*time.Second && age < 10*time.Second:
				ooo++
			}
		}
		seen[key] = true
		last[p.Topic] = string(p.Payload)
		return true, nil
	})
	ctx := testenv.Context(t, time.Minute)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: prefix + "/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sim, err := New(func() Config {
		c := DefaultConfig()
		c.URL = env.MQTTURL
		c.Username = env.MQTTUsername
		c.Password = env.MQTTPassword
		c.Devices = 40
		c.MessagesPerDevice = 100
		c.TopicTemplate = prefix + "/{device_id}/telemetry"
		c.ValidKinds = []Kind{Realistic}
		c.DuplicateFraction = 0.05
		c.OutOfOrderFraction = 0.05
		c.LateFraction = 0.05
		c.Rate = 0
		return c
	}(), service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := sim.Stats()
	t.Logf("stats %+v", st)
	if st.Acked != 4000 || st.Duplicates < 100 || st.Late < 100 || st.OutOfOrder < 100 {
		t.Fatalf("stats %+v: want 4000 acked and about 200 of each imperfection", st)
	}
	testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if got != 4000 || bad != 0 {
			return fmt.Errorf("subscriber decoded %d of 4000 (%d did not decode)", got, bad)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if int64(dups) != st.Duplicates || int64(late) != st.Late || int64(ooo) != st.OutOfOrder {
		t.Fatalf("seen: duplicates %d, late %d, out of order %d; the fleet counted %+v", dups, late, ooo, st)
	}
}

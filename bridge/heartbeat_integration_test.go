//go:build integration

package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// A bridge under load writes heartbeats to every partition of the raw
// topic, and each keeps its promise: in its partition, no device record
// after a heartbeat H was received before H (the records of one bridge,
// so one clock). H only grows; the heartbeats are counted; the readings
// are all there, unaffected.
func TestBridgeHeartbeats(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	cfg.HeartbeatInterval = 100 * time.Millisecond
	r := startBridge(t, cfg)
	// A heartbeat in every partition before the load: under load (-race,
	// a busy machine) the bridge may rightly withhold heartbeats for the
	// whole burst (in-flight slots half taken), and the promise is checked
	// on the device records that come after one.
	testenv.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		if n := testutil.ToFloat64(r.b.hb.written); n < 6 {
			return fmt.Errorf("%v heartbeats written, want one per partition (6) before the load", n)
		}
		return nil
	})
	e := newExpect()
	s.fleet(t, env, func(c *devicesim.Config) {
		c.Devices = 30
		c.MessagesPerDevice = 40
		c.Rate = 10 // per device: 300 messages a second for 4 s
	}, e)
	g := s.readAll(t, env, e, 2*time.Minute)
	g.check(t, e, false)

	// Read raw again, heartbeats included, in partition order.
	cl := env.Kafka(t, kgo.ConsumeTopics(s.raw), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	type part struct {
		last      schemas.Heartbeat
		beats     int
		after     int // device records after the first heartbeat
		violation string
	}
	parts := map[int32]*part{}
	var dec schemas.RawDecoder
	var rd schemas.Reading
	total := 0
	deadline := time.Now().Add(time.Minute)
	for total < g.rawN {
		if time.Now().After(deadline) {
			t.Fatalf("raw read again: %d of %d device records after a minute", total, g.rawN)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(rec *kgo.Record) {
			p := parts[rec.Partition]
			if p == nil {
				p = &part{}
				parts[rec.Partition] = p
			}
			if schemas.IsHeartbeat(rec.Headers) {
				h, err := schemas.DecodeHeartbeat(rec.Value)
				if err != nil {
					t.Fatalf("heartbeat at %d/%d: %v", rec.Partition, rec.Offset, err)
				}
				if h.Bridge != cfg.MQTT.ClientID || !rec.Timestamp.Equal(h.Time.Truncate(time.Millisecond)) {
					t.Fatalf("heartbeat %+v, record timestamp %s; want bridge %s", h, rec.Timestamp, cfg.MQTT.ClientID)
				}
				if p.beats > 0 && !h.Time.After(p.last.Time) {
					t.Fatalf("partition %d: heartbeat %s after %s", rec.Partition, h.Time, p.last.Time)
				}
				p.last = h
				p.beats++
				return
			}
			if err := dec.Decode(rec.Value, &rd); err != nil {
				t.Fatalf("raw record: %v", err)
			}
			total++
			if p.beats > 0 {
				p.after++
				if rd.ReceivedTime.Before(p.last.Time) && p.violation == "" {
					p.violation = rd.ReceivedTime.Format(time.RFC3339Nano) + " after heartbeat " + p.last.Time.Format(time.RFC3339Nano)
				}
			}
		})
	}
	if len(parts) != 6 {
		t.Fatalf("records in %d of 6 partitions", len(parts))
	}
	checked := 0
	for n, p := range parts {
		if p.beats == 0 {
			t.Errorf("partition %d: no heartbeat", n)
		}
		if p.violation != "" {
			t.Errorf("partition %d: a device record received at %s", n, p.violation)
		}
		checked += p.after
	}
	if checked == 0 {
		t.Fatal("no device record came after a heartbeat: the promise was not checked")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	written := testutil.ToFloat64(r.b.hb.written)
	if written < 6 {
		t.Fatalf("iotpipe_bridge_heartbeats_total %v", written)
	}
	t.Logf("%d device records, %d of them after a heartbeat of their partition; %v heartbeats written, %v intervals withheld; raw as read by the tests: %d records",
		g.rawN, checked, written, testutil.ToFloat64(r.b.hb.withheld), g.rawN)
}

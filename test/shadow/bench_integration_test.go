//go:build integration

package shadow_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// latencies collects send→receive times by key.
type latencies struct {
	mu   sync.Mutex
	sent map[string]time.Time
	got  []time.Duration
}

func (l *latencies) send(k string) {
	l.mu.Lock()
	l.sent[k] = time.Now()
	l.mu.Unlock()
}

func (l *latencies) recv(k string) {
	now := time.Now()
	l.mu.Lock()
	if s, ok := l.sent[k]; ok {
		l.got = append(l.got, now.Sub(s))
		delete(l.sent, k)
	}
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.got)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// Benchmark (issue 16): REST PATCH → the device receives the delta, p50
// and p99 at 100 and 1,000 changes/s, next to a plain MQTT publish →
// subscriber round trip on the same broker in the same run (the API's
// identity publishing QoS 1, as mosquitto_pub -q 1 would). Goal: p99 ≤ 3×
// the round trip + 20 ms, and the rate achieved. The PATCH request's own
// latency is reported too (patch-req). One measurement per run
// (-benchtime 1x):
//
//	go test -tags integration -run '^$' -bench ShadowLatency -benchtime 1x ./test/shadow/
func BenchmarkShadowLatency(b *testing.B) {
	t := b
	s := newStack(t)
	// A fleet of 100 devices, each changed in turn (If-Match needs the
	// version its previous change returned): 1 change/s per device at
	// 100/s, 10 at 1,000/s. (With 20 devices, 50 changes/s per device, the
	// closed loop of each device measured one request's latency, not
	// what the API sustains.)
	const devices = 100
	devs := make([]*device, devices)
	lat := &latencies{sent: map[string]time.Time{}}
	base := &latencies{sent: map[string]time.Time{}}
	for i := range devs {
		devs[i] = s.newDevice(fmt.Sprintf("bench-%02d", i))
		d := devs[i]
		d.connect()
		d.c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
			switch pr.Packet.Topic {
			case "devices/" + d.id + "/shadow/update/delta":
				var m struct{ Version int64 }
				if json.Unmarshal(pr.Packet.Payload, &m) == nil {
					lat.recv(d.id + "/" + strconv.FormatInt(m.Version, 10))
				}
			case "devices/" + d.id + "/shadow/get/accepted":
				base.recv(string(pr.Packet.Payload))
			}
			return true, nil
		})
	}
	// The baseline publisher: a plain MQTT client with the API's identity.
	m := s.m
	ca, _ := certs.Load(m.CADir)
	iss, key, _ := ca.IssueClientKey("iotpipe-api", time.Hour)
	kp := tls.Certificate{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: key}
	u, _ := url.Parse(m.URL)
	pool, _ := certs.LoadPool(m.CAFile)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", u.Host, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, ServerName: u.Hostname()})
	if err != nil {
		t.Fatal(err)
	}
	// Many goroutines publish on it: paho writes a packet in pieces, so
	// the connection must serialise them as autopaho's own TLS
	// connections do (a bare tls.Conn interleaves them and the broker
	// drops the connection).
	var finished atomic.Bool
	pub := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn),
		OnClientError: func(err error) {
			if !finished.Load() { // not the connection's close at the end
				t.Logf("baseline publisher: client error: %v", err)
			}
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			t.Logf("baseline publisher: the broker disconnected it: reason %#x %s", d.ReasonCode, d.Properties.ReasonString)
		}})
	if _, err := pub.Connect(testenv.Context(t, 10*time.Second), &paho.Connect{ClientID: testenv.Name(t, "pub"), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		finished.Store(true)
		_ = pub.Disconnect(&paho.Disconnect{})
	}()

	for _, rate := range []int{100, 1000} {
		lat.got, base.got = nil, nil
		req := &latencies{} // the PATCH requests alone (answered by the API)
		dur := 5 * time.Second
		total := rate * int(dur/time.Second)
		per := total / devices
		interval := time.Duration(int64(time.Second) * devices / int64(rate))
		var wg sync.WaitGroup
		var mu sync.Mutex
		refused, pubErrs := 0, 0
		var pubErr error
		// Each device's current version, read before the clock starts: the
		// first request of each caller opens its HTTPS connection, and 100
		// handshakes at once are set-up, not the load being measured.
		versions := make([]int64, len(devs))
		for i, d := range devs {
			wg.Go(func() { versions[i] = int64(s.shadowVersion(d.id)) })
		}
		wg.Wait()
		start := time.Now()
		for i, d := range devs {
			wg.Go(func() {
				version := versions[i]
				next := start.Add(time.Duration(i) * interval / devices)
				for k := 0; k < per; k++ {
					time.Sleep(time.Until(next)) // pacing the load, not synchronisation
					next = next.Add(interval)
					key := d.id + "/" + strconv.FormatInt(version+1, 10)
					lat.send(key)
					rs := time.Now()
					code, _, _ := s.do("PATCH", "/v1/devices/"+d.id+"/shadow", api.RoleOperator,
						map[string]string{"If-Match": `"` + strconv.FormatInt(version, 10) + `"`, "Content-Type": "application/merge-patch+json"},
						fmt.Sprintf(`{"setpoint":%d}`, k))
					req.mu.Lock()
					req.got = append(req.got, time.Since(rs))
					req.mu.Unlock()
					if code != 200 {
						mu.Lock()
						refused++
						mu.Unlock()
						continue
					}
					version++
					// The baseline message of the same moment, to the same device.
					bk := fmt.Sprintf("%s-%d", d.id, k)
					base.send(bk)
					if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "devices/" + d.id + "/shadow/get/accepted", QoS: 1, Payload: []byte(bk)}); err != nil {
						mu.Lock()
						pubErrs++
						pubErr = err
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		sent := time.Since(start)
		testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
			lat.mu.Lock()
			defer lat.mu.Unlock()
			if len(lat.got) < total-refused {
				return fmt.Errorf("%d of %d deltas received", len(lat.got), total-refused)
			}
			base.mu.Lock()
			defer base.mu.Unlock()
			if len(base.got) < total-refused-pubErrs {
				return fmt.Errorf("%d of %d baseline messages received", len(base.got), total-refused-pubErrs)
			}
			return nil
		})
		achieved := float64(total) / sent.Seconds()
		p50, p99 := lat.pct(0.50), lat.pct(0.99)
		b50, b99 := base.pct(0.50), base.pct(0.99)
		r50, r99 := req.pct(0.50), req.pct(0.99)
		goal := 3*b99 + 20*time.Millisecond
		b.ReportMetric(float64(p50.Microseconds())/1000, fmt.Sprintf("p50-ms@%d/s", rate))
		b.ReportMetric(float64(p99.Microseconds())/1000, fmt.Sprintf("p99-ms@%d/s", rate))
		b.ReportMetric(float64(b99.Microseconds())/1000, fmt.Sprintf("mqtt-rt-p99-ms@%d/s", rate))
		b.ReportMetric(achieved, fmt.Sprintf("achieved/s@%d/s", rate))
		b.ReportMetric(float64(r99.Microseconds())/1000, fmt.Sprintf("patch-req-p99-ms@%d/s", rate))
		if pubErrs > 0 {
			t.Errorf("rate %d/s: %d baseline publishes failed, the last: %v", rate, pubErrs, pubErr)
		}
		t.Logf("rate %d/s (achieved %.0f/s, %d changes, %d refused): PATCH→delta p50 %s p99 %s; MQTT round trip p50 %s p99 %s; goal p99 ≤ %s: %v; the PATCH request alone p50 %s p99 %s",
			rate, achieved, total, refused, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond),
			b50.Round(10*time.Microsecond), b99.Round(10*time.Microsecond), goal.Round(10*time.Microsecond), p99 <= goal,
			r50.Round(10*time.Microsecond), r99.Round(10*time.Microsecond))
	}
}

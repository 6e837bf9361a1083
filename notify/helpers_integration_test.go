//go:build integration

package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/notify"
	"github.com/iotpipe/iotpipe/schemas"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// fixture is one test's topic, group, schema and webhook receivers.
type fixture struct {
	t      *testing.T
	env    *testenv.Env
	schema string
	topic  string
	dlq    string
	group  string
}

func newFixture(t *testing.T) *fixture {
	env := testenv.Load(t)
	schema, _ := registrytest.Schema(t, env)
	return &fixture{t: t, env: env, schema: schema, topic: env.Topic(t, 3, nil), dlq: env.Topic(t, 1, nil), group: env.Group(t)}
}

// start runs `iotpipe notify` as a child process with the services'
// settings (testenv) and the given extra variables.
func (f *fixture) start(extra ...string) *testenv.Proc {
	f.t.Helper()
	vars := append(f.env.Environ(),
		"IOTPIPE_PG_SCHEMA="+f.schema,
		"IOTPIPE_TOPIC_ALERTS="+f.topic,
		"IOTPIPE_TOPIC_DLQ="+f.dlq,
		"IOTPIPE_GROUP="+f.group,
		"IOTPIPE_INSTANCE_ID="+f.group, // static member: a restart after SIGKILL takes its partitions back at once
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0",
		"IOTPIPE_WEBHOOK_SECRET="+testSecret,
		"IOTPIPE_POLL_INTERVAL=50ms",
		"IOTPIPE_GROUP_WAIT=0s",
		"IOTPIPE_DIGEST=false",
		"IOTPIPE_RATE_LIMIT=0",
		"IOTPIPE_RETRY_MIN=200ms",
		"IOTPIPE_RETRY_MAX=2s",
		"IOTPIPE_LOG_LEVEL=debug",
	)
	// MQTT only where a test asks for it (IOTPIPE_MQTT_URL in extra).
	vars = append(vars, "IOTPIPE_MQTT_URL=")
	p := testenv.StartProc(f.t, "notify", append(vars, extra...), "notify")
	p.WaitLine("notify started", 30*time.Second)
	return p
}

// alerts makes n FIRING events (ids unique to the test) for recipients.
func (f *fixture) alerts(n int, recipients ...string) []*schemas.Alert {
	base := time.Now().UTC().Truncate(time.Millisecond)
	out := make([]*schemas.Alert, n)
	for i := range out {
		dev := fmt.Sprintf("dev-%04d", i)
		out[i] = &schemas.Alert{SchemaVersion: 1, EventID: fmt.Sprintf("%s-%04d", f.group, i), State: schemas.AlertFiring,
			RuleID: "hot", RuleVersion: 1, Kind: "reading", Severity: "critical", DeviceID: dev, Metric: "temp", Operator: ">",
			Value: 91, Threshold: 90, EventTime: base.Add(time.Duration(i) * time.Millisecond), Recipients: recipients,
			Message: dev + " temp 91 > 90"}
	}
	return out
}

func (f *fixture) produce(evs []*schemas.Alert) {
	f.t.Helper()
	cl := f.env.Kafka(f.t)
	var recs []*kgo.Record
	for _, a := range evs {
		b, err := schemas.EncodeAlert(a)
		if err != nil {
			f.t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: f.topic, Key: []byte(a.DeviceID), Value: b, Timestamp: a.EventTime})
	}
	if err := cl.ProduceSync(testenv.Context(f.t, 30*time.Second), recs...).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

// query runs a counting query on the test schema (%s is the schema).
func (f *fixture) count(q string, args ...any) int {
	f.t.Helper()
	var n int
	sql := fmt.Sprintf(q, pgx.Identifier{f.schema}.Sanitize())
	if err := f.env.PG(f.t).QueryRow(testenv.Context(f.t, 10*time.Second), sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// delivery is one request a receiver got.
type delivery struct {
	webhookID string
	eventIDs  []string
	status    int
	at        time.Time
}

// receiver is a webhook endpoint on a private port that verifies
// signatures and records every request; fail decides the answer.
type receiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	got  []delivery
	seen map[string]int // requests per webhook-id
	fail func(webhookID string, n int) int
	// delay holds each answer (to be killed mid-delivery).
	delay time.Duration
	srv   *http.Server
}

// listenPrivate listens on a free port of the brief's private range.
func listenPrivate(t *testing.T, addr string) net.Listener {
	t.Helper()
	if addr != "" {
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := net.Listen("tcp", addr)
			if err == nil {
				return l
			}
			if time.Now().After(deadline) {
				t.Fatalf("listen %s: %v", addr, err)
			}
			time.Sleep(50 * time.Millisecond) // the port is being released; poll
		}
	}
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(25000+rand.IntN(1000)))
		if err == nil {
			return l
		}
	}
	t.Fatal("no free port in 25000-25999")
	return nil
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, seen: map[string]int{}, fail: func(string, int) int { return 200 }}
	l := listenPrivate(t, "")
	r.addr = l.Addr().String()
	r.serve(l)
	return r
}

// reserved returns a receiver whose port is known but that does not
// listen yet (a receiver that is down); up starts it.
func reserved(t *testing.T) *receiver {
	r := &receiver{t: t, seen: map[string]int{}, fail: func(string, int) int { return 200 }}
	l := listenPrivate(t, "")
	r.addr = l.Addr().String()
	_ = l.Close()
	return r
}

func (r *receiver) up() { r.serve(listenPrivate(r.t, r.addr)) }

func (r *receiver) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

func (r *receiver) serve(l net.Listener) {
	key := []byte{}
	{
		// The key of testSecret, decoded as a receiver would.
		k, err := notify.DecodeKey(testSecret)
		if err != nil {
			r.t.Fatal(err)
		}
		key = k
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id, ts := req.Header.Get(notify.HeaderWebhookID), req.Header.Get(notify.HeaderWebhookTimestamp)
		sec, _ := strconv.ParseInt(ts, 10, 64)
		if want := notify.Sign(key, id, time.Unix(sec, 0), body); req.Header.Get(notify.HeaderWebhookSignature) != want || id == "" {
			r.t.Errorf("bad signature on %s: %q", id, req.Header.Get(notify.HeaderWebhookSignature))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var msg struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &msg); err != nil {
			r.t.Errorf("body %s: %v", body, err)
		}
		var ids []string
		if msg.Type == "alert.digest" {
			var d struct {
				Events []schemas.Alert `json:"events"`
			}
			_ = json.Unmarshal(msg.Data, &d)
			for _, e := range d.Events {
				ids = append(ids, e.EventID)
			}
		} else {
			var a schemas.Alert
			_ = json.Unmarshal(msg.Data, &a)
			ids = []string{a.EventID}
			if a.EventID != id {
				r.t.Errorf("webhook-id %s carries event %s", id, a.EventID)
			}
		}
		if r.delay > 0 {
			time.Sleep(r.delay) // a slow receiver, so that a kill lands mid-delivery
		}
		r.mu.Lock()
		r.seen[id]++
		code := r.fail(id, r.seen[id])
		r.got = append(r.got, delivery{webhookID: id, eventIDs: ids, status: code, at: time.Now()})
		r.mu.Unlock()
		w.WriteHeader(code)
	})}
	go func() { _ = r.srv.Serve(l) }()
	r.t.Cleanup(r.down)
}

func (r *receiver) url(path string) string { return "webhook:http://" + r.addr + path }

// delivered returns, per event id, how many successful requests carried
// it, and the number of successful requests.
func (r *receiver) delivered() (map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	ok := 0
	for _, d := range r.got {
		if d.status/100 != 2 {
			continue
		}
		ok++
		for _, id := range d.eventIDs {
			out[id]++
		}
	}
	return out, ok
}

func (r *receiver) requests() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

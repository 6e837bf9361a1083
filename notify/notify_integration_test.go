//go:build integration

package notify_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// waitAll polls until every event reached the receiver at least once.
func waitAll(t *testing.T, r *receiver, ids []string, timeout time.Duration) map[string]int {
	t.Helper()
	var got map[string]int
	testenv.Eventually(t, timeout, 100*time.Millisecond, func() error {
		got, _ = r.delivered()
		for _, id := range ids {
			if got[id] == 0 {
				return fmt.Errorf("event %s not delivered to %s (%d of %d events so far)", id, r.addr, len(got), len(ids))
			}
		}
		return nil
	})
	return got
}

// SIGKILL `iotpipe notify` twice while it delivers to two slow receivers:
// every (event, recipient) arrives, each request carries webhook-id = the
// event id (so repeats carry the same id), each is enqueued exactly once.
func TestNotifyCrashMidDelivery(t *testing.T) {
	f := newFixture(t)
	a, b := newReceiver(t), newReceiver(t)
	a.delay, b.delay = 40*time.Millisecond, 40*time.Millisecond
	evs := f.alerts(150, a.url("/hook"), b.url("/hook"))
	f.produce(evs[:100])
	p := f.start()
	for _, at := range []int{15, 60} {
		testenv.Eventually(t, 60*time.Second, 10*time.Millisecond, func() error {
			if n := len(a.requests()); n < at {
				return fmt.Errorf("%d requests so far", n)
			}
			return nil
		})
		p.KillWait(10 * time.Second)
		t.Logf("SIGKILL after %d requests to receiver a", len(a.requests()))
		if at == 15 {
			f.produce(evs[100:]) // more input while it is down
		}
		p = f.start()
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	for _, r := range []*receiver{a, b} {
		got := waitAll(t, r, ids, 2*time.Minute)
		repeats := 0
		for _, n := range got {
			repeats += n - 1
		}
		for _, d := range r.requests() {
			if len(d.eventIDs) != 1 || d.eventIDs[0] != d.webhookID {
				t.Errorf("request %s carries %v: want webhook-id = its one event id", d.webhookID, d.eventIDs)
			}
		}
		t.Logf("receiver %s: %d events, %d requests, %d repeats after the kills", r.addr, len(got), len(r.requests()), repeats)
	}
	if n := f.count(`SELECT count(*) FROM %s.notifications`); n != 2*len(evs) {
		t.Errorf("notifications: %d rows, want exactly %d (one per event and recipient)", n, 2*len(evs))
	}
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := f.count(`SELECT count(*) FROM %s.notifications WHERE state <> 'delivered'`); n != 0 {
			return fmt.Errorf("%d not marked delivered", n)
		}
		return nil
	})
	p.StopClean(20 * time.Second)
}

// A receiver answering 500 three times per message: each event is
// retried and delivered on the fourth attempt, and every attempt is
// recorded.
func TestNotifyRetriesAfter500(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t)
	r.fail = func(_ string, n int) int {
		if n <= 3 {
			return 500
		}
		return 204
	}
	evs := f.alerts(5, r.url("/hook"))
	f.produce(evs)
	p := f.start()
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	waitAll(t, r, ids, time.Minute)
	r.mu.Lock()
	seen := maps.Clone(r.seen)
	r.mu.Unlock()
	for _, id := range ids {
		if n := seen[id]; n != 4 {
			t.Errorf("event %s: %d requests, want 3 failures and 1 success", id, n)
		}
	}
	testenv.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		fails := f.count(`SELECT count(*) FROM %s.notification_attempts WHERE NOT ok AND error LIKE '%%HTTP 500%%'`)
		oks := f.count(`SELECT count(*) FROM %s.notification_attempts WHERE ok`)
		if fails != 15 || oks != 5 {
			return fmt.Errorf("attempts recorded: %d failed, %d ok; want 15 and 5", fails, oks)
		}
		return nil
	})
	p.StopClean(20 * time.Second)
}

// A receiver down for 60 s gets everything once it is back; meanwhile the
// attempts fail and are recorded, and nothing is given up.
func TestNotifyReceiverDown60s(t *testing.T) {
	f := newFixture(t)
	r := reserved(t)
	evs := f.alerts(20, r.url("/hook"))
	f.produce(evs)
	p := f.start("IOTPIPE_RETRY_MAX=5s", "IOTPIPE_MAX_ATTEMPTS=100")
	downSince := time.Now()
	testenv.Eventually(t, 2*time.Minute, time.Second, func() error {
		if d := time.Since(downSince); d < 60*time.Second {
			return fmt.Errorf("receiver down for %s of 60s", d.Truncate(time.Second))
		}
		return nil
	})
	failed := f.count(`SELECT count(*) FROM %s.notification_attempts WHERE NOT ok`)
	if failed < 20 {
		t.Fatalf("%d failed attempts recorded while the receiver was down, want at least one per event", failed)
	}
	if n := f.count(`SELECT count(*) FROM %s.notifications WHERE state = 'failed'`); n != 0 {
		t.Fatalf("%d notifications given up while the receiver was down", n)
	}
	back := time.Now()
	r.up()
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	waitAll(t, r, ids, time.Minute)
	t.Logf("receiver down 60s (%d failed attempts); all %d events delivered %s after it came back", failed, len(ids), time.Since(back).Truncate(time.Millisecond))
	p.StopClean(20 * time.Second)
}

// 1,000 crossings in 10 s for two recipients: each recipient gets every
// event, in at most --rate-limit messages (digests).
func TestNotifyStormRateLimit(t *testing.T) {
	f := newFixture(t)
	a, b := newReceiver(t), newReceiver(t)
	const limit = 5
	evs := f.alerts(1000, a.url("/hook"), b.url("/hook"))
	p := f.start("IOTPIPE_DIGEST=true", "IOTPIPE_GROUP_WAIT=3s", fmt.Sprintf("IOTPIPE_RATE_LIMIT=%d", limit), "IOTPIPE_RATE_PERIOD=10m")
	start := time.Now()
	for i := range 10 { // 100 crossings every second for 10 s
		f.produce(evs[i*100 : (i+1)*100])
		next := start.Add(time.Duration(i+1) * time.Second)
		testenv.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			if time.Now().Before(next) {
				return fmt.Errorf("pacing")
			}
			return nil
		})
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	for _, r := range []*receiver{a, b} {
		waitAll(t, r, ids, 2*time.Minute)
		_, msgs := r.delivered()
		if msgs > limit {
			t.Errorf("receiver %s got %d messages for 1000 crossings, want at most %d", r.addr, msgs, limit)
		}
		t.Logf("receiver %s: 1000 events in %d messages", r.addr, msgs)
	}
	p.StopClean(20 * time.Second)
}

// With no grouping wait, the per-recipient rate limit is what bounds the
// messages: 300 crossings over 3 s reach each recipient in full, and no
// --rate-period window holds more than --rate-limit messages.
func TestNotifyRateLimitBinds(t *testing.T) {
	f := newFixture(t)
	a, b := newReceiver(t), newReceiver(t)
	const limit, period = 2, 6 * time.Second
	evs := f.alerts(300, a.url("/hook"), b.url("/hook"))
	p := f.start("IOTPIPE_DIGEST=true", "IOTPIPE_GROUP_WAIT=0s", fmt.Sprintf("IOTPIPE_RATE_LIMIT=%d", limit), "IOTPIPE_RATE_PERIOD="+period.String())
	start := time.Now()
	for i := range 6 {
		f.produce(evs[i*50 : (i+1)*50])
		next := start.Add(time.Duration(i+1) * 500 * time.Millisecond)
		testenv.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			if time.Now().Before(next) {
				return fmt.Errorf("pacing")
			}
			return nil
		})
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	for _, r := range []*receiver{a, b} {
		waitAll(t, r, ids, time.Minute)
		reqs := r.requests()
		for i := range reqs {
			// The receiver's clock sees the sends a little apart from the
			// sender's; allow no more than the limit in any window of
			// period minus 200 ms.
			tight := 0
			for j := i; j < len(reqs) && reqs[j].at.Sub(reqs[i].at) < period-200*time.Millisecond; j++ {
				tight++
			}
			if tight > limit {
				t.Errorf("receiver %s: %d messages within %s from message %d, limit %d per %s", r.addr, tight, period, i, limit, period)
			}
		}
		t.Logf("receiver %s: 300 events in %d messages over %s", r.addr, len(reqs), reqs[len(reqs)-1].at.Sub(reqs[0].at).Truncate(time.Millisecond))
	}
	p.StopClean(20 * time.Second)
}

// A record that is not an alert goes to the DLQ with reason
// invalid_record and its origin; the events around it are delivered.
func TestNotifyBadRecordToDLQ(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t)
	evs := f.alerts(2, r.url("/hook"))
	f.produce(evs[:1])
	cl := f.env.Kafka(t)
	if err := cl.ProduceSync(testenv.Context(t, 10*time.Second), &kgo.Record{Topic: f.topic, Key: []byte("x"), Value: []byte(`{"schema_version":1,"state":"MAYBE"}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	f.produce(evs[1:])
	p := f.start()
	waitAll(t, r, []string{evs[0].EventID, evs[1].EventID}, time.Minute)
	rd := f.env.Kafka(t, kgo.ConsumeTopics(f.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx := testenv.Context(t, 30*time.Second)
	fs := rd.PollRecords(ctx, 10)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(recs))
	}
	d, err := schemas.ParseDeadLetter(recs[0].Key, recs[0].Value, recs[0].Headers)
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != schemas.ReasonInvalidRecord || d.Stage != "notify" || d.SourceTopic != f.topic || string(d.Value) != `{"schema_version":1,"state":"MAYBE"}` {
		t.Errorf("dead letter %+v", d)
	}
	t.Logf("dead letter: reason %s, error %q", d.Reason, d.Error)
	p.StopClean(20 * time.Second)
}

// Grouping (--group-wait 2s, digests): an alert to a recipient that got no
// message lately goes out at once and alone; the 10 that follow it within
// the wait go out together as one digest, no earlier than the wait after
// they were enqueued.
func TestNotifyGroupWait(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t)
	evs := f.alerts(11, r.url("/hook"))
	p := f.start("IOTPIPE_DIGEST=true", "IOTPIPE_GROUP_WAIT=2s", "IOTPIPE_RATE_LIMIT=0")
	start := time.Now()
	f.produce(evs[:1])
	waitAll(t, r, []string{evs[0].EventID}, time.Minute)
	first := r.requests()
	if len(first) != 1 || first[0].webhookID != evs[0].EventID || len(first[0].eventIDs) != 1 {
		t.Fatalf("first alert: %d requests %+v, want one message with the event alone", len(first), first)
	}
	t.Logf("a lone alert reached its recipient %s after it was produced (group wait 2s)", first[0].at.Sub(start).Round(time.Millisecond))

	burst := time.Now()
	f.produce(evs[1:])
	ids := make([]string, 10)
	for i, e := range evs[1:] {
		ids[i] = e.EventID
	}
	waitAll(t, r, ids, time.Minute)
	reqs := r.requests()
	if len(reqs) != 2 || len(reqs[1].eventIDs) != 10 || !strings.HasPrefix(reqs[1].webhookID, "d-") {
		t.Fatalf("the 10 after it: %d requests, want one digest of 10 (%+v)", len(reqs)-1, reqs[1:])
	}
	if d := reqs[1].at.Sub(burst); d < 1500*time.Millisecond {
		t.Fatalf("the digest went out %s after its events were produced, before the 2s group wait", d)
	}
	p.StopClean(20 * time.Second)
}

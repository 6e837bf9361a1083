package bridge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBrokerStats(t *testing.T) {
	var logs bytes.Buffer
	s := newBrokerStats(slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	if v := testutil.ToFloat64(s.dropped); v != -1 {
		t.Fatalf("before any report: %v, want -1 (unknown)", v)
	}
	s.subscribed()
	if v := testutil.ToFloat64(s.dropped); v != 0 {
		t.Fatalf("subscribed, nothing reported: %v, want 0", v)
	}
	s.handle(sysStored, []byte("1234"))
	s.handle(sysDropped, []byte("not a number"))
	s.handle("$SYS/broker/uptime", []byte("42 seconds"))
	if v := testutil.ToFloat64(s.dropped); v != 0 || logs.Len() != 0 {
		t.Fatalf("garbage and other topics: dropped %v, logs %q", v, logs.String())
	}
	if v := testutil.ToFloat64(s.stored); v != 1234 {
		t.Fatalf("stored = %v, want 1234", v)
	}
	s.handle(sysDropped, []byte("40"))
	s.handle(sysDropped, []byte("40")) // the same figure again: no new error
	s.handle(sysDropped, []byte("55\n"))
	if v := testutil.ToFloat64(s.dropped); v != 55 {
		t.Fatalf("dropped = %v, want 55", v)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 2 {
		t.Fatalf("%d error lines, want 2 (one per increase):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "since_last_report=15") {
		t.Fatalf("the second error does not say how many were new:\n%s", logs.String())
	}
	s.handle(sysDropped, []byte("3")) // the broker restarted
	if !strings.Contains(logs.String(), "broker restarted") || strings.Count(logs.String(), "level=ERROR") != 3 {
		t.Fatalf("after a restart (55 → 3): a notice and a new error for the 3 new drops expected:\n%s", logs.String())
	}
}

package notify

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/schemas"
)

// The published Standard Webhooks test vector (the reference library's
// TestWebhookSign).
func TestSignVector(t *testing.T) {
	key, err := decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func alert(id, dev string, st schemas.AlertState) *schemas.Alert {
	return &schemas.Alert{SchemaVersion: 1, EventID: id, State: st, RuleID: "hot", RuleVersion: 1, Kind: "reading", Severity: "critical",
		DeviceID: dev, Metric: "temp", Value: 91, Threshold: 90, EventTime: time.Unix(100, 0), Message: dev + " hot"}
}

func TestMessages(t *testing.T) {
	m := single(alert("e1", "d1", schemas.AlertFiring))
	if m.ID != "e1" || m.Priority != 5 || !strings.Contains(m.Title, "CRITICAL") {
		t.Fatalf("single: %+v", m)
	}
	var body struct {
		Type string         `json:"type"`
		Data *schemas.Alert `json:"data"`
	}
	if err := json.Unmarshal(m.JSON, &body); err != nil || body.Type != "alert.firing" || body.Data.EventID != "e1" {
		t.Fatalf("single body %s: %v", m.JSON, err)
	}
	var evs []*schemas.Alert
	for i := range 12 {
		evs = append(evs, alert("e"+string(rune('a'+i)), "dev"+string(rune('a'+i)), schemas.AlertFiring))
	}
	d := digest(evs)
	if !strings.Contains(d.Title, "12 devices over threshold") || len(d.EventIDs) != 12 || !strings.HasPrefix(d.ID, "d-") {
		t.Fatalf("digest: %q %d %s", d.Title, len(d.EventIDs), d.ID)
	}
	// The id depends on the set of events, not their order.
	rev := append([]*schemas.Alert(nil), evs...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if digest(rev).ID != d.ID {
		t.Error("digest id depends on order")
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.WebhookSecret = "whsec_???"
	c.RetryMax = time.Millisecond
	c.SMTPAddr = "nohost"
	c.MaxAttempts = 0
	err := c.Validate()
	for _, f := range []string{"WebhookSecret", "RetryMax", "SMTPAddr", "MaxAttempts"} {
		found := false
		for _, e := range flatten(err) {
			var fe *config.FieldError
			if errors.As(e, &fe) && fe.Field == f {
				found = true
			}
		}
		if !found {
			t.Errorf("no error for %s in %v", f, err)
		}
	}
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

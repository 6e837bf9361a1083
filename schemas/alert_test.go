package schemas

import (
	"errors"
	"os"
	"testing"
	"time"
)

// The golden alert records decode, and encoding them again gives the same
// bytes.
func TestAlertGolden(t *testing.T) {
	for _, f := range []string{"testdata/records/alert-firing.json", "testdata/records/alert-resolved.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = trimNewline(b)
		a, err := DecodeAlert(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out, err := EncodeAlert(a)
		if err != nil {
			t.Fatalf("%s: encode: %v", f, err)
		}
		if string(out) != string(b) {
			t.Errorf("%s: round trip\n got %s\nwant %s", f, out, b)
		}
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func TestAlertRejects(t *testing.T) {
	good := func() Alert {
		return Alert{SchemaVersion: 1, EventID: "e1", State: AlertFiring, RuleID: "r", RuleVersion: 1, Kind: "reading",
			Severity: "warning", DeviceID: "d1", Metric: "temp", Value: 1, Threshold: 0, EventTime: time.Unix(1, 0)}
	}
	for name, mut := range map[string]func(*Alert){
		"version":        func(a *Alert) { a.SchemaVersion = 2 },
		"no event id":    func(a *Alert) { a.EventID = "" },
		"state":          func(a *Alert) { a.State = "PENDING" },
		"device":         func(a *Alert) { a.DeviceID = "" },
		"kind":           func(a *Alert) { a.Kind = "x" },
		"metric":         func(a *Alert) { a.Metric = "" },
		"no time":        func(a *Alert) { a.EventTime = time.Time{} },
		"resolved alone": func(a *Alert) { a.State = AlertResolved },
	} {
		a := good()
		mut(&a)
		_, err := EncodeAlert(&a)
		var re *RejectError
		if !errors.As(err, &re) || re.Reason != ReasonInvalidRecord {
			t.Errorf("%s: got %v, want an invalid_record RejectError", name, err)
		}
	}
	a := good()
	if _, err := EncodeAlert(&a); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAlert([]byte(`{"schema_version":1}`)); err == nil {
		t.Error("DecodeAlert accepted an incomplete record")
	}
}

package schemas

import (
	"errors"
	"strings"
	"testing"
)

// An activity record written before seq_resets existed still decodes
// (seq_resets 0), and a negative seq_resets is rejected.
func TestActivityWithoutSeqResets(t *testing.T) {
	old := []byte(`{"schema_version":1,"kind":"activity","device_id":"d1","window_start_us":1795788000000000,"window_end_us":1795788060000000,"messages":2,"seq_gaps":0,"late":0,"duplicates":0,"first_seen_us":1795788001000000,"last_seen_us":1795788002000000,"revision":1,"emitted_at_us":1795788070000000}`)
	var rec MetricsRecord
	if err := DecodeMetricsRecord(old, &rec); err != nil {
		t.Fatalf("record without seq_resets: %v", err)
	}
	if rec.Kind != KindActivity || rec.Activity.SeqResets != 0 || rec.Activity.Messages != 2 {
		t.Fatalf("decoded %+v", rec)
	}
	a := rec.Activity
	a.SeqResets = 3
	if err := DecodeMetricsRecord(AppendActivity(nil, &a), &rec); err != nil || rec.Activity.SeqResets != 3 {
		t.Fatalf("round trip: %v, %+v", err, rec.Activity)
	}
	a.SeqResets = -1
	if err := DecodeMetricsRecord(AppendActivity(nil, &a), &rec); err == nil {
		t.Fatal("negative seq_resets accepted")
	}
}

// ignored_fields was added within version 1: a record without it (as every
// processor before it wrote) decodes with IgnoredFields 0; it is written
// only when not 0, round-trips, and a negative or non-integer value is
// rejected.
func TestActivityIgnoredFields(t *testing.T) {
	old := []byte(`{"schema_version":1,"kind":"activity","device_id":"d1","window_start_us":1795788000000000,"window_end_us":1795788060000000,"messages":2,"seq_gaps":0,"seq_resets":0,"late":0,"duplicates":1,"first_seen_us":1795788001000000,"last_seen_us":1795788002000000,"revision":1,"emitted_at_us":1795788070000000}`)
	var rec MetricsRecord
	if err := DecodeMetricsRecord(old, &rec); err != nil {
		t.Fatalf("record without ignored_fields: %v", err)
	}
	if rec.Activity.IgnoredFields != 0 || rec.Activity.Duplicates != 1 {
		t.Fatalf("decoded %+v", rec.Activity)
	}
	a := rec.Activity
	if enc := AppendActivity(nil, &a); string(enc) != string(old) {
		t.Fatalf("IgnoredFields 0 changed the encoding:\n%s\nwant\n%s", enc, old)
	}
	a.IgnoredFields = 5
	enc := AppendActivity(nil, &a)
	if !strings.Contains(string(enc), `"duplicates":1,"ignored_fields":5,`) {
		t.Fatalf("encoding %s", enc)
	}
	// A reused decoder does not carry a previous record's count over.
	var d MetricsDecoder
	if err := d.Decode(enc, &rec); err != nil || rec.Activity.IgnoredFields != 5 {
		t.Fatalf("round trip: %v, %+v", err, rec.Activity)
	}
	if err := d.Decode(old, &rec); err != nil || rec.Activity.IgnoredFields != 0 {
		t.Fatalf("after a record with ignored_fields: %v, %+v", err, rec.Activity)
	}
	for _, bad := range []string{`-1`, `1.5`, `"3"`} {
		b := strings.Replace(string(enc), `"ignored_fields":5`, `"ignored_fields":`+bad, 1)
		err := DecodeMetricsRecord([]byte(b), &rec)
		var re *RejectError
		if !errors.As(err, &re) || re.Reason != ReasonInvalidRecord {
			t.Errorf("ignored_fields %s: err %v, want an invalid_record rejection", bad, err)
		}
	}
}

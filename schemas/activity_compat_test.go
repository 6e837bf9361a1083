package schemas

import "testing"

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

package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// AlertSchemaVersion is the version of the telemetry.alerts record.
const AlertSchemaVersion = 1

// SchemaFileAlert is the JSON Schema of the telemetry.alerts v1 record.
const SchemaFileAlert = "telemetry-alerts.v1.schema.json"

// AlertState is the transition an alert event reports.
type AlertState string

// Alert states on the wire.
const (
	AlertFiring   AlertState = "FIRING"
	AlertResolved AlertState = "RESOLVED"
)

// Alert is one record of telemetry.alerts: a rule's series (rule, device,
// metric) went from OK to FIRING or from FIRING back to OK. Kafka key =
// device id, record timestamp = EventTime. The same crossing always carries
// the same EventID (derived from the rule, the series and the event time of
// the reading that caused it), so consumers drop repeats by EventID.
type Alert struct {
	SchemaVersion int        `json:"schema_version"`
	EventID       string     `json:"event_id"`
	State         AlertState `json:"state"`
	RuleID        string     `json:"rule_id"`
	RuleVersion   int64      `json:"rule_version"`
	// Kind is the rule's kind: reading, window or no_data.
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	DeviceID string `json:"device_id"`
	// Metric is empty for no_data rules; Statistic is set for window rules.
	Metric    string `json:"metric,omitempty"`
	Statistic string `json:"statistic,omitempty"`
	Operator  string `json:"operator,omitempty"`
	// Value is the value that caused the transition (0 for no_data).
	Value float64 `json:"value"`
	// Threshold is the trigger threshold for FIRING, the clear threshold
	// for RESOLVED (0 for no_data).
	Threshold float64 `json:"threshold"`
	// EventTime is the event time of the reading (window end, or the
	// silence deadline) that caused the transition.
	EventTime time.Time `json:"event_time"`
	// FiredEventID, on RESOLVED, is the EventID of the FIRING it closes.
	FiredEventID string `json:"fired_event_id,omitempty"`
	// Recipients are the rule's recipients when the event was made
	// (webhook:<url>, ntfy:<topic>, email:<address>, mqtt:<topic>).
	Recipients []string `json:"recipients"`
	// Message is a one-line human summary.
	Message string `json:"message"`
}

// Validate reports the first thing that makes a an invalid record.
func (a *Alert) Validate() error {
	switch {
	case a.SchemaVersion != AlertSchemaVersion:
		return invalidRecord("unsupported schema_version %d: this build reads only version %d", a.SchemaVersion, AlertSchemaVersion)
	case a.EventID == "" || len(a.EventID) > 128:
		return invalidRecord("event_id must be 1-128 bytes")
	case a.State != AlertFiring && a.State != AlertResolved:
		return invalidRecord("state %s is neither FIRING nor RESOLVED", quote(string(a.State)))
	case !ValidDeviceID(a.RuleID):
		return invalidRecord("rule_id %s is not a valid id", quote(a.RuleID))
	case !ValidDeviceID(a.DeviceID):
		return invalidRecord("device_id %s is not a valid device id", quote(a.DeviceID))
	case a.Kind != "reading" && a.Kind != "window" && a.Kind != "no_data":
		return invalidRecord("kind %s is not reading, window or no_data", quote(a.Kind))
	case a.Kind != "no_data" && !ValidName(a.Metric):
		return invalidRecord("metric %s is not a valid measurement name", quote(a.Metric))
	case math.IsNaN(a.Value) || math.IsInf(a.Value, 0) || math.IsNaN(a.Threshold) || math.IsInf(a.Threshold, 0):
		return invalidRecord("value and threshold must be finite")
	case a.EventTime.IsZero():
		return invalidRecord("missing event_time")
	case a.State == AlertResolved && a.FiredEventID == "":
		return invalidRecord("a RESOLVED event needs fired_event_id")
	}
	return nil
}

// EncodeAlert validates a and returns its JSON encoding, with the event
// time in UTC.
func EncodeAlert(a *Alert) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	c := *a
	c.EventTime = c.EventTime.UTC()
	if c.Recipients == nil {
		c.Recipients = []string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("encode alert %s: %w", a.EventID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeAlert decodes and validates one telemetry.alerts record. Errors are
// *RejectError with reason invalid_record.
func DecodeAlert(b []byte) (*Alert, error) {
	var a Alert
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&a); err != nil {
		return nil, invalidRecord("alert record: %v", err)
	}
	if d.More() {
		return nil, invalidRecord("alert record: trailing data")
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

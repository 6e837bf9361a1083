package schemas

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compileSchemas compiles every embedded schema, asserting formats and
// content encodings.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	names, err := fs.Glob(JSONSchemas(), "*.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{SchemaFileDevicePayload, SchemaFileAlert, SchemaFileDLQ, SchemaFileMetrics, SchemaFileRaw}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("embedded schemas %v, want %v", names, want)
	}
	ids := map[string]string{}
	for _, name := range names {
		b, ok := JSONSchema(name)
		if !ok {
			t.Fatalf("JSONSchema(%q) not found", name)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			t.Fatalf("%s has no $id", name)
		}
		if err := c.AddResource(id, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ids[name] = id
	}
	out := map[string]*jsonschema.Schema{}
	for name, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func validateJSON(s *jsonschema.Schema, b []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

// schemaRejected lists payload cases that the device payload schema must
// reject too, not only the decoder.
var schemaRejected = []string{
	"reject_missing_timestamp", "reject_null_timestamp", "reject_timestamp_not_rfc3339",
	"reject_timestamp_no_zone", "reject_timestamp_impossible_date", "reject_timestamp_numeric_string",
	"reject_timestamp_negative", "reject_timestamp_too_large", "reject_timestamp_bool",
	"reject_empty_metrics_object", "reject_metrics_not_object", "reject_metrics_string_value",
	"reject_metrics_bool_value", "reject_metrics_null_value", "reject_nan_string",
	"reject_negative_infinity_string", "reject_too_many_measurements", "reject_control_char_in_name",
	"reject_seq_negative", "reject_seq_fraction", "reject_seq_string", "reject_seq_overflow",
	"reject_tag_number_value", "reject_tags_array", "reject_tag_value_too_long",
	"reject_not_an_object", "reject_bare_number",
}

func TestJSONSchemas(t *testing.T) {
	schemas := compileSchemas(t)
	payload, raw := schemas[SchemaFileDevicePayload], schemas[SchemaFileRaw]
	mustReject := map[string]bool{}
	for _, name := range schemaRejected {
		mustReject[name] = true
	}

	// Device payload goldens, and the decoder's encodings of them.
	seen := 0
	for _, c := range loadPayloadCases(t) {
		switch {
		case strings.HasPrefix(c.name, "ok_"):
			seen++
			// The schema describes the default settings; these two
			// accept values it does not allow.
			if c.opts.AcceptBools || c.opts.NumericStrings {
				// no payload check
			} else if err := validateJSON(payload, c.payload); err != nil {
				t.Errorf("%s: accepted payload fails %s: %v", c.name, SchemaFileDevicePayload, err)
			}
			want, err := os.ReadFile(filepath.Join(c.dir, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := validateJSON(raw, want); err != nil {
				t.Errorf("%s: expected.json fails %s: %v", c.name, SchemaFileRaw, err)
			}
		case mustReject[c.name]:
			seen++
			delete(mustReject, c.name)
			if err := validateJSON(payload, c.payload); err == nil {
				t.Errorf("%s: rejected payload passes %s", c.name, SchemaFileDevicePayload)
			}
		}
	}
	for name := range mustReject {
		t.Errorf("schemaRejected names missing case %s", name)
	}

	// Record goldens.
	files, err := filepath.Glob("testdata/records/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no record goldens: %v", err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		var s *jsonschema.Schema
		switch {
		case strings.HasPrefix(base, "raw"):
			s = raw
		case strings.HasPrefix(base, "metric"), strings.HasPrefix(base, "activity"):
			s = schemas[SchemaFileMetrics]
		case strings.HasPrefix(base, "dlq"):
			s = schemas[SchemaFileDLQ]
		case strings.HasPrefix(base, "alert"):
			s = schemas[SchemaFileAlert]
		default:
			t.Fatalf("no schema for %s", f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(s, b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	// Encoder output, straight from the encoders.
	for name, r := range goldenRaw() {
		if err := validateJSON(raw, AppendRaw(nil, r)); err != nil {
			t.Errorf("AppendRaw(%s): %v", name, err)
		}
	}
	if err := validateJSON(schemas[SchemaFileMetrics], AppendMetric(nil, goldenMetric())); err != nil {
		t.Errorf("AppendMetric: %v", err)
	}
	for name, a := range goldenActivity() {
		if err := validateJSON(schemas[SchemaFileMetrics], AppendActivity(nil, a)); err != nil {
			t.Errorf("AppendActivity(%s): %v", name, err)
		}
	}
	for name, d := range goldenDeadLetters() {
		b, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(schemas[SchemaFileDLQ], b); err != nil {
			t.Errorf("DeadLetter(%s).MarshalJSON: %v", name, err)
		}
	}

	// The schemas are not vacuous.
	for name, tc := range map[string]struct {
		schema string
		doc    string
	}{
		"raw v2":            {SchemaFileRaw, strings.Replace(string(AppendRaw(nil, goldenRaw()["raw.json"])), `"schema_version":1`, `"schema_version":2`, 1)},
		"raw no meas":       {SchemaFileRaw, `{"schema_version":1,"device_id":"d","event_time_us":1,"received_time_us":1,"measurements":{}}`},
		"metric count 0":    {SchemaFileMetrics, strings.Replace(string(AppendMetric(nil, goldenMetric())), `"count":4`, `"count":0`, 1)},
		"metric kind wrong": {SchemaFileMetrics, strings.Replace(string(AppendMetric(nil, goldenMetric())), `"kind":"metric"`, `"kind":"activity"`, 1)},
		"dlq no reason":     {SchemaFileDLQ, `{"headers":{"error":"","stage":"bridge","time":"2026-11-27T14:00:00Z"},"value":""}`},
		"dlq bad base64":    {SchemaFileDLQ, `{"headers":{"reason":"late","error":"","stage":"bridge","time":"2026-11-27T14:00:00Z"},"value":"%%%"}`},
	} {
		if err := validateJSON(schemas[tc.schema], []byte(tc.doc)); err == nil {
			t.Errorf("%s: %s accepts %s", name, tc.schema, tc.doc)
		}
	}
	if seen == 0 {
		t.Fatal("no payload case checked")
	}
}

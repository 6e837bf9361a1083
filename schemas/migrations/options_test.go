package migrations

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr []string // substrings; nil means valid
	}{
		{name: "defaults", mutate: func(*Options) {}},
		{name: "zero durations mean no policy", mutate: func(o *Options) {
			o.ReadingsRetention, o.MetricsRetention, o.CompressAfter = 0, 0, 0
		}},
		{name: "empty strings take defaults", mutate: func(o *Options) {
			o.Schema, o.WriterRole, o.ReaderRole, o.Flavor = "", "", "", ""
		}},
		{name: "schema with upper case", mutate: func(o *Options) { o.Schema = "IoT" }, wantErr: []string{"Options.Schema", `"IoT"`}},
		{name: "schema with quote", mutate: func(o *Options) { o.Schema = `a"; DROP TABLE x; --` }, wantErr: []string{"Options.Schema"}},
		{name: "schema starting with digit", mutate: func(o *Options) { o.Schema = "1x" }, wantErr: []string{"Options.Schema"}},
		{name: "schema pg_ prefix", mutate: func(o *Options) { o.Schema = "pg_iot" }, wantErr: []string{"Options.Schema", "reserved"}},
		{name: "schema too long", mutate: func(o *Options) { o.Schema = strings.Repeat("a", 64) }, wantErr: []string{"Options.Schema", "63 bytes"}},
		{name: "schema 63 bytes", mutate: func(o *Options) { o.Schema = strings.Repeat("a", 63) }},
		{name: "writer role", mutate: func(o *Options) { o.WriterRole = "iot-writer" }, wantErr: []string{"Options.WriterRole"}},
		{name: "reader role", mutate: func(o *Options) { o.ReaderRole = "Reader" }, wantErr: []string{"Options.ReaderRole"}},
		{name: "reader equals writer", mutate: func(o *Options) { o.ReaderRole = o.WriterRole }, wantErr: []string{"Options.ReaderRole", "WriterRole"}},
		{name: "reader equals default writer", mutate: func(o *Options) { o.WriterRole, o.ReaderRole = "", DefaultWriterRole }, wantErr: []string{"Options.ReaderRole"}},
		{name: "flavor", mutate: func(o *Options) { o.Flavor = "mysql" }, wantErr: []string{"Options.Flavor", `"mysql"`}},
		{name: "negative retention", mutate: func(o *Options) { o.ReadingsRetention = -time.Hour }, wantErr: []string{"Options.ReadingsRetention", "negative"}},
		{name: "retention in nanoseconds", mutate: func(o *Options) { o.ReadingsRetention = 30 }, wantErr: []string{"Options.ReadingsRetention", "shorter than"}},
		{name: "compress after too short", mutate: func(o *Options) { o.CompressAfter = time.Minute }, wantErr: []string{"Options.CompressAfter"}},
		{name: "metrics retention inside refresh window", mutate: func(o *Options) { o.MetricsRetention = 7 * 24 * time.Hour }, wantErr: []string{"Options.MetricsRetention", "refresh window"}},
		{name: "several at once", mutate: func(o *Options) { o.Schema, o.CompressAfter = "X", -1 }, wantErr: []string{"Options.Schema", "Options.CompressAfter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.mutate(&o)
			err := o.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestZeroOptionsValid(t *testing.T) {
	var o Options
	if err := o.Validate(); err != nil {
		t.Fatalf("Options{}.Validate() = %v", err)
	}
	d := o.withDefaults()
	if d.Schema != DefaultSchema || d.WriterRole != DefaultWriterRole || d.ReaderRole != DefaultReaderRole || d.Flavor != FlavorAuto || d.Logger == nil {
		t.Fatalf("withDefaults() = %+v", d)
	}
	if d.ReadingsRetention != 0 || d.MetricsRetention != 0 || d.CompressAfter != 0 {
		t.Fatalf("withDefaults() changed durations: %+v", d)
	}
}

func TestIntervalLiteral(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, ""},
		{-time.Hour, ""},
		{time.Hour, "INTERVAL '3600 seconds'"},
		{24 * time.Hour, "INTERVAL '1 days'"},
		{30 * 24 * time.Hour, "INTERVAL '30 days'"},
		{36 * time.Hour, "INTERVAL '1 days 43200 seconds'"},
		{90*time.Minute + 1500*time.Microsecond, "INTERVAL '5400001500 microseconds'"},
		{time.Nanosecond, "INTERVAL '0 microseconds'"},
	}
	for _, tt := range tests {
		if got := intervalLiteral(tt.d); got != tt.want {
			t.Errorf("intervalLiteral(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestQuoting(t *testing.T) {
	if got, want := quoteIdent(`we"ird`), `"we""ird"`; got != want {
		t.Errorf("quoteIdent = %s, want %s", got, want)
	}
	if got, want := quoteLiteral(`it's`), `'it''s'`; got != want {
		t.Errorf("quoteLiteral = %s, want %s", got, want)
	}
	d := newTemplateData(Options{Schema: "it's", WriterRole: "w", ReaderRole: "r"})
	if got, want := d.Rel("readings"), `'"it''s"."readings"'`; got != want {
		t.Errorf("Rel = %s, want %s", got, want)
	}
	if d.Schema != `"it's"` || d.Writer != `"w"` || d.Reader != `"r"` {
		t.Errorf("templateData = %+v", d)
	}
}

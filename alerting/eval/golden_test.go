package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/schemas"
)

var update = flag.Bool("update", false, "rewrite testdata/*/expected.jsonl")

// base is the event time that input offsets count from.
var base = time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

// testRule is a rule as written in testdata/<case>/rules.json.
type testRule struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Scope     string   `json:"scope"`
	ScopeID   string   `json:"scope_id"`
	Metric    string   `json:"metric"`
	Statistic string   `json:"statistic"`
	Op        string   `json:"op"`
	Trigger   float64  `json:"trigger"`
	Clear     float64  `json:"clear"`
	ForCount  int      `json:"for_count"`
	For       string   `json:"for"`
	Silence   string   `json:"silence"`
	Severity  string   `json:"severity"`
	Recipient []string `json:"recipients"`
}

func (tr testRule) rule(t *testing.T) *rules.Rule {
	r := &rules.Rule{ID: tr.ID, Kind: rules.Kind(tr.Kind), Scope: rules.Scope(tr.Scope), ScopeID: tr.ScopeID, Metric: tr.Metric,
		Statistic: tr.Statistic, Operator: rules.Operator(tr.Op), Trigger: tr.Trigger, Clear: tr.Clear, ForCount: tr.ForCount,
		Severity: tr.Severity, Recipients: tr.Recipient, Enabled: true, Version: 1}
	var err error
	if tr.For != "" {
		if r.ForDuration, err = time.ParseDuration(tr.For); err != nil {
			t.Fatal(err)
		}
	}
	if tr.Silence != "" {
		if r.Silence, err = time.ParseDuration(tr.Silence); err != nil {
			t.Fatal(err)
		}
	}
	r.Normalize()
	if err := r.Validate(); err != nil {
		t.Fatalf("rule %s: %v", r.ID, err)
	}
	return r
}

// input is one line of input.jsonl: a reading, a window (stats set) or an
// advance of event time; times are seconds after base.
type input struct {
	Device  string             `json:"device"`
	Metric  string             `json:"metric"`
	Value   float64            `json:"value"`
	T       float64            `json:"t"`
	Stats   map[string]float64 `json:"stats"`
	Advance *float64           `json:"advance"`
}

func at(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }

func (in input) apply(e *Engine, out []*schemas.Alert) []*schemas.Alert {
	switch {
	case in.Advance != nil:
		return e.Advance(out, at(*in.Advance))
	case in.Stats != nil:
		return e.Window(out, Window{DeviceID: in.Device, Metric: in.Metric, End: at(in.T), Stats: in.Stats})
	default:
		return e.Reading(out, Reading{DeviceID: in.Device, Metric: in.Metric, Value: in.Value, Time: at(in.T)})
	}
}

var testGroups = map[string][]string{"d1": {"site-a"}, "d2": {"site-b"}}

func groupsOf(d string) []string { return testGroups[d] }

// Golden cases: testdata/<case>/{rules.json,input.jsonl} → expected.jsonl
// (the events, then a line with the counters).
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			var trs []testRule
			b, err := os.ReadFile(filepath.Join(dir, "rules.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &trs); err != nil {
				t.Fatal(err)
			}
			var set []*rules.Rule
			for _, tr := range trs {
				set = append(set, tr.rule(t))
			}
			e := New(set, groupsOf)
			f, err := os.Open(filepath.Join(dir, "input.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var out []*schemas.Alert
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if len(bytes.TrimSpace(sc.Bytes())) == 0 {
					continue
				}
				var in input
				if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
					t.Fatalf("%s: %v", sc.Text(), err)
				}
				out = in.apply(e, out)
			}
			var got bytes.Buffer
			for _, ev := range out {
				line, err := schemas.EncodeAlert(ev)
				if err != nil {
					t.Fatalf("event fails its own schema: %v", err)
				}
				got.Write(line)
				got.WriteByte('\n')
			}
			st, _ := json.Marshal(e.Stats())
			got.Write(st)
			got.WriteByte('\n')
			want := filepath.Join(dir, "expected.jsonl")
			if *update {
				if err := os.WriteFile(want, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wb, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(wb, got.Bytes()) {
				t.Errorf("events differ\n got:\n%s\nwant:\n%s", got.Bytes(), wb)
			}
		})
	}
}

// TestMaxSeries: at the cap a new series is refused (counted), held
// series go on; removing the cap creates it.
func TestMaxSeries(t *testing.T) {
	r := &rules.Rule{ID: "hot", Kind: rules.KindReading, Scope: rules.ScopeAll, Metric: "temp", Operator: rules.GT,
		Trigger: 30, Clear: 25, ForCount: 1, Severity: rules.SeverityWarning, Enabled: true, Version: 1}
	e := New([]*rules.Rule{r}, nil)
	e.SetMaxSeries(1)
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	if out := e.Reading(nil, Reading{DeviceID: "a", Metric: "temp", Value: 31, Time: t0}); len(out) != 1 {
		t.Fatalf("held series: %d events, want 1 FIRING", len(out))
	}
	if out := e.Reading(nil, Reading{DeviceID: "b", Metric: "temp", Value: 31, Time: t0}); len(out) != 0 || e.Stats().Refused != 1 || e.Series() != 1 {
		t.Fatalf("at the cap: %d events, refused %d, series %d; want 0, 1, 1", len(out), e.Stats().Refused, e.Series())
	}
	if out := e.Reading(nil, Reading{DeviceID: "a", Metric: "temp", Value: 20, Time: t0.Add(time.Second)}); len(out) != 1 {
		t.Fatalf("held series at the cap: %d events, want 1 RESOLVED", len(out))
	}
	e.SetMaxSeries(-1)
	if out := e.Reading(nil, Reading{DeviceID: "b", Metric: "temp", Value: 31, Time: t0}); len(out) != 1 || e.Series() != 2 {
		t.Fatalf("no cap: %d events, series %d; want 1, 2", len(out), e.Series())
	}
}

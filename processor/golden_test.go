package processor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden expected.jsonl files")

// goldenBase is the origin of the golden files' times: "wall" and "ts" are
// Go durations after it.
var goldenBase = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// goldenWindow is the engine configuration of every golden case.
var goldenWindow = WindowConfig{Size: 10 * time.Second, Lateness: 5 * time.Second, IdleTimeout: 20 * time.Second, LateRetention: 30 * time.Second, MaxFutureSkew: DefaultMaxFutureSkew, HeartbeatExpiry: DefaultHeartbeatExpiry}

var goldenTopics = Topics{Raw: "raw", Metrics: "metrics", DLQ: "dlq", Changelog: "changelog", Readings: "readings"}

// goldenLine is one line of an input.jsonl: a reading (device, ts, seq, m),
// an undecodable record (raw), or a wall-clock tick (tick).
type goldenLine struct {
	Wall   string             `json:"wall"`
	Device string             `json:"device"`
	TS     string             `json:"ts"`
	Seq    *int64             `json:"seq"`
	M      map[string]float64 `json:"m"`
	// Ignored is the reading's ignored_fields (payload fields the bridge
	// ignored), 0 when absent.
	Ignored int     `json:"ignored"`
	Raw     *string `json:"raw"`
	Tick    bool    `json:"tick"`
}

func mustDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("bad duration %q: %v", s, err)
	}
	return d
}

func rawValue(dev string, ts time.Time, seq *int64, m map[string]float64, ignored int) []byte {
	r := schemas.Reading{DeviceID: dev, EventTime: ts, ReceivedTime: ts, IgnoredFields: ignored}
	if seq != nil {
		r.Seq, r.HasSeq = *seq, true
	}
	for k, v := range m {
		r.Measurements = append(r.Measurements, schemas.Measurement{Name: k, Value: v})
	}
	slices.SortFunc(r.Measurements, func(a, b schemas.Measurement) int { return strings.Compare(a.Name, b.Name) })
	return schemas.AppendRaw(nil, &r)
}

// runGolden feeds a case through a task and returns the output lines. With
// restoreEachStep, the task's state goes through the changelog encoding
// after every line and the engine is rebuilt from it, as after a crash.
func runGolden(t *testing.T, dir string, restoreEachStep bool) []string {
	f, err := os.Open(filepath.Join(dir, "input.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := newMetrics(prometheus.NewRegistry())
	eng, err := NewEngine(goldenWindow)
	if err != nil {
		t.Fatal(err)
	}
	tk := newTask(0, eng, goldenTopics, m)
	changelog := map[string][]byte{}
	var lines []string
	var offset int64
	var cur *kgo.Record // the input record being handled
	out := func(r *kgo.Record) {
		switch r.Topic {
		case goldenTopics.Metrics:
			lines = append(lines, `{"topic":"metrics","value":`+string(r.Value)+`}`)
		case goldenTopics.Readings:
			// The accepted reading's input record, copied unchanged: the
			// line names the input line (offset) it came from.
			lines = append(lines, fmt.Sprintf(`{"topic":"readings","input_offset":%d,"key":%q}`, offset, r.Key))
			if !bytes.Equal(r.Value, cur.Value) || !bytes.Equal(r.Key, cur.Key) || !r.Timestamp.Equal(cur.Timestamp) {
				t.Fatalf("readings record differs from its input record: %+v vs %+v", r, cur)
			}
		case goldenTopics.DLQ:
			d, err := schemas.RecordDeadLetter(r)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(d)
			lines = append(lines, `{"topic":"dlq","record":`+string(b)+`}`)
		default:
			t.Fatalf("record to unexpected topic %q", r.Topic)
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var in goldenLine
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			t.Fatalf("input line %q: %v", sc.Text(), err)
		}
		now := goldenBase.Add(mustDur(t, in.Wall))
		switch {
		case in.Tick:
		case in.Raw != nil:
			cur = &kgo.Record{Topic: "raw", Offset: offset, Key: []byte("?"), Value: []byte(*in.Raw)}
			tk.handle(cur, now, out)
		default:
			ts := goldenBase.Add(mustDur(t, in.TS))
			cur = &kgo.Record{Topic: "raw", Offset: offset, Key: []byte(in.Device), Value: rawValue(in.Device, ts, in.Seq, in.M, in.Ignored), Timestamp: ts}
			tk.handle(cur, now, out)
		}
		offset++
		tk.advance(now, out)
		if restoreEachStep {
			tk.eng.Changes(func(k, v []byte) {
				if v == nil {
					delete(changelog, string(k))
				} else {
					changelog[string(k)] = bytes.Clone(v)
				}
			})
			fresh, _ := NewEngine(goldenWindow)
			for k, v := range changelog {
				if err := fresh.Restore([]byte(k), v); err != nil {
					t.Fatal(err)
				}
			}
			// Every device's idle timer is in its own stored record; a
			// restore time before all of them keeps it.
			if err := fresh.FinishRestore(goldenBase); err != nil {
				t.Fatal(err)
			}
			fresh.stats = tk.eng.stats
			tk.eng = fresh
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/input.jsonl")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			got := runGolden(t, dir, false)
			exp := filepath.Join(dir, "expected.jsonl")
			if *update {
				if err := os.WriteFile(exp, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(exp)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(got) == 0 {
				got = []string{""}
			}
			if !slices.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to rewrite, then review):\ngot:\n%s\nwant:\n%s", exp, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// The same case, with the state written to the changelog encoding
			// and restored after every input line, gives the same output.
			if again := runGolden(t, dir, true); !slices.Equal(again, got) && len(again)+len(got) > 1 {
				t.Errorf("restoring from the changelog after each step changed the output:\n%s\nvs\n%s", strings.Join(again, "\n"), strings.Join(got, "\n"))
			}
		})
	}
}

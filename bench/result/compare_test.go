package result

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
)

func TestCompareFixtures(t *testing.T) {
	old, err := os.ReadFile("testdata/old.json")
	if err != nil {
		t.Fatal(err)
	}
	new, err := os.ReadFile("testdata/new.json")
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Compare(old, new)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Change{}
	var names []string
	for _, c := range changes {
		byName[c.Name] = c
		names = append(names, c.Name)
	}
	want := []string{
		"bridge.goal_met", "bridge.msgs_per_s", "bridge.ratio", "duration_s",
		"end_to_end.count_check.ok", "end_to_end.latency_p99_s", "end_to_end.steps.0.achieved_msgs_per_s", "end_to_end.steps.1.achieved_msgs_per_s",
		"lake.x_smaller", "machine.cores", "machine.load_avg_start.0", "machine.load_avg_start.1", "machine.load_avg_start.2",
		"quick", "removed_later", "schema_version", "versions.dirty",
	}
	if got := strings.Join(names, " "); got != strings.Join(want, " ") {
		t.Fatalf("fields:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
	check := func(name string, pct float64) {
		t.Helper()
		got := byName[name].Percent()
		if math.IsNaN(pct) != math.IsNaN(got) || (!math.IsNaN(pct) && math.Abs(got-pct) > 1e-9) {
			t.Errorf("%s: change %v%%, want %v%%", name, got, pct)
		}
	}
	check("bridge.msgs_per_s", -25)
	check("end_to_end.latency_p99_s", 50)
	check("machine.cores", 0)
	check("end_to_end.steps.1.achieved_msgs_per_s", math.NaN()) // only in new
	check("removed_later", math.NaN())                          // only in old
	check("bridge.goal_met", -100)
	check("versions.dirty", math.NaN()) // from 0

	var buf bytes.Buffer
	if err := PrintCompare(&buf, changes); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"field", "bridge.msgs_per_s", "40000", "30000", "-25.0%", "end_to_end.latency_p99_s", "+50.0%"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "lake.x_smaller") && !strings.Contains(l, " - ") {
			t.Errorf("a field only in new shows '-' as old: %q", l)
		}
	}
}

func TestCompareRejectsBadJSON(t *testing.T) {
	if _, err := Compare([]byte("{"), []byte("{}")); err == nil || !strings.HasPrefix(err.Error(), "old:") {
		t.Errorf("err = %v", err)
	}
}

package result

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"text/tabwriter"
)

// Flatten walks a JSON document and returns every number (and boolean, as
// 0 or 1) by its dotted path, e.g. "end_to_end.latency_p99_s",
// "end_to_end.steps.0.achieved_msgs_per_s". It knows nothing of File, so
// comparing keeps working as figures are added.
func Flatten(data []byte) (map[string]float64, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		join := func(k string) string {
			if prefix == "" {
				return k
			}
			return prefix + "." + k
		}
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				walk(join(k), e)
			}
		case []any:
			for i, e := range x {
				walk(join(strconv.Itoa(i)), e)
			}
		case json.Number:
			if f, err := x.Float64(); err == nil {
				out[prefix] = f
			}
		case bool:
			if x {
				out[prefix] = 1
			} else {
				out[prefix] = 0
			}
		}
	}
	walk("", v)
	return out, nil
}

// Change is one figure in two result files.
type Change struct {
	Name     string
	Old, New float64
	// HasOld, HasNew: whether the field is present in each file.
	HasOld, HasNew bool
}

// Percent is the relative change from Old to New in percent (NaN when it
// is undefined).
func (c Change) Percent() float64 {
	if !c.HasOld || !c.HasNew || c.Old == 0 {
		if c.HasOld && c.HasNew && c.New == 0 {
			return 0
		}
		return math.NaN()
	}
	return (c.New - c.Old) / math.Abs(c.Old) * 100
}

// Compare returns every numeric field present in either document, sorted
// by name.
func Compare(old, new []byte) ([]Change, error) {
	a, err := Flatten(old)
	if err != nil {
		return nil, fmt.Errorf("old: %w", err)
	}
	b, err := Flatten(new)
	if err != nil {
		return nil, fmt.Errorf("new: %w", err)
	}
	names := map[string]bool{}
	for k := range a {
		names[k] = true
	}
	for k := range b {
		names[k] = true
	}
	var out []Change
	for k := range names {
		c := Change{Name: k}
		c.Old, c.HasOld = a[k]
		c.New, c.HasNew = b[k]
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PrintCompare writes the changes as a table: field, old, new, change %.
// A field missing from one file shows "-".
func PrintCompare(w io.Writer, changes []Change) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "field\told\tnew\tchange\t")
	val := func(v float64, ok bool) string {
		if !ok {
			return "-"
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	for _, c := range changes {
		pct := "-"
		if p := c.Percent(); !math.IsNaN(p) {
			pct = fmt.Sprintf("%+.1f%%", p)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", c.Name, val(c.Old, c.HasOld), val(c.New, c.HasNew), pct)
	}
	return tw.Flush()
}

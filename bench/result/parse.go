package result

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// Bench is one result line of `go test -bench` output.
type Bench struct {
	// Name without the -GOMAXPROCS suffix, e.g.
	// "BenchmarkBridgeVsPipeline/bridge-lz4".
	Name string
	// Procs is the GOMAXPROCS suffix (1 when there is none).
	Procs int
	// N is the iteration count.
	N int64
	// Metrics by unit as printed ("ns/op", "msgs/s", "cpu-µs/msg").
	Metrics map[string]float64
}

// ParseLine parses one line of `go test -bench` output. It reports false
// for every other line (logs, headers, PASS/FAIL).
//
// The line is the standard benchmark format: a name starting with
// "Benchmark", an iteration count, then value-unit pairs.
func ParseLine(line string) (Bench, bool) {
	if !strings.HasPrefix(line, "Benchmark") {
		return Bench{}, false
	}
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return Bench{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Bench{}, false
	}
	b := Bench{Name: f[0], Procs: 1, N: n, Metrics: make(map[string]float64, (len(f)-2)/2)}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Bench{}, false
		}
		b.Metrics[f[i+1]] = v
	}
	// The -N suffix that `go test` appends when GOMAXPROCS is not 1.
	if i := strings.LastIndexByte(b.Name, '-'); i > 0 {
		if p, err := strconv.Atoi(b.Name[i+1:]); err == nil && p > 1 {
			b.Name, b.Procs = b.Name[:i], p
		}
	}
	return b, true
}

// Parse reads `go test -bench` output and returns its benchmark lines.
func Parse(r io.Reader) ([]Bench, error) {
	var out []Bench
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if b, ok := ParseLine(sc.Text()); ok {
			out = append(out, b)
		}
	}
	return out, sc.Err()
}

// Collect turns parsed lines into Benchmarks (unit keys from UnitKey; a
// later line of the same name wins).
func Collect(bs []Bench) Benchmarks {
	out := Benchmarks{}
	for _, b := range bs {
		m := out[b.Name]
		if m == nil {
			m = map[string]float64{}
			out[b.Name] = m
		}
		for u, v := range b.Metrics {
			m[UnitKey(u)] = v
		}
	}
	return out
}

// Get returns the metric unit (as printed) of the benchmark name.
func Get(bs []Bench, name, unit string) (float64, bool) {
	var v float64
	found := false
	for _, b := range bs {
		if b.Name == name {
			if x, ok := b.Metrics[unit]; ok {
				v, found = x, true
			}
		}
	}
	return v, found
}

// Command compare prints the change between two benchmark result files:
// every numeric field present in either (booleans as 0/1), by its dotted
// name (e.g. end_to_end.latency_p99_s), with the old and new value and the
// change in percent. It reads the JSON generically, so it keeps working as
// figures are added.
//
//	go run ./bench/compare OLD.json NEW.json
//	go run ./bench/compare            # the two newest files in bench/results
//	go run ./bench/compare --markdown FILE.json  # one run's table, for docs/BENCHMARKS.md
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/iotpipe/iotpipe/bench/result"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("bench/compare", flag.ContinueOnError)
	dir := fs.String("dir", "bench/results", "where the result files are, when none is named")
	filter := fs.String("filter", "", "only fields whose name matches this regular expression")
	markdown := fs.Bool("markdown", false, "print one result file (the newest when none is named) as the Markdown summary of docs/BENCHMARKS.md")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench/compare [flags] [OLD.json NEW.json]\n\nWith no files, compares the two newest in --dir.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	var re *regexp.Regexp
	if *filter != "" {
		var err error
		if re, err = regexp.Compile(*filter); err != nil {
			fmt.Fprintln(os.Stderr, "compare: --filter:", err)
			return 2
		}
	}
	files := fs.Args()
	if *markdown {
		return printMarkdown(files, *dir)
	}
	switch len(files) {
	case 0:
		var err error
		if files, err = result.Newest(*dir, 2); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			return 1
		}
	case 2:
	default:
		fs.Usage()
		return 2
	}
	data := make([][]byte, 2)
	for i, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			return 1
		}
		data[i] = b
	}
	changes, err := result.Compare(data[0], data[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	if re != nil {
		kept := changes[:0]
		for _, c := range changes {
			if re.MatchString(c.Name) {
				kept = append(kept, c)
			}
		}
		changes = kept
	}
	fmt.Printf("old: %s\nnew: %s\n\n", filepath.Clean(files[0]), filepath.Clean(files[1]))
	if err := result.PrintCompare(os.Stdout, changes); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	return 0
}

// printMarkdown writes one run as docs/BENCHMARKS.md shows it: when,
// where, with what, and the summary table.
func printMarkdown(files []string, dir string) int {
	if len(files) == 0 {
		var err error
		if files, err = result.Newest(dir, 1); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			return 1
		}
	}
	if len(files) != 1 {
		fmt.Fprintln(os.Stderr, "compare: --markdown takes one file")
		return 2
	}
	f, err := result.Read(files[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	mode := "full"
	if f.Quick {
		mode = "quick"
	}
	m, v := f.Machine, f.Versions
	dirty := ""
	if v.Dirty {
		dirty = " + uncommitted changes"
	}
	fmt.Printf("Run of %s UTC (%s, %.0f s, `%s`), commit `%.12s`%s.\n\n", f.StartedAt.UTC().Format("2006-01-02 15:04"), mode, f.DurationS, filepath.Base(files[0]), v.Commit, dirty)
	fmt.Printf("Machine: %d cores (%s), %.1f GiB, Linux %s; load average %.2f at start, %.2f at end.\n\n", m.Cores, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.LoadAvgStart[0], m.LoadAvgEnd[0])
	fmt.Printf("Versions: %s, Kafka %s (Java %s), Mosquitto %s, kcat %s, PostgreSQL %s (%s), versitygw %s.\n\n", v.Go, v.Kafka, v.Java, v.Mosquitto, v.Kcat, v.PostgreSQL, v.TimescaleDB, v.Versitygw)
	if err := f.PrintMarkdown(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	for _, e := range f.Errors() {
		fmt.Printf("\n%s failed: %s\n", e[0], e[1])
	}
	return 0
}

// Command run is the benchmark suite: each stage benchmark against its
// ceiling measured in the same run, then the end-to-end benchmark, on the
// local real services (scripts/services.sh). It writes
// bench/results/<UTC timestamp>.json and prints a table.
//
//	go run ./bench/run [--quick] [--out bench/results] [--skip e2e,bridge,...]
//
// The stage benchmarks run one after the other as
// `go test -tags integration -run '^$' -bench '^<name>$' -benchtime 1x <pkg>`
// with their size variables (IOTPIPE_BENCH_MESSAGES, IOTPIPE_BENCH_READINGS);
// their output streams through, and their result lines are parsed into the
// file. One stage failing does not lose the others' figures: the stage
// gets an "error" field and the command exits 1 at the end, as it does
// when the end-to-end count check fails. See docs/BENCHMARKS.md.
package main

// Package result is the benchmark suite's result file: the File type
// written by bench/run as bench/results/<UTC timestamp>.json, the parser of
// `go test -bench` output that fills it, the terminal table, and the
// comparison of two files used by bench/compare.
//
// Field names are stable snake_case: results are compared across runs by
// name, so a field is never renamed; new figures get new fields. Every
// stage object carries an "error" string when that stage failed, and the
// figures it could still read.
package result

// Command iotpipe is the one binary of iotpipe: bridge, processor, sinks,
// init, simulate, demo and version are its subcommands (see root.go and
// `iotpipe --help`). It is the only place that reads flags and the
// IOTPIPE_* environment.
package main

import "os"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

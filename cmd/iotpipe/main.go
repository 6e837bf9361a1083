// Command iotpipe is the one binary of iotpipe: bridge, processor, sinks,
// init, simulate, demo and version are its subcommands. See
// `iotpipe --help`.
package main

import (
	"os"

	"github.com/iotpipe/iotpipe/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}

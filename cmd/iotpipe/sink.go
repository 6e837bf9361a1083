package main

import (
	"context"
	"fmt"
)

// `iotpipe sink lake|timescale`: dispatches to the sink commands, defined
// in sink_lake.go and sink_timescale.go by their stages.

const sinkSummary = "write Kafka records to the Parquet lake (sink lake) or to TimescaleDB (sink timescale)"

func runSink(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintf(env.Stdout, "Usage: iotpipe sink <lake|timescale> [flags]\n\n"+
			"  lake       write telemetry.readings and telemetry.metrics as Parquet files to S3-compatible storage\n"+
			"  timescale  write readings, window metrics and activity rows to TimescaleDB or PostgreSQL\n\n"+
			"Run 'iotpipe sink <lake|timescale> --help' for the flags.\n")
		if len(args) == 0 {
			return &UsageError{fmt.Errorf("which sink? lake or timescale")}
		}
		return nil
	}
	switch args[0] {
	case "lake":
		return runSinkLake(ctx, env, args[1:])
	case "timescale":
		return runSinkTimescale(ctx, env, args[1:])
	}
	return &UsageError{fmt.Errorf("unknown sink %q: want lake or timescale", args[0])}
}

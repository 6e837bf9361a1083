package main

// The command tree: Main dispatches to the commands below; every stage
// command is a stageCmd (stage.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/iotpipe/iotpipe/internal/buildinfo"
)

// Exit codes of the iotpipe binary.
const (
	ExitOK     = 0
	ExitFailed = 1 // the command ran and failed
	ExitUsage  = 2 // bad command line or settings; nothing was done
)

// UsageError marks an error in the command line or settings: the command
// did nothing and exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Env is what a command sees of its process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"init", "create the Kafka topics, the object store bucket and the database schema (idempotent)", runInit},
		{"bridge", bridgeSummary, runBridge},
		{"processor", processorSummary, runProcessor},
		{"sink", sinkSummary, runSink},
		{"ca", caSummary, runCA},
		{"devices", devicesSummary, runDevices},
		{"alert", alertSummary, runAlert},
		{"alerts", alertsSummary, runAlerts},
		{"notify", notifySummary, runNotify},
		{"api", apiSummary, runAPI},
		{"shadow-consumer", shadowConsumerSummary, runShadowConsumer},
		{"tokens", tokensSummary, runTokens},
		{"simulate", "run a simulated device fleet against an MQTT broker (realistic signals, bad input, duplicates, late data)", runSimulate},
		{"demo", "run the whole pipeline locally on the running services, with live progress (make demo)", runDemo},
		{"healthcheck", "exit 0 when a running stage answers ready (for container healthchecks)", runHealthcheck},
		{"version", "print the version of this binary", runVersion},
	}
}

// Usage writes the top-level help.
func Usage(w io.Writer) {
	fmt.Fprint(w, `iotpipe — a self-hosted backend for IoT device telemetry on Kafka.

Devices publish readings over MQTT; the bridge moves them into Kafka without
loss; the processor computes per-device metrics in event-time windows, exactly
once; sinks write Parquet files to S3-compatible storage and rows to
TimescaleDB (or plain PostgreSQL).

Usage: iotpipe <command> [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	_ = tw.Flush()
	fmt.Fprint(w, `
Run 'iotpipe <command> --help' for the flags of a command. Every flag can also
be set with an IOTPIPE_* environment variable (--kafka-brokers is
IOTPIPE_KAFKA_BROKERS); the command line wins over the environment.
`)
}

// Main runs the command line args (without the program name) and returns
// the process exit code. It cancels the command's context on SIGINT or
// SIGTERM so commands can shut down cleanly.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, Env{Stdout: stdout, Stderr: stderr, Getenv: os.Getenv}, args)
}

// Run is Main with the context and environment given, for tests.
func Run(ctx context.Context, env Env, args []string) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if len(args) == 0 {
		Usage(env.Stderr)
		return ExitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help", "help":
		Usage(env.Stdout)
		return ExitOK
	case "-v", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, env, args[1:])
		if (name == "sink" || name == "ca" || name == "devices" || name == "alerts" || name == "tokens") && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
			name += " " + args[1]
		}
		switch {
		case err == nil, errors.Is(err, ErrHelp):
			return ExitOK
		default:
			fmt.Fprintf(env.Stderr, "iotpipe %s: %s\n", name, oneLine(err))
			var ue *UsageError
			if errors.As(err, &ue) {
				return ExitUsage
			}
			return ExitFailed
		}
	}
	fmt.Fprintf(env.Stderr, "iotpipe: unknown command %q (see iotpipe --help)\n", name)
	return ExitUsage
}

// oneLine folds a (possibly joined) error into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func runVersion(_ context.Context, env Env, args []string) error {
	f := newCmdFlags(env, "iotpipe version", "Print the version, commit and Go version of this binary.")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	fmt.Fprintln(env.Stdout, buildinfo.Get().String())
	return nil
}

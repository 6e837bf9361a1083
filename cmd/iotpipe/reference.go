package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// referenceCommands are the commands whose settings the configuration
// reference lists, as typed after `iotpipe`.
var referenceCommands = [][]string{
	{"init"}, {"bridge"}, {"processor"}, {"sink", "lake"}, {"sink", "timescale"}, {"simulate"}, {"demo"}, {"healthcheck"},
	{"ca", "init"}, {"ca", "server"}, {"ca", "client"},
	{"devices", "add"}, {"devices", "list"}, {"devices", "show"}, {"devices", "disable"}, {"devices", "enable"},
	{"devices", "revoke"}, {"devices", "reissue"}, {"devices", "import"}, {"devices", "sync"},
	{"alerts", "rules", "list"}, {"alerts", "rules", "show"}, {"alerts", "rules", "create"}, {"alerts", "rules", "update"},
	{"alerts", "rules", "delete"}, {"alert"}, {"notify"},
}

// WriteReference writes the configuration reference (docs/CONFIG.md): the
// --help of every command, which lists each flag with its IOTPIPE_*
// variable and default. It is generated from the flag definitions, so it
// cannot drift from the binary (a test compares it).
func WriteReference(w io.Writer) error {
	fmt.Fprint(w, "# Configuration reference\n\n"+
		"Generated from the flag definitions by `go test ./cmd/iotpipe -run TestConfigReference -update`;\n"+
		"do not edit by hand. Every flag can also be set through the environment variable shown next\n"+
		"to it; a flag on the command line wins over the environment.\n")
	for _, args := range referenceCommands {
		var out, errOut bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
		if code := Run(context.Background(), env, append(append([]string{}, args...), "--help")); code != ExitOK {
			return fmt.Errorf("iotpipe %v --help: exit %d: %s", args, code, errOut.String())
		}
		name := "iotpipe"
		for _, a := range args {
			name += " " + a
		}
		fmt.Fprintf(w, "\n## %s\n\n```\n%s```\n", name, machineIndependent(out.String()))
	}
	return nil
}

// machineIndependent replaces defaults derived from the host name, so the
// reference is the same on every machine.
func machineIndependent(help string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return help
	}
	return strings.NewReplacer(
		"(default "+host+")", "(default the host name)",
		"-"+host+")", "-<host name>)",
	).Replace(help)
}

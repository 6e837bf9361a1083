package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// EnvPrefix is the prefix of the environment variable that backs every flag:
// --kafka-brokers is also read from IOTPIPE_KAFKA_BROKERS.
const EnvPrefix = "IOTPIPE_"

// EnvName returns the environment variable that backs the flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Flags is a flag set in which every flag can also be set through its
// IOTPIPE_* environment variable. A flag given on the command line wins
// over the environment, which wins over the default.
type Flags struct {
	fs      *flag.FlagSet
	name    string
	summary string
	groups  map[string]string // flag name -> group title
	order   []string          // group titles in order of first use
	group   string
	secret  map[string]bool
	getenv  func(string) string
	source  map[string]string // flag name -> "flag" | "env" | "default"
	defined []string          // flag names in definition order
}

// NewFlags returns a flag set for the command name (e.g. "iotpipe init").
func NewFlags(name, summary string) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &Flags{
		fs:      fs,
		name:    name,
		summary: summary,
		groups:  map[string]string{},
		secret:  map[string]bool{},
		getenv:  os.Getenv,
		source:  map[string]string{},
	}
}

// Group starts a titled group of flags for --help.
func (f *Flags) Group(title string) {
	f.group = title
	f.order = append(f.order, title)
}

func (f *Flags) note(name string) {
	f.groups[name] = f.group
	f.defined = append(f.defined, name)
}

// String defines a string flag.
func (f *Flags) String(p *string, name, def, usage string) {
	f.fs.StringVar(p, name, def, usage)
	f.note(name)
}

// Secret defines a string flag whose value is never printed.
func (f *Flags) Secret(p *string, name, def, usage string) {
	f.String(p, name, def, usage)
	f.secret[name] = true
}

// Int defines an int flag.
func (f *Flags) Int(p *int, name string, def int, usage string) {
	f.fs.IntVar(p, name, def, usage)
	f.note(name)
}

// Bool defines a bool flag.
func (f *Flags) Bool(p *bool, name string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, usage)
	f.note(name)
}

// Duration defines a duration flag (Go syntax: 90s, 5m, 720h).
func (f *Flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, usage)
	f.note(name)
}

// ErrHelp is returned by Parse when -h or --help was given; the usage has
// been written already.
var ErrHelp = flag.ErrHelp

// Parse parses args, then fills every flag not given on the command line
// from its environment variable. Errors name both the flag and the
// variable. On -h/--help it writes the usage to out and returns ErrHelp.
func (f *Flags) Parse(args []string, out io.Writer) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.Usage(out)
			return ErrHelp
		}
		return fmt.Errorf("%s: %w (see %s --help)", f.name, err, f.name)
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see %s --help)", f.name, f.fs.Arg(0), f.name)
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true; f.source[fl.Name] = "flag" })
	var errs []error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if set[fl.Name] {
			return
		}
		env := EnvName(fl.Name)
		v, ok := lookup(f.getenv, env)
		if !ok {
			f.source[fl.Name] = "default"
			return
		}
		if err := fl.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q for %s (--%s): %w", v, env, fl.Name, err))
			return
		}
		f.source[fl.Name] = "env"
	})
	return errors.Join(errs...)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	if v := getenv(key); v != "" {
		return v, true
	}
	return "", false
}

// Source tells where a flag's value came from: "flag", "env" or "default".
func (f *Flags) Source(name string) string { return f.source[name] }

// Usage writes the help text: summary, then every flag with its
// environment variable and default, grouped.
func (f *Flags) Usage(out io.Writer) {
	fmt.Fprintf(out, "Usage: %s [flags]\n\n%s\n", f.name, strings.TrimSpace(f.summary))
	byGroup := map[string][]*flag.Flag{}
	for _, name := range f.defined {
		byGroup[f.groups[name]] = append(byGroup[f.groups[name]], f.fs.Lookup(name))
	}
	titles := append([]string{""}, f.order...)
	seen := map[string]bool{}
	for _, title := range titles {
		if seen[title] {
			continue
		}
		seen[title] = true
		fls := byGroup[title]
		if len(fls) == 0 {
			continue
		}
		if title == "" {
			title = "Flags"
		}
		fmt.Fprintf(out, "\n%s:\n", title)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, fl := range fls {
			def := fl.DefValue
			if f.secret[fl.Name] && def != "" {
				def = "(set)"
			}
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(tw, "  --%s\t%s\t%s (default %s)\n", fl.Name, EnvName(fl.Name), fl.Usage, def)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(out, "\nEvery flag can also be set through the environment variable shown next to it;\na flag on the command line wins over the environment.\n")
}

// Names lists every flag name in definition order. Tests use it to compare
// the settings of deploy files with what the binary reads.
func (f *Flags) Names() []string {
	return append([]string(nil), f.defined...)
}

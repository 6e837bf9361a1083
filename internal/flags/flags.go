// Package flags reads a command's settings from its command line and from
// IOTPIPE_* environment variables straight into the fields of a stage's
// Config.
//
// Contract:
//   - Every flag is bound onto a field (f.Duration(&cfg.Window.Lateness,
//     "lateness", "...")) and its default is the value the field holds when
//     it is bound, so defaults come from the stage's DefaultConfig and are
//     written nowhere else. A value given as 0 stays 0.
//   - A flag given on the command line wins over its environment variable
//     (--kafka-brokers is IOTPIPE_KAFKA_BROKERS), which wins over the
//     default.
//   - Old names (Alias) keep working, from the command line and from their
//     own variable, for one release; Deprecated lists those used so the
//     command can log a warning.
//   - A secret (Secret) is never printed: --help shows its default
//     redacted (secret.Redact). It can also be read from a file named by
//     its companion --<name>-file (IOTPIPE_<NAME>_FILE), the file's content
//     less one trailing newline; giving both the value and the file (flag
//     or variable, any mix) is an error naming both, and so is a file that
//     cannot be read. Source then says "file".
//   - Explain turns the *config.FieldError of a Config's Validate into one
//     line per problem naming the flag and its variable, by resolving the
//     field's Go path to the field bound to a flag (reflection on the
//     Config passed in).
package flags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/secret"
)

// EnvPrefix is the prefix of the environment variable that backs every flag:
// --kafka-brokers is also read from IOTPIPE_KAFKA_BROKERS.
const EnvPrefix = "IOTPIPE_"

// EnvName returns the environment variable that backs the flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Setting names a flag and its variable for messages:
// "--lateness (IOTPIPE_LATENESS)".
func Setting(flagName string) string {
	return "--" + flagName + " (" + EnvName(flagName) + ")"
}

// ErrHelp is returned by Parse when -h or --help was given; the usage has
// been written already.
var ErrHelp = flag.ErrHelp

// Kind is the kind of value a flag holds.
type Kind int

// Kinds of flag values.
const (
	KindString Kind = iota
	KindBool
	KindInt
	KindFloat
	KindDuration
	KindList
	KindOther
)

// fieldKey identifies a bound field: its address and type (a struct and
// its first field share an address).
type fieldKey struct {
	p uintptr
	t reflect.Type
}

// Flags is a flag set in which every flag can also be set through its
// IOTPIPE_* environment variable.
type Flags struct {
	fs      *flag.FlagSet
	name    string
	summary string
	groups  map[string]string // flag name -> group title
	order   []string          // group titles in order of first use
	group   string
	secret  map[string]bool
	files   map[string]*string // secret flag name -> path given by its --<name>-file
	getenv  func(string) string
	source  map[string]string // flag name -> "flag" | "env" | "default"
	defined []string          // flag names in definition order
	kinds   map[string]Kind
	fields  map[fieldKey]string            // bound field -> flag name
	ptrs    map[string]any                 // flag name -> pointer to the bound field
	aliases map[string]string              // old name -> flag name
	legacy  map[string]string              // deprecated flag of its own -> what to use instead
	used    []string                       // deprecated names used, as "--old (IOTPIPE_OLD)"
	retired map[string]func(string) string // retired flag -> its warning for a value
	warned  []string                       // warnings of the retired flags used
	setErr  error                          // why the command line's last value was refused
	defErr  error                          // a definition mistake (Parse reports it)
}

// New returns a flag set for the command name (e.g. "iotpipe processor")
// reading variables through getenv (nil: none).
func New(name, summary string, getenv func(string) string) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	return &Flags{
		fs: fs, name: name, summary: summary, getenv: getenv,
		groups: map[string]string{}, secret: map[string]bool{}, files: map[string]*string{}, source: map[string]string{},
		kinds: map[string]Kind{}, fields: map[fieldKey]string{}, ptrs: map[string]any{}, aliases: map[string]string{},
		legacy: map[string]string{}, retired: map[string]func(string) string{},
	}
}

// Name is the command name given to New.
func (f *Flags) Name() string { return f.name }

// Group starts a titled group of flags for --help.
func (f *Flags) Group(title string) {
	f.group = title
	f.order = append(f.order, title)
}

func (f *Flags) note(name string, k Kind, p any) {
	f.groups[name] = f.group
	f.defined = append(f.defined, name)
	f.kinds[name] = k
	f.ptrs[name] = p
	v := reflect.ValueOf(p)
	f.fields[fieldKey{v.Pointer(), v.Type().Elem()}] = name
}

// String binds a string flag onto *p; its default is *p.
func (f *Flags) String(p *string, name, usage string) {
	f.define((*stringValue)(p), name, usage)
	f.note(name, KindString, p)
}

// Secret is String for a value that is never printed, which can also be
// read from a file: it defines the companion flag --<name>-file
// (IOTPIPE_<NAME>_FILE) too. See the package contract.
func (f *Flags) Secret(p *string, name, usage string) {
	f.String(p, name, usage)
	f.secret[name] = true
	path := new(string)
	f.files[name] = path
	f.String(path, FileFlag(name), "file holding --"+name+" (one trailing newline dropped); not with --"+name)
}

// FileFlag is the name of the flag that reads the secret flag name from a
// file: "pg-dsn" → "pg-dsn-file".
func FileFlag(name string) string { return name + "-file" }

// IsSecret tells whether the flag name holds a secret.
func (f *Flags) IsSecret(name string) bool { return f.secret[name] }

// ErrSecretTwice is the error of a secret given both as a value and as a
// file.
var ErrSecretTwice = errors.New("set either the value or the file, not both")

// readSecretFiles sets every secret whose --<name>-file was given from its
// file, after flags and variables were read.
func (f *Flags) readSecretFiles() error {
	var errs []error
	for _, name := range f.defined {
		path, ok := f.files[name]
		if !ok {
			continue
		}
		file := FileFlag(name)
		if src := f.source[file]; src != "flag" && src != "env" {
			continue
		}
		if src := f.source[name]; src == "flag" || src == "env" {
			errs = append(errs, fmt.Errorf("%s and %s are both set: %w", Setting(name), Setting(file), ErrSecretTwice))
			continue
		}
		v, err := secret.ReadFile(*path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot read the secret of %s: %w", Setting(file), Setting(name), err))
			continue
		}
		if err := f.fs.Lookup(name).Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: the value in %s is refused: %w", Setting(name), *path, unwrapSet(err)))
			continue
		}
		f.source[name] = "file"
	}
	return errors.Join(errs...)
}

// Int binds an int flag onto *p; its default is *p.
func (f *Flags) Int(p *int, name, usage string) {
	f.define((*intValue)(p), name, usage)
	f.note(name, KindInt, p)
}

// Float binds a float64 flag onto *p; its default is *p.
func (f *Flags) Float(p *float64, name, usage string) {
	f.define((*floatValue)(p), name, usage)
	f.note(name, KindFloat, p)
}

// Bool binds a bool flag onto *p; its default is *p.
func (f *Flags) Bool(p *bool, name, usage string) {
	f.define((*boolValue)(p), name, usage)
	f.note(name, KindBool, p)
}

// Duration binds a duration flag (Go syntax: 90s, 5m, 720h) onto *p; its
// default is *p.
func (f *Flags) Duration(p *time.Duration, name, usage string) {
	f.define((*durationValue)(p), name, usage)
	f.note(name, KindDuration, p)
}

// List binds a comma-separated list onto *p (blanks trimmed, empty items
// dropped; "" is the empty list); its default is *p.
func (f *Flags) List(p *[]string, name, usage string) {
	f.define((*listValue)(p), name, usage)
	f.note(name, KindList, p)
}

// Var binds a flag of any other kind: v parses into the field p points to.
func (f *Flags) Var(v flag.Value, p any, name, usage string) {
	f.define(v, name, usage)
	f.note(name, KindOther, p)
}

// Alias makes old another name of the flag name, for one release: it is
// read from the command line and from its own variable (after the new
// name's), and Deprecated reports its use. It is listed at the end of
// --help.
func (f *Flags) Alias(old, name string) {
	fl := f.fs.Lookup(name)
	if fl == nil {
		f.defErr = errors.Join(f.defErr, fmt.Errorf("alias --%s of undefined flag --%s", old, name))
		return
	}
	f.fs.Var(&named{Value: fl.Value.(*named).Value, name: old, f: f}, old, "deprecated name of --"+name)
	f.aliases[old] = name
}

// Legacy defines a deprecated flag that is not a plain rename (v applies
// it to the Config), for one release: read from the command line and from
// its variable, reported by Deprecated with instead, listed at the end of
// --help.
func (f *Flags) Legacy(v flag.Value, name, instead string) {
	f.define(v, name, "deprecated: "+instead)
	f.legacy[name] = instead
}

// Retired defines a deprecated flag that is no longer read as it was: v
// decides what a value still means (it may ignore it), warn words the
// warning for the value given, which Warnings reports verbatim (once, from
// the command line or else the variable). It is listed at the end of
// --help with note.
func (f *Flags) Retired(v flag.Value, name, note string, warn func(value string) string) {
	f.define(v, name, "retired: "+note)
	f.legacy[name] = note
	f.retired[name] = warn
}

// Parse parses args, then fills every flag not given on the command line
// from its environment variable. Errors name both the flag and the
// variable. On -h/--help it writes the usage to out and returns ErrHelp.
func (f *Flags) Parse(args []string, out io.Writer) error {
	if f.defErr != nil {
		return f.defErr
	}
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.Usage(out)
			return ErrHelp
		}
		if f.setErr != nil {
			return f.setErr
		}
		return fmt.Errorf("%w (see %s --help)", err, f.name)
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see %s --help)", f.fs.Arg(0), f.name)
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) {
		name := fl.Name
		if n, old := f.aliases[name]; old {
			f.used = append(f.used, fmt.Sprintf("--%s is deprecated, use --%s", name, n))
			name = n
		}
		if warn, ok := f.retired[name]; ok {
			f.warned = append(f.warned, warn(fl.Value.String()))
		} else if instead, ok := f.legacy[name]; ok {
			f.used = append(f.used, fmt.Sprintf("--%s is deprecated: %s", name, instead))
		}
		set[name] = true
		f.source[name] = "flag"
	})
	byNew := map[string][]string{}
	for old, n := range f.aliases {
		byNew[n] = append(byNew[n], old)
	}
	var errs []error
	for _, name := range f.defined {
		if set[name] {
			continue
		}
		fl := f.fs.Lookup(name)
		env, from := EnvName(name), name
		v, ok := lookup(f.getenv, env)
		if !ok {
			olds := byNew[name]
			sort.Strings(olds)
			for _, old := range olds {
				if v, ok = lookup(f.getenv, EnvName(old)); ok {
					env, from = EnvName(old), old
					f.used = append(f.used, fmt.Sprintf("%s is deprecated, use %s", env, EnvName(name)))
					break
				}
			}
		}
		if !ok {
			f.source[name] = "default"
			continue
		}
		if err := fl.Value.Set(v); err != nil {
			if f.secret[name] {
				v = secret.Redact(v)
			}
			errs = append(errs, fmt.Errorf("%s (--%s): invalid value %q: %w", env, from, v, unwrapSet(err)))
			continue
		}
		f.source[name] = "env"
	}
	legacy := make([]string, 0, len(f.legacy))
	for name := range f.legacy {
		legacy = append(legacy, name)
	}
	sort.Strings(legacy)
	for _, name := range legacy {
		if set[name] {
			continue
		}
		env := EnvName(name)
		if v, ok := lookup(f.getenv, env); ok {
			if err := f.fs.Lookup(name).Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s (--%s): invalid value %q: %w", env, name, v, unwrapSet(err)))
				continue
			}
			if warn, ok := f.retired[name]; ok {
				f.warned = append(f.warned, warn(v))
				continue
			}
			f.used = append(f.used, fmt.Sprintf("%s is deprecated: %s", env, f.legacy[name]))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return f.readSecretFiles()
}

func lookup(getenv func(string) string, key string) (string, bool) {
	if v := getenv(key); v != "" {
		return v, true
	}
	return "", false
}

// Deprecated lists the deprecated names Parse met, one message each.
func (f *Flags) Deprecated() []string { return append([]string(nil), f.used...) }

// Warnings lists the warnings of the retired flags Parse met (see
// Retired), each to be shown as it is.
func (f *Flags) Warnings() []string { return append([]string(nil), f.warned...) }

// Source tells where a flag's value came from: "flag", "env", "file" (a
// secret read from its --<name>-file) or "default".
func (f *Flags) Source(name string) string { return f.source[name] }

// Kind is the kind of the flag's value.
func (f *Flags) Kind(name string) Kind { return f.kinds[name] }

// Field returns the pointer to the field the flag is bound to.
func (f *Flags) Field(name string) any { return f.ptrs[name] }

// FlagOf returns the flag bound to the field at the Go path field below
// root (a pointer to a struct), e.g. FlagOf(&cfg, "Window.Lateness").
func (f *Flags) FlagOf(root any, field string) (string, bool) {
	v := reflect.ValueOf(root)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return "", false
	}
	v = v.Elem()
	for _, part := range strings.Split(field, ".") {
		if v.Kind() != reflect.Struct {
			return "", false
		}
		v = v.FieldByName(part)
		if !v.IsValid() {
			return "", false
		}
	}
	name, ok := f.fields[fieldKey{v.Addr().Pointer(), v.Type()}]
	return name, ok
}

// SettingError is a problem with one setting, named by its flag and
// variable: "--lateness (IOTPIPE_LATENESS): must not be negative".
type SettingError struct {
	// Flag is the flag name without dashes.
	Flag string
	// Field is the Go path of the Config field the flag is bound to.
	Field string
	Err   error
}

func (e *SettingError) Error() string { return Setting(e.Flag) + ": " + e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

// Explain rewrites the *config.FieldError problems of err, a Validate
// result of the Config root points to, as *SettingError naming the flag
// bound to each field; problems of fields without a flag keep the field's
// name. It returns nil for nil.
func (f *Flags) Explain(err error, root any) error {
	if err == nil {
		return nil
	}
	fields := config.Fields(err)
	if len(fields) == 0 {
		return err
	}
	out := make([]error, 0, len(fields))
	flagName := func(field string) string {
		if name, ok := f.FlagOf(root, field); ok {
			return "--" + name
		}
		return field
	}
	for _, fe := range fields {
		reason := errors.New(fe.Reason(flagName))
		if name, ok := f.FlagOf(root, fe.Field); ok {
			out = append(out, &SettingError{Flag: name, Field: fe.Field, Err: reason})
		} else {
			out = append(out, &config.FieldError{Field: fe.Field, Err: reason})
		}
	}
	return errors.Join(out...)
}

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
				def = secret.Redact(def)
			}
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(tw, "  --%s\t%s\t%s (default %s)\n", fl.Name, EnvName(fl.Name), fl.Usage, def)
		}
		_ = tw.Flush()
	}
	if len(f.aliases)+len(f.legacy) > 0 {
		instead := map[string]string{}
		for old, n := range f.aliases {
			instead[old] = "use --" + n
		}
		for old, why := range f.legacy {
			instead[old] = why
		}
		olds := make([]string, 0, len(instead))
		for old := range instead {
			olds = append(olds, old)
		}
		sort.Strings(olds)
		fmt.Fprintf(out, "\nDeprecated names (still read for one release, with a warning):\n")
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, old := range olds {
			fmt.Fprintf(tw, "  --%s\t%s\t%s\n", old, EnvName(old), instead[old])
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(out, "\nEvery flag can also be set through the environment variable shown next to it;\na flag on the command line wins over the environment.\n")
}

// Names lists every flag name in definition order (aliases excluded).
func (f *Flags) Names() []string {
	return append([]string(nil), f.defined...)
}

// named wraps a flag's value so that a value refused on the command line
// is reported naming the flag and its variable.
type named struct {
	flag.Value
	name string
	f    *Flags
}

func (n *named) Set(s string) error {
	if err := n.Value.Set(s); err != nil {
		if n.f.secret[n.name] {
			s = secret.Redact(s)
		}
		n.f.setErr = fmt.Errorf("%s: invalid value %q: %w", Setting(n.name), s, err)
		return err
	}
	return nil
}

func (n *named) IsBoolFlag() bool {
	b, ok := n.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// unwrapSet drops the Value's own wrapping (strconv's "parsing ...").
func unwrapSet(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

func (f *Flags) define(v flag.Value, name, usage string) {
	f.fs.Var(&named{Value: v, name: name, f: f}, name, usage)
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type boolValue bool

func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*v = boolValue(b)
	return nil
}

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, strconv.IntSize)
	if err != nil {
		return errors.New("not an integer")
	}
	*v = intValue(n)
	return nil
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not a duration (e.g. 500ms, 30s, 5m, 24h)")
	}
	*v = durationValue(d)
	return nil
}

type floatValue float64

func (v *floatValue) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }
func (v *floatValue) Set(s string) error {
	x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return errors.New("not a number")
	}
	*v = floatValue(x)
	return nil
}

type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*v = out
	return nil
}

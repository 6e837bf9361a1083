package main

// Flags of the commands that are not stages (init, demo, healthcheck,
// version): their settings feed several systems rather than one Config, so
// each flag states its default where it is defined.

import (
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/iotpipe/iotpipe/internal/flags"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/logging"
	"github.com/iotpipe/iotpipe/internal/objstore"
)

// EnvName returns the environment variable that backs the flag name.
func EnvName(flagName string) string { return flags.EnvName(flagName) }

// ErrHelp is returned by Parse after -h/--help wrote the usage.
var ErrHelp = flags.ErrHelp

// cmdFlags is a flag set whose bind calls give the default.
type cmdFlags struct{ *Flags }

func newCmdFlags(env Env, name, summary string) *cmdFlags {
	return &cmdFlags{newFlags(env, name, summary)}
}

func (f *cmdFlags) String(p *string, name, def, usage string) {
	*p = def
	f.Flags.String(p, name, usage)
}
func (f *cmdFlags) Secret(p *string, name, def, usage string) {
	*p = def
	f.Flags.Secret(p, name, usage)
}
func (f *cmdFlags) Int(p *int, name string, def int, usage string) {
	*p = def
	f.Flags.Int(p, name, usage)
}
func (f *cmdFlags) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	f.Flags.Bool(p, name, usage)
}
func (f *cmdFlags) Float(p *float64, name string, def float64, usage string) {
	*p = def
	f.Flags.Float(p, name, usage)
}
func (f *cmdFlags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.Flags.Duration(p, name, usage)
}

// onParsed, when set (by tests), sees every command's flags after Parse.
var onParsed func(*Flags)

// Parse parses args (see flags.Flags.Parse).
func (f *cmdFlags) Parse(args []string, out io.Writer) error {
	err := f.Flags.Parse(args, out)
	if onParsed != nil {
		onParsed(f.Flags)
	}
	return err
}

// kafkaFlags binds the settings that reach Kafka.
type kafkaFlags struct{ c kafkax.Config }

func (k *kafkaFlags) bind(f *cmdFlags, clientID string) {
	k.c = kafkax.DefaultConfig(clientID)
	bindKafka(f.Flags, &k.c)
}

func (k *kafkaFlags) config(f *cmdFlags) (kafkax.Config, error) {
	if err := k.c.Validate(); err != nil {
		return k.c, &UsageError{f.Explain(err, &k.c)}
	}
	return k.c, nil
}

// s3Flags binds the settings that reach the object store.
type s3Flags struct{ c objstore.Config }

func (s *s3Flags) bind(f *cmdFlags) {
	s.c = objstore.DefaultConfig()
	bindS3(f.Flags, &s.c)
}

// logFlags binds the logging settings.
type logFlags struct{ c logging.Config }

func (l *logFlags) bindLevel(f *cmdFlags, format, level string) {
	l.c = logging.Config{Format: format, Level: level}
	bindLog(f.Flags, &l.c)
}

func (l *logFlags) logger(env Env, f *cmdFlags) (*slog.Logger, error) {
	return newLogger(env, f.Flags, &l.c)
}

func usageErr(err error) error {
	if errors.Is(err, ErrHelp) {
		return err
	}
	return &UsageError{err}
}

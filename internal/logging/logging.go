// Package logging builds the slog logger every iotpipe command uses: JSON
// lines for services (machine-readable), text for people at a terminal.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/iotpipe/iotpipe/internal/config"
)

// Config selects the log format and level.
type Config struct {
	// Format is "json" or "text".
	Format string
	// Level is "debug", "info", "warn" or "error".
	Level string
}

// DefaultConfig is JSON lines at level info.
func DefaultConfig() Config { return Config{Format: "json", Level: "info"} }

// Validate reports an unknown format or level as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(c.Level))); err != nil {
		p.Add("Level", "%q: want debug, info, warn or error", c.Level)
	}
	switch strings.ToLower(c.Format) {
	case "json", "text":
	default:
		p.Add("Format", "%q: want json or text", c.Format)
	}
	return p.Err()
}

// New returns a logger writing to w.
func New(w io.Writer, c Config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(c.Level))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(c.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", c.Format)
	}
}

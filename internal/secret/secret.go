// Package secret reads secrets from files and keeps them out of what is
// printed.
//
// Contract:
//   - ReadFile returns a file's content with one trailing newline ("\n" or
//     "\r\n") removed, as `echo pw > file` and Docker/Kubernetes secret
//     files write it; nothing else is trimmed, so a secret may end in
//     blanks. Its errors name the path only, never the content.
//   - Redact returns a printable form of a secret value: a URL or
//     key=value connection string with its password replaced by "xxxxx"
//     (user, host, database and options kept, so a DSN stays recognisable),
//     and "(set)" for any other non-empty value.
package secret

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// Mask replaces a password in a redacted connection string.
const Mask = "xxxxx"

// ErrEmpty is returned by ReadFile for a file that holds nothing but a
// newline: an empty secret is never what was meant.
var ErrEmpty = errors.New("file is empty")

// ReadFile reads the secret held in the file at path.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	s := string(b)
	if strings.HasSuffix(s, "\r\n") {
		s = s[:len(s)-2]
	} else if strings.HasSuffix(s, "\n") {
		s = s[:len(s)-1]
	}
	if s == "" {
		return "", fmt.Errorf("read secret file %s: %w", path, ErrEmpty)
	}
	return s, nil
}

// kvPassword matches password=... in a key=value connection string
// (quoted or not).
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns s fit for logs and --help: see the package contract.
func Redact(s string) string {
	if s == "" {
		return ""
	}
	if i := strings.Index(s, "://"); i > 0 && !strings.ContainsAny(s[:i], " =") {
		u, err := url.Parse(s)
		if err != nil {
			return "(set)"
		}
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), Mask)
			}
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", Mask)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	if strings.Contains(s, "=") && strings.Contains(s, " ") || strings.HasPrefix(strings.ToLower(s), "host=") {
		return kvPassword.ReplaceAllString(s, "${1}"+Mask)
	}
	return "(set)"
}
